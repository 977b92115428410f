"""The IO manager hands the corpus between stages as sharded datasets: a stage's kept rows and rejects are
stored as shards with a manifest (its figures on the output's metadata), a downstream asset gets the rows
collected or, annotated `ShardedDataset`, the handle; a streaming stage's own dataset is kept as written;
a data root stored by the previous version (one Parquet file per asset) still reads."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from finetune_pipeline import shards, stored
from finetune_pipeline.defs.io import ParquetIOManager, output_location, rejects_location
from finetune_pipeline.defs.metadata import stage_metadata
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import StageResult, corpus_frame, reject_rows
from finetune_pipeline.explain import explain
from finetune_pipeline.settings import ExecutionSettings


def _corpus(n: int, start: int = 0) -> pl.DataFrame:
    return corpus_frame([{"record_id": f"r{i:03d}", "text": f"ticket {i} about order {i}", "source_uri": "raw/a.txt",
                          "source_type": "txt", "locator": f"line {i}", "content_sha256": f"{i:064d}"}
                         for i in range(start, start + n)])


def _root(tmp_path, shard_rows: int = 3) -> DataRoot:
    (tmp_path / "finetune.yaml").write_text(f"execution: {{shard_rows: {shard_rows}}}\n")
    return DataRoot(tmp_path)


def _materialize(root: DataRoot, assets, **kwargs):
    pipeline = PipelineResource(data_dir=str(root.path))
    return dg.materialize(assets, resources={"pipeline": pipeline, "io_manager": ParquetIOManager(pipeline=pipeline)},
                          **kwargs)


@dg.asset
def cleaned_corpus() -> StageResult:
    frame = _corpus(8)
    return StageResult(kept=frame.slice(0, 7), rejected=reject_rows(frame.slice(7), "cleaned_corpus", "too_short"))


@dg.asset
def rows_seen(cleaned_corpus: pl.DataFrame) -> dict:
    return {"type": type(cleaned_corpus).__name__, "rows": cleaned_corpus.height}


@dg.asset
def handle_seen(cleaned_corpus: shards.ShardedDataset) -> dict:
    return {"type": type(cleaned_corpus).__name__, "rows": cleaned_corpus.rows,
            "shards": len(list(cleaned_corpus.iter_shards()))}


@dg.asset
def split_assignment() -> pl.DataFrame:  # a small frame: one file, as before
    return pl.DataFrame({"record_id": ["r000"], "split": ["train"]})


def test_a_stage_result_is_stored_as_datasets_and_read_back_as_rows_or_as_a_handle(tmp_path):
    root = _root(tmp_path)
    result = _materialize(root, [cleaned_corpus, rows_seen, handle_seen, split_assignment])
    assert result.success
    kept = shards.open_dataset(root.asset_dataset("cleaned_corpus"))
    assert [s.rows for s in kept.manifest.shards] == [3, 3, 1]  # execution.shard_rows
    assert kept.collect().equals(_corpus(7))
    assert shards.open_dataset(root.rejects_dataset("cleaned_corpus")).collect()["record_id"].to_list() == ["r007"]
    assert not root.legacy_asset_value("cleaned_corpus").exists() and not root.stage_rejects("cleaned_corpus").exists()
    assert json.loads(root.stage_stats("cleaned_corpus").read_text())["rows_rejected"] == 1
    assert (root.asset_values / "split_assignment.parquet").exists()
    assert json.loads((root.asset_values / "rows_seen.json").read_text()) == {"type": "DataFrame", "rows": 7}
    assert json.loads((root.asset_values / "handle_seen.json").read_text()) == {
        "type": "ShardedDataset", "rows": 7, "shards": 3}
    # the manifest's figures are the output's metadata: counts and a digest, no value of any record
    meta = result.asset_materializations_for_node("cleaned_corpus")[0].metadata
    assert meta["dataset_rows"].value == 7 and meta["dataset_shards"].value == 3
    assert meta["dataset_digest"].value == kept.manifest.digest
    assert meta["dataset_bytes"].value == sum((tmp_path / ".pipeline" / "assets" / "cleaned_corpus" / s.path).stat().st_size
                                              for s in kept.manifest.shards) > 0
    assert meta["rejects_dataset_rows"].value == 1
    assert not any("ticket" in str(v.value) for v in meta.values())


@dg.asset
def deduplicated_corpus(pipeline: PipelineResource) -> StageResult:
    """A streaming stage: writes its own shards where the IO manager keeps them and returns the handles."""
    with shards.DatasetWriter(output_location(pipeline, "deduplicated_corpus"), shard_rows=2) as writer:
        for start in (0, 3):
            writer.write(_corpus(3, start))
    shards.write_dataset(reject_rows(_corpus(1, 6), "deduplicated_corpus", "near_duplicate"),
                         rejects_location(pipeline, "deduplicated_corpus"))
    return StageResult(kept=shards.open_dataset(output_location(pipeline, "deduplicated_corpus")),
                       rejected=shards.open_dataset(rejects_location(pipeline, "deduplicated_corpus")))


def test_a_streaming_stage_s_own_dataset_is_kept_as_written(tmp_path):
    root = _root(tmp_path, shard_rows=50)
    result = _materialize(root, [deduplicated_corpus])
    assert result.success
    dataset = shards.open_dataset(root.asset_dataset("deduplicated_corpus"))
    assert [s.rows for s in dataset.manifest.shards] == [2, 2, 2]  # the stage's shards, not rewritten at 50
    assert len(list((tmp_path / ".pipeline" / "assets" / "deduplicated_corpus").glob("g-*"))) == 1
    assert json.loads(root.stage_stats("deduplicated_corpus").read_text())["rows_out"] == 6
    assert stored.stored_rejects(root, "deduplicated_corpus")["reason"].to_list() == ["near_duplicate"]
    meta = result.asset_materializations_for_node("deduplicated_corpus")[0].metadata
    assert meta["dataset_rows"].value == 6 and meta["dataset_digest"].value == dataset.manifest.digest


def test_a_dataset_committed_elsewhere_is_copied_to_the_asset_s_location(tmp_path):
    root = _root(tmp_path)
    manifest = shards.write_dataset(_corpus(5), tmp_path / "scratch", shard_rows=5)
    stored.store_frame(root, "labeled_corpus", shards.open_dataset(tmp_path / "scratch"), shard_rows=2)
    copied = shards.open_dataset(root.asset_dataset("labeled_corpus"))
    assert copied.collect().equals(_corpus(5)) and [s.rows for s in copied.manifest.shards] == [2, 2, 1]
    assert shards.open_dataset(tmp_path / "scratch").manifest == manifest  # the source untouched


def test_a_root_stored_by_the_previous_version_still_reads(tmp_path):
    """One Parquet file per asset and per stage's rejects, as versions before sharded datasets wrote them."""
    root = _root(tmp_path)
    root.asset_values.mkdir(parents=True)
    _corpus(7).write_parquet(root.legacy_asset_value("cleaned_corpus"))
    root.stage_rejects("cleaned_corpus").parent.mkdir(parents=True)
    reject_rows(_corpus(1, 7), "cleaned_corpus", "too_short").write_parquet(root.stage_rejects("cleaned_corpus"))
    assert stored.stored_frame(root, "cleaned_corpus").equals(_corpus(7))
    assert stored.stored_frame(root, "cleaned_corpus", columns=["record_id", "no_such"]).columns == ["record_id"]
    assert stored.stored_rejects(root, "cleaned_corpus")["record_id"].to_list() == ["r007"]
    # downstream assets read it, as rows and as a handle (the handle's dataset written from the old file)
    result = _materialize(root, [cleaned_corpus, rows_seen, handle_seen], selection=["rows_seen", "handle_seen"])
    assert result.success
    assert json.loads((root.asset_values / "rows_seen.json").read_text()) == {"type": "DataFrame", "rows": 7}
    assert json.loads((root.asset_values / "handle_seen.json").read_text())["rows"] == 7
    # materialized again, the stage writes datasets and the old files are gone
    assert _materialize(root, [cleaned_corpus]).success
    assert not root.legacy_asset_value("cleaned_corpus").exists() and not root.stage_rejects("cleaned_corpus").exists()
    assert stored.stored_frame(root, "cleaned_corpus").equals(_corpus(7))


