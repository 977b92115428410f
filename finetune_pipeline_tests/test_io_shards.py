"""The IO manager hands the corpus between stages as sharded datasets: a stage's kept rows and rejects are
stored as shards with a manifest (its figures on the output's metadata), a downstream asset gets the rows
collected or, annotated `ShardedDataset`, the handle; a streaming stage's own dataset is kept as written;
a data root stored by the previous version (one Parquet file per asset) still reads."""

import json

import dagster as dg
import polars as pl
import pytest

from finetune_pipeline import shards, stored
from finetune_pipeline.defs.io import ParquetIOManager, output_location, rejects_location
from finetune_pipeline.defs.metadata import stage_metadata
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import StageResult, corpus_frame, reject_rows
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
