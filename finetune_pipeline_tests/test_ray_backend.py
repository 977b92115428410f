"""The Ray backend against a real two-node Ray cluster on 127.0.0.1 (a head and a worker started here, one
cluster for the module): the near-duplicate clusters equal the local backend's, the Dagster assets run the
sample data's collection and cleaning on the cluster with the local rows and rejects; stages run shard to shard
(`map_batches_to_dataset`, `map_groups_to_dataset`) give the local path's rows, survive a worker node
killed mid-stage, and leave the previous dataset when they fail; the cleaning stage run by the workers
dataset to dataset (`streaming.clean_dataset_on_ray`) gives the local streaming path's rows, rejects,
statistics and cache, also when it runs as a Ray job (`execution.ray_jobs`, submitted to the head's job API)
that outlives the killed Dagster run which submitted it. Fails (never skips) when Ray cannot start."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finetune_pipeline import shards
from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.erasure import load_erasure_requests
from finetune_pipeline.dedup import minhash
from finetune_pipeline.dedup.synthetic import near_duplicate_benchmark
from finetune_pipeline.execution import connect, map_batches_to_dataset, map_groups_to_dataset
from finetune_pipeline.settings import DedupSettings, ExecutionSettings, load_settings
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline_tests.conftest import copy_sample_data

RAY = str(Path(sys.executable).parent / "ray")
# Small footprint: the test machine has 2 cores; one CPU per node, 200 MB object stores.
NODE_OPTIONS = ["--num-cpus", "1", "--object-store-memory", str(200 * 2**20), "--block", "--disable-usage-stats"]


# A throwaway cluster on the loopback: no auth token (Ray 2.60's `ray start` otherwise turns token auth on).
# The head declares a node dead after 3 missed health checks 0.5 s apart (default: 5 of 3 s), so the
# kill-a-worker test sees its node go within seconds.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # Own process group: the finalizer ends exactly these processes and what they started.
    return subprocess.Popen([RAY, "start", *args, *NODE_OPTIONS], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **RAY_ENV})


def _stop(process: subprocess.Popen) -> None:
    """End a node started by `_start`: SIGKILL to its process group (the `ray start` process, its GCS or
    raylet, their agents and workers), at once: the cluster is thrown away with its temp folder, and a
    SIGTERM made `ray start --block` wait 20 s."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


@pytest.fixture(scope="module")
def ray_cluster():
    """Address of a running head + one worker node on 127.0.0.1."""
    import ray

    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)  # the driver (this process) must use the same auth mode as the nodes
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must stay short
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # the head's dashboard is the job API (execution.ray_jobs); every port its agents take is a free one, as
    # another test may run a Ray cluster on this machine at the same time
    dashboard = f"http://127.0.0.1:{(dashboard_port := _free_port())}"
    client_port = _free_port()  # the Ray Client server: what a KubeRay head service exposes on 10001
    nodes = [_start(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--include-dashboard", "true",
                     "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), *_agent_ports(),
                     "--ray-client-server-port", str(client_port), "--temp-dir", str(temp)], temp / "head.log")]
    JOB_API[address] = dashboard
    CLIENT[address] = f"ray://127.0.0.1:{client_port}"
    try:
        _wait_for(lambda: _status(address).count("node_") >= 1, "the Ray head", temp / "head.log", nodes[0])
        _wait_for(lambda: _job_api_answers(dashboard), "the Ray job API", temp / "head.log", nodes[0])
        nodes.append(_start(["--address", address, "--node-ip-address", "127.0.0.1", *_agent_ports()],
                            temp / "worker.log"))
        _wait_for(lambda: _status(address).count("node_") >= 2, "the Ray worker node", temp / "worker.log", nodes[1])
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


JOB_API: dict[str, str] = {}  # cluster address -> its job API (the head's dashboard)
CLIENT: dict[str, str] = {}  # cluster address -> its Ray Client address (ray://)


def _agent_ports() -> list[str]:
    return ["--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
            "--metrics-export-port", str(_free_port())]


def _job_api_answers(url: str) -> bool:
    from ray.job_submission import JobSubmissionClient

    try:
        JobSubmissionClient(url).list_jobs()
        return True
    except Exception:  # not up yet
        return False


def _status(address: str) -> str:
    done = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True,
                          env={**os.environ, **RAY_ENV})
    return done.stdout if done.returncode == 0 else ""