def test_nothing_stored_is_named_with_the_fix(tmp_path):
    root = _root(tmp_path)
    assert stored.stored_frame(root, "cleaned_corpus") is None
    assert stored.stored_rejects(root, "cleaned_corpus").is_empty()
    result = _materialize(root, [cleaned_corpus, rows_seen], selection=["rows_seen"], raise_on_error=False)
    assert not result.success
    with pytest.raises(shards.DatasetMissing, match="materialize cleaned_corpus first"):
        stored.migrate_legacy(root, "cleaned_corpus")


def test_erasure_and_removal_reach_every_form(tmp_path):
    root = _root(tmp_path)
    stored.store_frame(root, "raw_corpus", _corpus(7), shard_rows=3)
    keep = lambda frame: frame.filter(pl.col("record_id") != "r004")  # noqa: E731
    assert stored.rewrite_stored(root, "raw_corpus", keep, shard_rows=3) == 1
    assert stored.stored_frame(root, "raw_corpus")["record_id"].to_list() == [f"r{i:03d}" for i in range(7) if i != 4]
    assert stored.rewrite_stored(root, "raw_corpus", keep) == 0
    stored.remove_stored(root, "raw_corpus")
    assert stored.stored_frame(root, "raw_corpus") is None and not (root.asset_values / "raw_corpus").exists()
    _corpus(3).write_parquet(root.legacy_asset_value("raw_corpus"))  # the previous version's file
    assert stored.rewrite_stored(root, "raw_corpus", lambda f: f.filter(pl.col("record_id") != "r001")) == 1
    assert stored.stored_frame(root, "raw_corpus")["record_id"].to_list() == ["r000", "r002"]


def test_the_shard_size_setting_defaults_to_the_format_s_default():
    assert ExecutionSettings().shard_rows == shards.DEFAULT_SHARD_ROWS


def test_a_stage_s_metadata_is_the_same_from_a_dataset_as_from_a_frame(tmp_path):
    frame = _corpus(9).with_columns(pl.Series("label", ["a", "b", "a"] * 3))
    rejected = reject_rows(_corpus(2, 9), "cleaned_corpus", "too_short")
    shards.write_dataset(frame, tmp_path / "kept", shard_rows=4)
    shards.write_dataset(rejected, tmp_path / "rejected", shard_rows=4)
    from_frame = stage_metadata(11, StageResult(kept=frame, rejected=rejected))
    from_dataset = stage_metadata(11, StageResult(kept=shards.open_dataset(tmp_path / "kept"),
                                                  rejected=shards.open_dataset(tmp_path / "rejected")))
    assert from_dataset == from_frame
    assert from_frame["rows_out"] == 9 and from_frame["text_chars_max"] == len("ticket 8 about order 8")


# ---- storage.datasets_url on an object store: moto's S3 server, a real HTTP endpoint on the loopback

@pytest.fixture(scope="session")
def s3_endpoint():
    pytest.importorskip("s3fs")
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip("moto[server] is not installed (make install installs the test extra)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, f"moto_server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "moto_server did not listen within 60 s"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, request):
    """A fresh bucket; the endpoint and (dummy) credentials in the environment, where s3fs and polars read them."""
    import s3fs

    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(name, value)
    name = request.node.name.replace("_", "-")[:40].strip("-")
    s3 = s3fs.S3FileSystem(skip_instance_cache=True)
    s3.mkdir(name)
    return name, s3