def _wait_for(ready, what: str, log: Path, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(1)
    pytest.fail(f"{what} not ready after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


def test_near_duplicate_clusters_on_ray_equal_local_on_a_generated_benchmark(ray_cluster, tmp_path):
    """From a sharded dataset read on the workers (the step process gets word counts and the short texts
    only), the same clusters as from the texts in this process; short texts (a shard of them alone) too."""
    short = ["reset my password please", "reset my password please now", "how do I reset my password please",
             "dpkg fails to install", "dpkg-name fails to install"] * 3
    # 600 generated texts (291 verified pairs) in four shards: 40 s here against 46 s with 1,500 (Ray Data's stages
    # take the time, not the texts)
    texts = pl.Series(list(near_duplicate_benchmark(600, seed=5).texts) + short, dtype=pl.String)
    shards.write_dataset(pl.DataFrame({"text": texts}), tmp_path / "texts", shard_rows=160)
    local = minhash.near_duplicate_clusters(texts, DedupSettings())
    on_ray = minhash.near_duplicate_clusters(
        shards.open_dataset(tmp_path / "texts"), DedupSettings(),
        execution=ExecutionSettings(backend="ray", ray_address=ray_cluster, batch_size=200))
    assert local.verified_pairs > 100 and local.short_texts == len(short)
    assert np.array_equal(local.root, on_ray.root)
    assert np.allclose(local.similarity, on_ray.similarity, equal_nan=True)
    assert (local.candidate_pairs, local.verified_pairs, local.candidate_histogram, local.kept_apart) == (
        on_ray.candidate_pairs, on_ray.verified_pairs, on_ray.candidate_histogram, on_ray.kept_apart)


def test_a_product_quantised_index_is_queried_on_the_workers_with_the_local_answer(ray_cluster, monkeypatch):
    """Semantic dedup's pq index on Ray (streaming path): each task is sent its documents' exact vectors as it
    is sent and returns their candidates from the index, which this process judges on the exact vectors; the
    same pairs, cosines and `nearest` as the search in this process."""
    from finetune_pipeline.dedup import semantic, semantic_sharded
    from finetune_pipeline_tests.test_semantic_ann import planted_vectors

    n = semantic.PQ_MIN_TEXTS + 16
    vectors, planted, _ = planted_vectors(n, 128, seed=4)
    cfg = DedupSettings(semantic_search="ann", semantic_ann_index="pq")
    local = semantic_sharded._ann(lambda rows: vectors[rows], n, 128, cfg, ExecutionSettings())
    monkeypatch.setattr(semantic_sharded, "QUERY_TASK_DOCS", 2500)  # four tasks
    sent, real = [], semantic_sharded.per_shard
    monkeypatch.setattr(semantic_sharded, "per_shard", lambda fn, calls, execution: real(
        fn, ((sent.append(fn.__name__) or args) for args in calls), execution))
    on_ray = semantic_sharded._ann(lambda rows: vectors[rows], n, 128, cfg,
                                   ExecutionSettings(backend="ray", ray_address=ray_cluster))
    assert sent == ["_candidates_of_documents"] * 4
    assert all(np.array_equal(a, b) for a, b in zip(local, on_ray))
    assert set(map(tuple, planted.tolist())) <= set(map(tuple, local[0].tolist()))


def test_dedup_reads_the_texts_on_the_workers_and_gives_the_in_memory_answer(ray_cluster, tmp_path, monkeypatch):
    """The streaming dedup on `backend: ray` (`dedup.sharded`): the passes that read the texts (the exact keys,
    the signatures and band keys) are Ray tasks, a shard each, and this process reads texts only for the few
    records the names check and the keep decision look at; kept rows, rejects and statistics equal
    `deduplicate` on the whole frame in this process. Real text: test_dedup_sharded.py's Debian descriptions."""
    from finetune_pipeline.dedup import deduplicate, sharded
    from finetune_pipeline.settings import Settings
    from finetune_pipeline.streaming import deduplicate_dataset
    from finetune_pipeline_tests.test_dedup_sharded import debian_corpus

    corpus = debian_corpus()
    # at least 8 shards whatever the packages installed (the corpus's size is the machine's)
    shard_rows = corpus.height // 8
    shards.write_dataset(corpus, tmp_path / "in", shard_rows=shard_rows)
    dataset = shards.open_dataset(tmp_path / "in")
    assert len(dataset.manifest.shards) >= 8
    on_ray = Settings.model_validate({"execution": {"backend": "ray", "ray_address": ray_cluster}})
    assert sharded.applies(on_ray)
    sent, read_here = [], []
    real_per_shard, real_read = sharded.per_shard, sharded._read_shard

    def recorded_per_shard(fn, calls, execution):
        sent.append((fn.__name__, execution.backend, len(calls)))
        return real_per_shard(fn, calls, execution)

    def recorded_read(dataset, number, columns):
        frame = real_read(dataset, number, columns)
        read_here.append((sys._getframe(1).f_code.co_name, frame.height if "text" in columns else 0))
        return frame

    monkeypatch.setattr(sharded, "per_shard", recorded_per_shard)
    monkeypatch.setattr(sharded, "_read_shard", recorded_read)
    with shards.DatasetWriter(tmp_path / "kept") as kept, shards.DatasetWriter(tmp_path / "rejects") as rejected:
        stats = deduplicate_dataset(dataset, on_ray, kept, rejected)

    shard_count = len(dataset.manifest.shards)
    assert sent == [("_shard_keys", "ray", shard_count), ("_shard_signatures", "ray", shard_count)]
    # The two passes read their shards on the workers (locally `_shard_keys` and `_shard_signatures` read them
    # here): this process reads the keep-order columns (`_distinct`, no texts) and, through `DatasetTexts.by_shard`,
    # the shards holding the texts the names check and the keep decision look at, one shard at a time.
    assert {caller for caller, _ in read_here} <= {"_distinct", "by_shard"}
    assert sum(rows for caller, rows in read_here if caller == "_distinct") == 0
    expected = deduplicate(corpus, Settings())
    assert expected.stats.near_duplicates >= 100 and expected.stats.exact_duplicates >= 20
    assert expected.stats.near_kept_apart > 0
    assert shards.open_dataset(tmp_path / "kept").collect().equals(expected.kept)
    assert shards.open_dataset(tmp_path / "rejects").collect().equals(expected.rejected)
    assert stats.to_dict() == expected.stats.to_dict()

    # The split's and the contamination check's look (`splits.TextSource`) takes the same tasks on Ray.
    from finetune_pipeline.splits import TextSource

    sent.clear()
    rows = corpus.select("record_id").with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
    threshold = Settings().splits.contamination_threshold
    on_workers = TextSource(dataset, on_ray.execution).clusters(rows, threshold, Settings().dedup)
    assert sent == [("_shard_signatures", "ray", shard_count)]
    here = TextSource().clusters(corpus.select("record_id", "text"), threshold, Settings().dedup)
    assert (on_workers != np.arange(len(on_workers))).sum() > 100 and np.array_equal(on_workers, here)

    # A shard whose texts a task cannot read (its `text` column gone; the step itself reads only the keep-order
    # columns, which are there) fails the stage with the worker's error and commits nothing: no kept rows or
    # rejects where the next stage would read them.
    shards.write_dataset(corpus, tmp_path / "broken", shard_rows=shard_rows)
    broken = shards.open_dataset(tmp_path / "broken")
    last = Path(broken.shard_urls()[-1])
    pl.read_parquet(last).drop("text").write_parquet(last)
    with pytest.raises(Exception, match="text") as failed:
        with shards.DatasetWriter(tmp_path / "kept2") as kept, shards.DatasetWriter(tmp_path / "rej2") as rejected:
            deduplicate_dataset(broken, on_ray, kept, rejected)
    assert "RayTaskError" in failed.typename  # raised on a worker, brought back by `per_shard`
    assert not (tmp_path / "kept2" / "manifest.json").exists() and not (tmp_path / "rej2" / "manifest.json").exists()


def test_the_domain_filter_and_semantic_dedup_embed_on_the_workers_and_decide_as_in_memory(ray_cluster, tmp_path,
                                                                                          monkeypatch):
    """With a domain and semantic dedup, the streaming dedup on Ray (`domain_sharded`, `semantic_sharded`,
    `sharded_vectors`): the cache keys and MiniLM's vectors are made by Ray tasks, a shard each, which read their
    shard's texts themselves (this process reads no text for them), and the FAISS index's queries run in a Ray task;
    the off-domain records, the duplicates, the kept rows and the statistics are those of `deduplicate` here.
    Real text and the real model: test_domain_sharded.py's Debian descriptions with licence chunks, a part of
    them. (The vectors are made in other processes in other batches, so scores may differ in the last bits:
    the decisions are compared, not the printed scores.)"""
    from finetune_pipeline import sharded_vectors
    from finetune_pipeline.dedup import semantic_sharded
    from finetune_pipeline.embeddings import EmbeddingCache
    from finetune_pipeline.dedup import deduplicate
    from finetune_pipeline.settings import Settings
    from finetune_pipeline.streaming import deduplicate_dataset
    from finetune_pipeline_tests.test_domain_sharded import DOMAIN, packages_and_licences

    corpus = packages_and_licences().head(420)
    shards.write_dataset(corpus, tmp_path / "in", shard_rows=110)
    dataset = shards.open_dataset(tmp_path / "in")
    settings = {"domain": {**DOMAIN, "max_reject_share": 0.3}, "dedup": {"semantic": True, "semantic_search": "ann"}}
    on_ray = Settings.model_validate({**settings, "execution": {"backend": "ray", "ray_address": ray_cluster}})
    sent, read_here = [], []
    real_per_shard, real_texts = sharded_vectors.per_shard, sharded_vectors.shard_texts
    monkeypatch.setattr(sharded_vectors, "per_shard", lambda fn, calls, execution, **options: sent.append(
        (fn.__name__, execution.backend, len(calls), options)) or real_per_shard(fn, calls, execution, **options))
    monkeypatch.setattr(sharded_vectors, "shard_texts", lambda *a: read_here.append(a[1]) or real_texts(*a))
    monkeypatch.setattr(semantic_sharded, "per_shard", lambda fn, calls, execution, **options: sent.append(
        (fn.__name__, execution.backend, len(calls), options)) or real_per_shard(fn, calls, execution, **options))
    cache = EmbeddingCache(tmp_path / "cache", "deduplicated_corpus")
    with shards.DatasetWriter(tmp_path / "kept") as kept, shards.DatasetWriter(tmp_path / "rejects") as rejected:
        stats = deduplicate_dataset(dataset, on_ray, kept, rejected, embedding_cache=cache)

    # the vectors' tasks ask for a GPU each where the cluster has GPUs (this one has none: CPU tasks)
    # (the domain's description embedded on a worker too: the model never loads in the step process); then
    # semantic dedup: its keys per shard, no text embedded again (the domain filter's vectors, same model), the
    # index's queries in one task (fewer than 50,000 documents)
    assert sent == [("encode_on_worker", "ray", 1, {"gpu": True}), ("_shard_keys", "ray", 4, {}),
                    ("_shard_vectors", "ray", 4, {"gpu": True}), ("_shard_keys", "ray", 4, {}),
                    ("_shard_vectors", "ray", 0, {"gpu": True}), ("_query_documents", "ray", 1, {})]
    assert read_here == []
    expected = deduplicate(corpus, Settings.model_validate(settings))
    found = shards.open_dataset(tmp_path / "rejects").collect()
    off = expected.rejected.filter(pl.col("reason") == "off_domain")
    assert off.height >= 10 and off["source_uri"].str.ends_with(".txt").mean() >= 0.8  # licence chunks
    assert found.filter(pl.col("reason") == "off_domain")["record_id"].to_list() == off["record_id"].to_list()
    assert found.drop("detail").equals(expected.rejected.drop("detail"))
    assert shards.open_dataset(tmp_path / "kept").collect().equals(expected.kept.select(corpus.columns + ["group_id"]))
    assert (stats.domain.off_domain, stats.domain.off_domain_sources, stats.exact_duplicates, stats.near_duplicates,
            stats.semantic_duplicates) == (expected.stats.domain.off_domain, expected.stats.domain.off_domain_sources,
                                           expected.stats.exact_duplicates, expected.stats.near_duplicates,
                                           expected.stats.semantic_duplicates)
    assert expected.stats.semantic_duplicates > 0


def test_a_ray_client_address_as_kuberay_exposes_it_runs_a_stage(ray_cluster, tmp_path):
    """`execution.ray_address: ray://host:port`, the Ray Client connection the README gives for a KubeRay cluster
    (its head service's port 10001; here the head's client server on the loopback): the pipeline connects
    through it, ships its package to the workers (by path: the client pickles the runtime environment, and the
    module object could not be pickled) and the dedup stage's tasks run there with the in-memory answer."""
    import ray

    from finetune_pipeline.dedup import deduplicate
    from finetune_pipeline.settings import Settings
    from finetune_pipeline.streaming import deduplicate_dataset
    from finetune_pipeline_tests.test_dedup_sharded import debian_corpus

    corpus = debian_corpus().head(600)
    shards.write_dataset(corpus, tmp_path / "in", shard_rows=150)
    settings = Settings.model_validate({"execution": {"backend": "ray", "ray_address": CLIENT[ray_cluster]}})
    if ray.is_initialized():
        ray.shutdown()  # this process's connection of the earlier tests: the stage connects through the client
    try:
        with shards.DatasetWriter(tmp_path / "kept") as kept, shards.DatasetWriter(tmp_path / "rejects") as rejected:
            stats = deduplicate_dataset(shards.open_dataset(tmp_path / "in"), settings, kept, rejected)
        assert ray.util.client.ray.is_connected()  # through the Ray Client, not a driver on the cluster
    finally:
        ray.shutdown()
    expected = deduplicate(corpus, Settings())
    assert expected.stats.near_duplicates + expected.stats.exact_duplicates > 0
    assert shards.open_dataset(tmp_path / "kept").collect().equals(expected.kept)
    assert stats.to_dict() == expected.stats.to_dict()


def test_a_suite_s_row_wise_expectations_run_on_the_workers_and_decide_as_on_the_whole_frame(ray_cluster, tmp_path,
                                                                                           monkeypatch):
    """`validation.validate` on a dataset with `backend: ray`: each shard's row-wise expectations are a Ray task
    (this process runs only the expectations over the whole dataset: uniqueness, row counts), and the suite
    decides as on the whole frame, its unexpected counts added up over the shards (test_io_shards.py's cases:
    defects in different shards, a row condition, too few rows)."""
    from finetune_pipeline import validation as v
    from finetune_pipeline_tests.test_io_shards import _corpus, _suite_outcome

    on_ray = ExecutionSettings(backend="ray", ray_address=ray_cluster)
    good = _corpus(7).with_columns(pl.col("record_id").alias("group_id"))
    broken = good.with_columns(
        pl.when(pl.col("record_id").is_in(["r001", "r006"])).then(None).otherwise(pl.col("text")).alias("text"),
        pl.when(pl.col("record_id") == "r003").then(pl.lit("r000")).otherwise(pl.col("record_id")).alias("record_id"))
    cases = [(good, v.deduplicated_expectations(5)), (broken, v.deduplicated_expectations(5)),
             (good.with_columns(pl.col("text").str.slice(0, 8)),
              v.cleaned_expectations(1, 10, 100, frozenset({"csv"})))]
    here, real_results = [], v._results

    def recorded(frame, suite_name, expectations):
        here.extend(e.expectation_type for e in expectations)
        return real_results(frame, suite_name, expectations)

    for n, (frame, expectations) in enumerate(cases):
        shards.write_dataset(frame, tmp_path / str(n), shard_rows=3)
        whole = v.validate(frame, "suite", expectations)
        monkeypatch.setattr(v, "_results", recorded)
        sharded = v.validate(shards.open_dataset(tmp_path / str(n)), "suite", expectations, on_ray)
        monkeypatch.setattr(v, "_results", real_results)
        assert _suite_outcome(sharded) == _suite_outcome(whole), n
        assert here and not any(t in v.ROW_WISE for t in here), here  # the row-wise ones ran on the workers
        here.clear()
    failed = {(f["expectation"], f["column"]): f["observed"] for f in v.validate(
        shards.open_dataset(tmp_path / "1"), "suite", v.deduplicated_expectations(5), on_ray).failures}
    assert failed[("expect_column_values_to_not_be_null", "text")] == 2  # one in each of two shards, added up
    assert failed[("expect_column_values_to_be_unique", "record_id")] == 2


def test_dagster_runs_the_heavy_assets_on_the_cluster_with_metadata_and_logs(ray_cluster, tmp_path):
    """Through Dagster: the `ray_cluster` resource connects to the cluster named in the settings, the
    assets record the backend and the cluster in their metadata, and the run's events carry the stage logs."""
    import dagster as dg

    from finetune_pipeline.defs.cleaning import cleaned_corpus
    from finetune_pipeline.defs.collection import raw_corpus
    from finetune_pipeline.defs.resources import PipelineResource
    from finetune_pipeline.definitions import resources_for

    root = copy_sample_data(tmp_path / "data")
    pipeline = PipelineResource(data_dir=str(root), settings_yaml=f"execution: {{backend: ray, ray_address: "
                                                                   f"'{ray_cluster}', batch_size: 64}}")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([raw_corpus, cleaned_corpus], resources=resources_for(pipeline), instance=instance)
    assert result.success
    for key in ("raw_corpus", "cleaned_corpus"):
        meta = result.asset_materializations_for_node(key)[0].metadata
        assert meta["execution_backend"].value == "ray"
        assert meta["ray_cluster"].value["nodes"] == 2
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("(parsed)" in m and "raw/" in m for m in messages)  # per-source progress of the Ray parse
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.stored import stored_frame

    from finetune_pipeline.stored import stored_rejects

    # the same rows and rejects as the library's in-memory stages on the local backend
    local_root = copy_sample_data(tmp_path / "local")
    settings = load_settings(local_root)
    raw = collect_raw_corpus(local_root, settings, cache_dir=local_root / ".pipeline" / "parse_cache")
    local = clean_corpus(raw.kept, settings, load_erasure_requests(local_root))
    stored = stored_frame(DataRoot(root), "cleaned_corpus").drop("ingested_at")
    assert stored.height > 0 and stored.equals(local.kept.drop("ingested_at"))
    assert stored_rejects(DataRoot(root), "cleaned_corpus").equals(local.rejected)


def test_a_ray_job_stage_outlives_its_killed_dagster_run_and_the_next_run_waits_for_it(ray_cluster, tmp_path):
    """`execution.ray_jobs` (cleaned_corpus as a Ray job through dagster-ray's Pipes client): the README's
    `finetune-pipeline run` is killed (SIGKILL, its process group) while its cleaned_corpus job runs on the
    cluster; the job finishes and commits the stage's output and the cleaning cache: the rows and rejects of
    the local streaming path. The next run (started at once) never runs its own job beside the first one (it
    waits for it); its job reuses every cached unit, names itself in the metadata and sends its progress lines
    to the run's log. A copy of the sample root with 24 of its tickets: what is tested is the job, not
    cleaning."""
    from dagster import AssetKey, DagsterInstance
    from ray.job_submission import JobSubmissionClient

    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.stored import stored_frame, stored_rejects

    cli = Path(sys.executable).parent / "finetune-pipeline"
    root, home = copy_sample_data(tmp_path / "data"), tmp_path / "dagster_home"
    for other in [p for p in (root / "raw").iterdir() if p.name != "tickets"]:
        shutil.rmtree(other) if other.is_dir() else other.unlink()
    for label in (root / "raw" / "tickets").iterdir():
        for ticket in sorted(label.iterdir())[6:]:
            ticket.unlink()
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "dagster.yaml", home / "dagster.yaml")
    (root / "finetune.yaml").write_text((root / "finetune.yaml").read_text() + (
        f"\nexecution:\n  backend: ray\n  ray_address: '{ray_cluster}'\n  ray_jobs: [cleaned_corpus]\n"
        f"  ray_job_address: '{JOB_API[ray_cluster]}'\n  shard_rows: 80\n"))
    env = {**os.environ, **RAY_ENV, "DAGSTER_HOME": str(home)}
    client, data_dir = JobSubmissionClient(JOB_API[ray_cluster]), str(root.resolve())

    def jobs() -> list:
        return sorted((j for j in client.list_jobs() if (j.metadata or {}).get("finetune.data_root") == data_dir),
                      key=lambda j: j.start_time or 0)

    first_log = tmp_path / "first.log"
    first = subprocess.Popen([str(cli), "run", "--data-dir", str(root), "--select", "*cleaned_corpus"],
                             stdout=first_log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    while not any(j.status == "RUNNING" for j in jobs()):
        assert first.poll() is None, f"the run ended before its job ran: {first_log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, first_log.read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # Dagster goes; the job stays
    first.wait(30)
    layout = DataRoot(root)
    raw = stored_frame(layout, "raw_corpus")  # committed by the killed run before its job started
    second = subprocess.run([str(cli), "run", "--data-dir", str(root), "--select", "cleaned_corpus"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    (killed, next_job) = jobs()
    assert killed.status == "SUCCEEDED" and next_job.status == "SUCCEEDED", (killed, next_job)
    assert next_job.start_time >= killed.end_time  # never two jobs writing one data root's datasets
    kept, rejected = stored_frame(layout, "cleaned_corpus"), stored_rejects(layout, "cleaned_corpus")
    assert kept.height > 0 and sorted(kept["record_id"].to_list() + rejected["record_id"].to_list()) == \
        sorted(raw["record_id"].to_list())
    event = DagsterInstance.from_config(str(home)).get_latest_materialization_event(AssetKey("cleaned_corpus"))
    meta = event.asset_materialization.metadata
    assert meta["ray_job_id"].value == next_job.submission_id
    # the killed run's job wrote the cache: the next job cleaned nothing again
    assert meta["rows_cleaned"].value == 0 and meta["rows_reused"].value == raw.height
    assert "cleaned_corpus: 1/1 batches done" in second.stdout + second.stderr  # the job's log, through Pipes
    assert not list((root / ".pipeline" / "jobs").glob("*.json"))  # each job's spec went once read
    # the same rows and rejects as the local streaming path
    from finetune_pipeline.shards import DatasetWriter, open_dataset
    from finetune_pipeline.streaming import clean_dataset

    settings = load_settings(root).model_copy(update={"execution": ExecutionSettings()})
    with DatasetWriter(tmp_path / "local" / "kept") as local_kept, \
            DatasetWriter(tmp_path / "local" / "rejected") as local_rejected:
        shards.write_dataset(raw, tmp_path / "local" / "raw")
        clean_dataset(open_dataset(tmp_path / "local" / "raw"), settings, load_erasure_requests(root), local_kept,
                      local_rejected)
    assert kept.drop("ingested_at").equals(open_dataset(tmp_path / "local" / "kept").collect().drop("ingested_at"))
    assert rejected.equals(open_dataset(tmp_path / "local" / "rejected").collect())


def test_cleaning_runs_on_the_workers_shard_to_shard_with_the_streaming_paths_rows(ray_cluster, tmp_path):
    """`clean_dataset_on_ray`: each batch of whole documents is read, cleaned and written by a Ray task (this
    process reads only the columns that cut the batches); kept rows, rejects, statistics and the cleaning
    cache equal the local streaming path's; a second run reuses every cached unit; a batch whose shard is
    gone fails the stage and leaves the previous datasets as they were."""
    from finetune_pipeline.streaming import clean_dataset, clean_dataset_on_ray, document_ranges

    root = copy_sample_data(tmp_path / "data")
    settings = load_settings(root)
    raw = collect_raw_corpus(root, settings, cache_dir=root / ".pipeline" / "parse_cache").kept
    assert raw.filter(pl.col("source_type").is_in(["pdf", "docx"])).height > 1  # paged documents to keep whole
    plain = raw.filter(pl.col("source_type") == "txt").head(3)  # and records cleaning rejects (too short)
    raw = pl.concat([raw, plain.with_columns(pl.lit("hi").alias("text"), pl.col("record_id") + "-short")])
    shards.write_dataset(raw, tmp_path / "raw", shard_rows=7)  # documents cross shard boundaries
    source = shards.open_dataset(tmp_path / "raw")
    requests = load_erasure_requests(root)
    ranges = document_ranges(source, 25)
    assert len(ranges) > 2 and ranges[-1][1] == raw.height

    with shards.DatasetWriter(tmp_path / "local-kept") as kept, shards.DatasetWriter(tmp_path / "local-rej") as rej:
        local_stats, local_report = clean_dataset(source, settings, requests, kept, rej,
                                                  cache_file=tmp_path / "local-cache.parquet", rows=25)
    on_ray = load_settings(root, overrides={"execution": {"backend": "ray", "ray_address": ray_cluster}})
    seen = []

    def run():
        return clean_dataset_on_ray(source, on_ray, requests, str(tmp_path / "kept"), str(tmp_path / "rej"),
                                    cache_file=tmp_path / "cache.parquet", rows=25,
                                    progress=lambda done, total: seen.append((done, total)))

    stats, report = run()
    assert seen[-1] == (len(ranges), len(ranges))
    kept, rejected = shards.open_dataset(tmp_path / "kept"), shards.open_dataset(tmp_path / "rej")
    assert len(kept.manifest.shards) > 2  # one shard per batch, written by its task
    assert kept.collect().equals(shards.open_dataset(tmp_path / "local-kept").collect())
    assert rejected.collect().equals(shards.open_dataset(tmp_path / "local-rej").collect())
    assert rejected.height > 0
    assert stats.to_dict() == local_stats.to_dict() and report == local_report
    assert pl.read_parquet(tmp_path / "cache.parquet").equals(pl.read_parquet(tmp_path / "local-cache.parquet"))
    assert not list(tmp_path.glob(".cache.parquet.parts-*"))

    first = kept.collect()
    _, again = run()
    assert (again.rows_reused, again.rows_cleaned) == (raw.height, 0)
    assert shards.open_dataset(tmp_path / "kept").collect().equals(first)

    before = {name: shards.read_manifest(tmp_path / name) for name in ("kept", "rej")}
    Path(source.shard_urls()[-1]).unlink()  # the last batch's task cannot read its rows
    with pytest.raises(Exception, match="part-"):
        run()
    for name, manifest in before.items():
        assert shards.read_manifest(tmp_path / name) == manifest
        assert [p.name for p in (tmp_path / name).glob("g-*")] == [manifest.shards[0].path.split("/")[0]]
    assert not list(tmp_path.glob(".cache.parquet.parts-*"))


def _slow_double(batch: pl.DataFrame, marks: str, pause_s: float, fail_on: int = -1) -> pl.DataFrame:
    """A batch function slow enough to be caught mid-stage: notes which node runs it (a file per batch
    under `marks`), waits, and doubles `id`; raises on the batch holding `fail_on`."""
    import uuid

    import ray

    Path(marks, f"{ray.get_runtime_context().get_node_id()}-{uuid.uuid4().hex[:8]}").touch()
    time.sleep(pause_s)
    if fail_on in batch["id"]:
        raise ValueError(f"batch with id {fail_on} fails on purpose")
    return batch.with_columns((pl.col("id") * 2).alias("doubled"))


def _warm() -> list[str]:
    import ray.data

    import finetune_pipeline.execution

    return [ray.data.__name__, finetune_pipeline.execution.__name__]  # what the stage's tasks import


def _source(root: Path) -> shards.ShardedDataset:
    frame = pl.DataFrame({"id": np.arange(240, dtype=np.int64), "text": [f"record {i}" for i in range(240)]})
    shards.write_dataset(frame, root, shard_rows=20)  # 12 shards
    return shards.open_dataset(root)


def test_a_stage_survives_a_killed_worker_node_and_commits_the_whole_output(ray_cluster, tmp_path):
    """A third node joins, runs some of the stage's batches and is killed (SIGKILL to its raylet and
    workers) while they run: Ray retries its tasks on the other nodes (Ray Data's task max_retries=-1 for
    system failures), and the committed dataset equals the output without a failure."""
    import ray
    from ray import cloudpickle
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers do not import the tests
    source = _source(tmp_path / "source")
    marks = tmp_path / "marks"
    marks.mkdir()
    execution = ExecutionSettings(backend="ray", ray_address=ray_cluster, batch_size=20)
    expected = source.collect().with_columns((pl.col("id") * 2).alias("doubled"))
    connect(execution)
    before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    temp = Path(tempfile.mkdtemp(prefix="rayk", dir="/tmp"))
    victim = _start(["--address", ray_cluster, "--node-ip-address", "127.0.0.1"], temp / "victim.log")
    try:
        _wait_for(lambda: len({n["NodeID"] for n in ray.nodes() if n["Alive"]} - before) == 1, "the third node",
                  temp / "victim.log", victim)
        victim_id = ({n["NodeID"] for n in ray.nodes() if n["Alive"]} - before).pop()
        # a worker started on the new node beforehand (with the job's runtime env), so the stage's tasks
        # reach it at once
        on_victim = NodeAffinitySchedulingStrategy(victim_id, soft=False)
        ray.get(ray.remote(_warm).options(scheduling_strategy=on_victim).remote())
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["manifest"] = map_batches_to_dataset(source, _slow_double, tmp_path / "out", execution,
                                                             batch_size=20, marks=str(marks), pause_s=1.5)
            except BaseException as error:  # reported below
                outcome["error"] = error

        stage = threading.Thread(target=run)
        stage.start()
        deadline = time.monotonic() + 60
        while not any(m.name.startswith(victim_id) for m in marks.iterdir()):
            assert time.monotonic() < deadline and stage.is_alive(), f"the third node ran no batch: {outcome}"
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)  # mid-batch: the batch sleeps 1.5 s after its mark
        stage.join(120)
        assert not stage.is_alive(), "the stage did not finish after the node was killed"
        assert "error" not in outcome, f"the stage failed: {outcome.get('error')!r}"
        assert victim_id not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        out = shards.open_dataset(tmp_path / "out")
        assert out.manifest == outcome["manifest"] and out.rows == 240
        assert out.collect().equals(expected)
        generations = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("g-")]
        assert generations == [out.manifest.shards[0].path.split("/")[0]]  # no partial generation left
    finally:
        _stop(victim)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_stage_that_fails_leaves_the_previous_dataset_or_none(ray_cluster, tmp_path):
    """A batch function that raises is not retried (an application error): the stage fails, the location
    keeps its previous manifest and shards (or has no dataset at all), and the failed generation is removed."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    source = _source(tmp_path / "source")
    execution = ExecutionSettings(backend="ray", ray_address=ray_cluster, batch_size=20)
    previous = map_batches_to_dataset(source, _slow_double, tmp_path / "out", execution, batch_size=20,
                                      marks=str(tmp_path), pause_s=0)
    before = sorted(p.name for p in (tmp_path / "out").rglob("*"))
    with pytest.raises(Exception, match="fails on purpose"):
        map_batches_to_dataset(source, _slow_double, tmp_path / "out", execution, batch_size=20,
                               marks=str(tmp_path), pause_s=0, fail_on=230)
    assert shards.read_manifest(tmp_path / "out") == previous
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == before
    assert shards.open_dataset(tmp_path / "out").collect()["doubled"].to_list() == list(range(0, 480, 2))
    with pytest.raises(Exception, match="fails on purpose"):
        map_batches_to_dataset(source, _slow_double, tmp_path / "fresh", execution, batch_size=20,
                               marks=str(tmp_path), pause_s=0, fail_on=0)
    assert not shards.is_dataset(tmp_path / "fresh")
    assert not list((tmp_path / "fresh").glob("g-*"))


def _first_of_group(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.with_columns(pl.col("_row").min().over("group").alias("first"), pl.len().over("group").alias("size"))


def _with_group(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.with_columns((pl.col("id") % 7).alias("group"))


def test_stages_run_shard_to_shard_on_ray_with_the_local_rows(ray_cluster, tmp_path):
    """`map_groups_to_dataset` (row index, prepare, shuffle on the groups, sort) and `map_batches_to_dataset`
    read the source's shards and write the output's on the workers; the committed rows equal the local
    backend's row for row (whose groups span shards here, so the local path groups the whole dataset)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    source = _source(tmp_path / "source")
    on_ray = ExecutionSettings(backend="ray", ray_address=ray_cluster, batch_size=20)
    out = {}
    for name, execution in (("local", ExecutionSettings()), ("ray", on_ray)):
        manifest = map_groups_to_dataset(source, ["group"], _first_of_group, tmp_path / f"groups-{name}", execution,
                                         prepare=_with_group, row_index="_row")
        assert manifest == shards.read_manifest(tmp_path / f"groups-{name}")
        out[name] = shards.open_dataset(tmp_path / f"groups-{name}").collect()
    assert out["ray"].equals(out["local"]) and out["ray"]["_row"].to_list() == list(range(240))
    assert out["ray"].filter(pl.col("id") == 15)["first"].item() == 1 and set(out["ray"]["size"]) == {34, 35}
    assert len(shards.read_manifest(tmp_path / "groups-ray").shards) > 1  # written by several tasks


def test_the_split_is_applied_on_the_workers_shard_for_shard_as_on_the_local_path(ray_cluster, tmp_path,
                                                                                  monkeypatch):
    """`apply_split_dataset` on `backend: ray` (`streaming.write_rows_on_ray`, as `dataset_splits` runs it): each
    output shard is joined and written by a Ray task, this process reads the record ids only (no shard through
    `read_shard`); the same shards, byte for byte, as the local streaming path, augmented rows with their source's
    split; progress in rows. A task that cannot read its rows fails the stage and commits nothing. Real text: the
    Debian descriptions."""
    from finetune_pipeline.progress import reporting
    from finetune_pipeline.settings import Settings
    from finetune_pipeline.splits import apply_split_assignment, split_assignment
    from finetune_pipeline.streaming import apply_split_dataset
    from finetune_pipeline_tests.test_dedup_sharded import debian_corpus

    originals = debian_corpus().with_columns(pl.lit(None, pl.String).alias("augmented_from"))
    settings = Settings()
    assignment, _ = split_assignment(originals, settings.splits, settings.dedup)
    train = assignment.filter(pl.col("split") == "train")["record_id"].head(60)
    copies = originals.filter(pl.col("record_id").is_in(train.implode())).with_columns(
        (pl.col("record_id") + "-copy").alias("record_id"), pl.col("record_id").alias("augmented_from"))
    corpus = pl.concat([originals, copies])
    rows = corpus.height // 6
    shards.write_dataset(corpus, tmp_path / "augmented", shard_rows=rows // 2)  # windows cross input shards
    dataset = shards.open_dataset(tmp_path / "augmented")
    with shards.DatasetWriter(tmp_path / "local", shard_rows=rows) as writer:
        apply_split_dataset(dataset, assignment, writer, rows=rows // 3)  # the local path's windows: any size
    local = shards.read_manifest(tmp_path / "local")

    on_ray = Settings.model_validate({"execution": {"backend": "ray", "ray_address": ray_cluster}})
    read_here, seen = [], []
    real_read = shards.ShardedDataset.read_shard
    monkeypatch.setattr(shards.ShardedDataset, "read_shard",
                        lambda self, *args, **kw: read_here.append(args) or real_read(self, *args, **kw))
    with reporting(lambda what, done, total: seen.append((what, done, total))), \
            shards.DatasetWriter(tmp_path / "ray", shard_rows=rows) as writer:
        apply_split_dataset(dataset, assignment, writer, rows=rows // 3, execution=on_ray.execution)
    manifest = shards.read_manifest(tmp_path / "ray")
    assert read_here == [] and len(local.shards) >= 6 and len(seen) == len(local.shards)
    assert seen[-1] == ("rows written on the workers", corpus.height, corpus.height)
    assert manifest.digest == local.digest and [s.rows for s in manifest.shards] == [s.rows for s in local.shards]
    written = shards.open_dataset(tmp_path / "ray").collect()
    assert written.equals(apply_split_assignment(corpus, assignment))
    copied = written.filter(pl.col("augmented_from").is_not_null())
    assert copied.height == 60 and set(copied["split"]) == {"train"}

    last = Path(dataset.shard_urls()[-1])
    pl.read_parquet(last).drop("text").write_parquet(last)  # the last shard's texts gone: its tasks fail
    with pytest.raises(Exception, match="text") as failed:
        with shards.DatasetWriter(tmp_path / "ray2", shard_rows=rows) as writer:
            apply_split_dataset(dataset, assignment, writer, execution=on_ray.execution)
    assert "RayTaskError" in failed.typename
    assert not (tmp_path / "ray2").exists()  # nothing committed, no generation left


def test_dedup_labeling_and_augmentation_write_their_rows_on_the_workers_as_locally(ray_cluster, tmp_path,
                                                                                   monkeypatch):
    """On `backend: ray` the stages that know each output row's input row write their rows on the workers
    (`streaming.write_rows_on_ray`): dedup's kept rows, labeling's (classification) and augmentation's originals
    and copies; this process writes none of them itself (`DatasetWriter.write` is called for the rejects only).
    Labeling's built-in zero-shot model embeds the texts of the records it labels by Ray tasks, a shard each, which
    read them themselves (`labeling.rows`: this process reads none of them but the review queue's).
    Each stage's dataset equals the local streaming path's shard for shard, byte for byte (the same manifest
    digest: the same shards embedded in the same batches, in worker processes), on test_streaming.py's slice of
    the sample data (several 64-row shards, a keep order and a label order not the input's, oversampled copies)."""
    from finetune_pipeline import execution as ex
    from finetune_pipeline import streaming as st
    from finetune_pipeline.cleaning.cache import cached_clean_corpus
    from finetune_pipeline.labeling.annotations import load_annotations
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.splits import split_assignment
    from finetune_pipeline.tasks import task_for
    from finetune_pipeline import sharded_vectors
    from finetune_pipeline_tests.test_streaming import ROWS, sample_corpus

    root, settings, corpus = sample_corpus(tmp_path / "data")
    local = settings.model_copy(update={"execution": settings.execution.model_copy(update={"shard_rows": ROWS})})
    on_ray = local.model_copy(update={"execution": local.execution.model_copy(
        update={"backend": "ray", "ray_address": ray_cluster})})
    shards.write_dataset(cached_clean_corpus(corpus, local, [], None)[0].kept, tmp_path / "cleaned", shard_rows=ROWS)
    annotations, problems = load_annotations(DataRoot(root).annotations)
    written_here, windows = [], []
    real_write, real_per_shard = shards.DatasetWriter.write, ex.per_shard  # `write_rows_on_ray` looks it up there

    def recorded_write(self, frame):
        written_here.append((Path(self.location).name, frame.height))
        return real_write(self, frame)

    def recorded_per_shard(fn, calls, execution, gpu=False):
        if fn.__name__ == "_write_window":
            windows.append(execution.backend)
        return real_per_shard(fn, calls, execution, gpu)

    monkeypatch.setattr(shards.DatasetWriter, "write", recorded_write)
    monkeypatch.setattr(ex, "per_shard", recorded_per_shard)
    embedded, texts_read = [], []
    real_vectors_per_shard, real_texts = sharded_vectors.per_shard, sharded_vectors.shard_texts
    monkeypatch.setattr(sharded_vectors, "per_shard", lambda fn, calls, execution, **options: embedded.append(
        (fn.__name__, execution.backend, len(calls))) or real_vectors_per_shard(fn, calls, execution, **options))
    monkeypatch.setattr(sharded_vectors, "shard_texts", lambda *a: texts_read.append(a[1]) or real_texts(*a))
    digests = {}
    for path, s in (("local", local), ("ray", on_ray)):
        out = tmp_path / path
        written_here.clear(), windows.clear()

        def writers(name):
            return shards.DatasetWriter(out / name, shard_rows=ROWS), shards.DatasetWriter(out / f"{name}-rejects",
                                                                                          shard_rows=ROWS)

        kept, rejected = writers("dedup")
        st.deduplicate_dataset(shards.open_dataset(tmp_path / "cleaned"), s, kept, rejected)
        kept.commit(), rejected.commit()
        kept, rejected = writers("labeled")
        embedded.clear(), texts_read.clear()
        _, review = st.label_dataset(shards.open_dataset(out / "dedup"), s, kept, rejected, annotations, problems)
        kept.commit(), rejected.commit()
        # the label descriptions, then per shard the keys and the vectors of the records the model labels
        assert [(name, backend) for name, backend, _ in embedded] == [
            ("encode_on_worker", path), ("_shard_keys", path), ("_shard_vectors", path)] if path == "ray" else [
            ("_shard_keys", path), ("_shard_vectors", path)]
        assert embedded[-1][2] >= 2 and (texts_read == [] if path == "ray" else len(texts_read) >= 4)
        assert review.filter(pl.col("label_model").str.starts_with("zero-shot"))["text"].null_count() == 0
        assignment, _ = split_assignment(shards.open_dataset(out / "labeled").collect(), s.splits, s.dedup,
                                         task_for(s))
        with shards.DatasetWriter(out / "augmented", shard_rows=ROWS) as kept:
            st.augment_dataset(shards.open_dataset(out / "labeled"), s, kept, assignment=assignment)
        digests[path] = {name: shards.read_manifest(out / name).digest for name in ("dedup", "labeled", "augmented")}
        made = {name: len(shards.read_manifest(out / name).shards) for name in ("dedup", "labeled", "augmented")}
        by_writer = {name for name, rows in written_here if rows}
        if path == "ray":  # every kept shard written by Ray tasks (a call of them per stage), every reject here
            assert by_writer == {"dedup-rejects", "labeled-rejects"} and windows == ["ray"] * 3
        else:
            assert {"dedup", "labeled", "augmented"} <= by_writer and windows == []
    assert min(made.values()) >= 3
    augmented = shards.open_dataset(tmp_path / "ray" / "augmented").collect()
    assert augmented["augmented_from"].is_not_null().sum() > 0  # copies were written from their sources' rows
    assert digests["ray"] == digests["local"]