def test_a_dataset_round_trips_through_an_s3_object_store(bucket):
    name, s3 = bucket
    location = f"s3://{name}/run/assets/cleaned_corpus"
    manifest = shards.write_dataset(_corpus(7), location, shard_rows=3)
    dataset = shards.open_dataset(location)
    assert dataset.collect().equals(_corpus(7)) and [s.rows for s in manifest.shards] == [3, 3, 1]
    assert dataset.scan().filter(pl.col("record_id") > "r004").collect().height == 2  # polars reads s3 itself
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.find(f"{name}/run")) == [
        "manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


def test_the_io_manager_keeps_the_corpus_on_storage_datasets_url(tmp_path, bucket):
    name, s3 = bucket
    url = f"s3://{name}/pipeline"
    (tmp_path / "finetune.yaml").write_text(f"execution: {{shard_rows: 3}}\nstorage: {{datasets_url: '{url}'}}\n")
    root = DataRoot(tmp_path)
    result = _materialize(root, [cleaned_corpus, rows_seen, handle_seen])
    assert result.success
    assert not (tmp_path / ".pipeline" / "assets" / "cleaned_corpus").exists()  # nothing local but small values
    assert s3.exists(f"{name}/pipeline/assets/cleaned_corpus/manifest.json")
    assert s3.exists(f"{name}/pipeline/rejects/cleaned_corpus/manifest.json")
    assert json.loads((root.asset_values / "handle_seen.json").read_text()) == {
        "type": "ShardedDataset", "rows": 7, "shards": 3}
    assert json.loads((root.asset_values / "rows_seen.json").read_text()) == {"type": "DataFrame", "rows": 7}
    # readers outside a run find it through finetune.yaml; the stage's rejects too
    remote = stored.with_datasets_url(root)
    assert remote.asset_dataset("cleaned_corpus") == f"{url}/assets/cleaned_corpus"
    assert stored.stored_frame(remote, "cleaned_corpus").equals(_corpus(7))
    assert stored.stored_rejects(remote, "cleaned_corpus")["record_id"].to_list() == ["r007"]
    assert any(line.startswith("  cleaned_corpus: rejected, too_short") for line in explain(tmp_path, "r007"))
    # erasure rewrites the remote dataset; keep_raw_text: none removes it
    assert stored.rewrite_stored(remote, "cleaned_corpus", lambda f: f.filter(pl.col("record_id") != "r001")) == 1
    assert stored.stored_frame(remote, "cleaned_corpus").height == 6
    assert len(s3.ls(f"{name}/pipeline/assets/cleaned_corpus")) == 2  # the manifest and one generation
    stored.remove_stored(remote, "cleaned_corpus")
    assert stored.stored_frame(remote, "cleaned_corpus") is None


# ---- the Great Expectations suites on a dataset: shard by shard, as strict as on the whole frame

def _suite_outcome(result) -> tuple:
    return result.passed, result.evaluated, sorted((f["expectation"], f["column"] or "", str(f["observed"]))
                                                   for f in result.failures)


def test_a_suite_on_a_dataset_decides_as_on_the_whole_frame(tmp_path):
    from finetune_pipeline import validation as v

    good = _corpus(7).with_columns(pl.col("record_id").alias("group_id"))
    broken = good.with_columns(  # defects in different shards of 3 rows: none visible to one shard alone
        pl.when(pl.col("record_id") == "r005").then(pl.lit(f"{0:064d}")).otherwise(pl.col("content_sha256"))
        .alias("content_sha256"),  # the hash of r000, two shards away
        pl.when(pl.col("record_id").is_in(["r001", "r006"])).then(None).otherwise(pl.col("text")).alias("text"),
        pl.when(pl.col("record_id") == "r003").then(pl.lit("r000")).otherwise(pl.col("record_id")).alias("record_id"))
    cases = [(good, v.deduplicated_expectations(5)), (broken, v.deduplicated_expectations(5)),
             (good, v.deduplicated_expectations(8)),  # too few rows
             (good.with_columns(pl.col("text").str.slice(0, 8)),
              v.cleaned_expectations(1, 10, 100, frozenset({"csv"})))]  # a row condition, per row
    for n, (frame, expectations) in enumerate(cases):
        shards.write_dataset(frame, tmp_path / str(n), shard_rows=3)
        whole = v.validate(frame, "suite", expectations)
        sharded = v.validate(shards.open_dataset(tmp_path / str(n)), "suite", expectations)
        assert _suite_outcome(sharded) == _suite_outcome(whole), n
    assert not _suite_outcome(v.validate(broken, "suite", v.deduplicated_expectations(5)))[0]
    failed = {(f["expectation"], f["column"]): f["observed"]
              for f in v.validate(shards.open_dataset(tmp_path / "1"), "suite", v.deduplicated_expectations(5)).failures}
    assert failed[("expect_column_values_to_be_unique", "content_sha256")] == 2
    assert failed[("expect_column_values_to_be_unique", "record_id")] == 2
    assert failed[("expect_column_values_to_not_be_null", "text")] == 2  # one in each of two shards, added up


def test_a_large_frame_validated_is_let_go_of_by_the_next_validation(monkeypatch):
    """GX's batch and validation objects hold the frame they checked in reference cycles (and GX keeps its last
    batch); a suite run shard by shard over a large dataset piled the shards up until Python's next full
    collection. With the automatic collector off (as between its rare full passes), one shard's frame must be
    free once the next shard has been validated and the caller lets go of it."""
    import gc
    import weakref

    import pandas as pd

    from finetune_pipeline import validation as v

    monkeypatch.setattr(v, "COLLECT_ROWS", 50)

    def shard(n: int) -> pd.DataFrame:
        return pd.DataFrame({"record_id": [f"s{n}-{i:03d}" for i in range(60)], "text": ["a text"] * 60})

    expectations = [v.E.ExpectColumnValuesToNotBeNull(column="text"), v.E.ExpectColumnValuesToBeUnique(column="record_id")]
    v.validate(shard(0).head(3), "suite", expectations)  # GX's own first-use objects, not a shard's
    first, second = shard(1), shard(2)
    alive = weakref.ref(first)
    gc.disable()
    try:
        assert v.validate(first, "suite", expectations).passed
        assert v.validate(second, "suite", expectations).passed
        del first
        assert alive() is None
    finally:
        gc.enable()


def test_a_stage_s_suite_check_takes_its_dataset(tmp_path):
    import finetune_pipeline.defs.cleaning  # noqa: F401  (registers the stage's checks)
    from finetune_pipeline.defs.gates import GATES

    root = _root(tmp_path)
    pipeline = PipelineResource(data_dir=str(root.path))
    check = next(g for g in GATES["deduplicated_corpus"] if g.name == "deduplicated_corpus_expectations")
    assert check.streams
    frame = _corpus(7).with_columns(pl.col("record_id").alias("group_id"))
    stored.store_frame(root, "deduplicated_corpus", frame.with_columns(pl.lit(f"{1:064d}").alias("content_sha256")),
                       shard_rows=3)
    result = check.evaluate(pipeline, stored.stored_dataset(root, "deduplicated_corpus"))
    assert not result.passed and "expect_column_values_to_be_unique(content_sha256): 7" in result.description
