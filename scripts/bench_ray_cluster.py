r"""The Ray stages shard to shard on a local multi-node Ray cluster: wall time, records/s, the step process's
peak memory and the object store's spill, per stage.

Run from the repository root:

  .venv/bin/python scripts/bench_ray_cluster.py --records 100000 --out /tmp/raybench

It starts a Ray head (no CPUs: it schedules, it runs no task) and `--workers` worker nodes (`ray start
--address`, one CPU each), all on this machine but separate raylets and object stores, so blocks move
between nodes over the network path. A subprocess generates a corpus like scripts/bench_soak.py's
(`--records` support tickets with Faker, 4 % exact and 4 % near copies, names, emails, phones, cards),
collects it (`collect_raw_corpus`) and writes it as a sharded dataset of `--shard-rows` rows per shard;
this process never reads it. Then, with `execution.backend: ray`:

1. cleaned rows: `execution.map_groups_to_dataset` with `cleaning.stage.clean_documents` (`privacy.detector:
   patterns`), grouped by document as the cleaning stage groups them, ordered by input row, written by
   the workers;
2. kept rows: `execution.map_batches_to_dataset` keeping the rows without a reject reason;
3. MinHash near duplicates: `minhash.near_duplicate_clusters` on the kept rows' dataset (signatures, LSH
   shuffle, verification and connected components on the workers; this process holds one label and a few
   numbers per document and the short texts).

With `--cleaning-stage-only` it runs, instead, the cleaning stage as the `cleaned_corpus` asset runs it on Ray
(`streaming.clean_dataset_on_ray`: this process reads the columns that cut the corpus into batches of whole
documents; each batch's task reads its rows, cleans them and writes its shards of kept rows and rejects on a
worker), twice: with a cold cleaning cache, then with the warm one (every unit reused).

With `--dedup-stage ROOT` it runs, instead, the dedup stage as the `deduplicated_corpus` asset runs it
(`streaming.deduplicate_dataset`) on ROOT's stored `cleaned_corpus` with ROOT's settings (classification without
the domain filter and semantic dedup: the sharded path): on Ray here (the exact keys and the signatures are Ray
tasks, a shard each), then on the local backend in a subprocess (its wall time and peak RSS from
`getrusage`), and says whether both wrote the same kept rows and rejects (their manifests' content digests).

For each it prints the wall time, records in, records/s, this process's peak RSS during the stage
(sampled every 20 ms; "step RSS"), the worker nodes' processes' peak RSS summed (sampled every 0.5 s),
and what the object stores spilled to disk and restored during the stage (Ray's store stats, as
`ray memory --stats-only` prints them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
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
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A throwaway cluster on the loopback: no auth token, no usage stats.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
RAY = str(Path(sys.executable).parent / "ray")


def prepare(records: int, out: Path, shard_rows: int) -> None:
    """(Run in a subprocess.) The generated data root, collected, as a sharded dataset at out/raw_corpus."""
    from bench_soak import generate

    from finetune_pipeline import shards
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.settings import load_settings
    from finetune_pipeline.sources import collect_raw_corpus

    root = out / "data"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    generate(root, records)
    for folder in ("domain",):  # what the sample settings (copied by generate) point to
        if (ROOT / "data" / folder).is_dir():
            shutil.copytree(ROOT / "data" / folder, root / folder, dirs_exist_ok=True)
    settings = load_settings(root)
    raw = collect_raw_corpus(root, settings, cache_dir=DataRoot(root).parse_cache).kept
    manifest = shards.write_dataset(raw, out / "raw_corpus", shard_rows=shard_rows)
    print(f"prepared {manifest.rows:,} records in {len(manifest.shards)} shards in "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", *args, "--block", "--disable-usage-stats"], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **RAY_ENV})


def _alive_nodes() -> int:
    import ray

    return sum(n["Alive"] for n in ray.nodes())


@contextlib.contextmanager
def local_cluster(workers: int, name: str, store_mib: int = 1024):
    """A head with no CPUs and `workers` one-CPU `ray start` worker nodes on this machine, for the length of the
    block: yields the address; this process and its children take `RAY_ENV`; every node is killed at the end."""
    os.environ.update(RAY_ENV)
    temp = Path("/tmp") / f"ray-{name}-{os.getpid()}"  # short: Ray's socket paths must stay short
    temp.mkdir(parents=True, exist_ok=True)
    address, nodes = start_cluster(workers, store_mib, temp)
    try:
        yield address
    finally:
        stop_cluster(nodes, temp)


def path_arguments(parser) -> None:
    """The arguments `run_path` gives a benchmark's child process (hidden), and the cluster's size."""
    parser.add_argument("--ray-workers", type=int, default=2, help="one-CPU worker nodes for the path ray")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)


def parse_or_run_child(parser, child) -> argparse.Namespace | None:
    """The command line of a benchmark that `run_path` runs a path of (`path_arguments` added to `parser`): parsed;
    in the child process (`--child PATH`) `child(args)` is run and None returned, the process's work being done."""
    path_arguments(parser)
    args = parser.parse_args()
    if args.child:
        child(args)
        return None
    return args


def run_path(script: str, path: str, argv: list[str], workers: int, name: str) -> dict:
    """`script ARGV --child PATH` in a process of its own (its peak memory its own), on a `local_cluster` of
    `workers` nodes for the path "ray" (`--address` added): the last JSON line it prints. A failing child's
    stderr is printed and its exit status raised (SystemExit)."""
    with contextlib.ExitStack() as stack:
        extra = ["--address", stack.enter_context(local_cluster(workers, name))] if path == "ray" else []
        done = subprocess.run([sys.executable, script, *argv, "--child", path, *extra], capture_output=True,
                              text=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(done.returncode)
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_cluster(workers: int, store_mib: int, temp: Path) -> tuple[str, list[subprocess.Popen]]:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--object-store-memory", str(store_mib * 2**20)]
    nodes = [_ray_start(["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false",
                         "--temp-dir", str(temp), *common], temp / "head.log")]
    _wait(lambda: subprocess.run([RAY, "status", "--address", address], capture_output=True,
                                 env={**os.environ, **RAY_ENV}).returncode == 0, "head", temp / "head.log")
    for i in range(workers):  # one at a time: two raylets starting together on one machine raced for a socket
        nodes.append(_ray_start(["--address", address, "--num-cpus", "1", *common], temp / f"worker{i}.log"))
        _wait(lambda: _status_nodes(address) >= i + 2, f"worker node {i}", temp / f"worker{i}.log")
    return address, nodes


def stop_cluster(nodes: list[subprocess.Popen], temp: Path) -> None:
    """Disconnect, kill every node's process group and remove the cluster's temp folder."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for node in nodes:
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(temp, ignore_errors=True)


def _status_nodes(address: str) -> int:
    done = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True,
                          env={**os.environ, **RAY_ENV})
    return done.stdout.count("node_") if done.returncode == 0 else 0


def _wait(ready, what: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(1)
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s:\n{log.read_text()[-2000:]}")


class Sampler:
    """Peak RSS of this process (every 20 ms) and of the worker nodes' process groups summed (every 0.5 s)."""

    def __init__(self, groups: list[int]):
        self.groups = set(groups)

    def __enter__(self):
        self._proc, self._stop = psutil.Process(), threading.Event()
        self.step_peak, self.workers_peak, self.step_shmem_at_peak = 0, 0, 0
        self._threads = [threading.Thread(target=self._step, daemon=True),
                         threading.Thread(target=self._workers, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def _step(self):
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss
            if rss > self.step_peak:  # with what of it is shared memory (pages of the object store it read)
                self.step_peak, self.step_shmem_at_peak = rss, _status_kib("RssShmem") * 1024
            time.sleep(0.02)

    def _workers(self):
        while not self._stop.is_set():
            total = 0
            for proc in psutil.process_iter(["pid"]):
                try:
                    if os.getpgid(proc.pid) in self.groups:
                        total += proc.memory_info().rss
                except (psutil.Error, ProcessLookupError):
                    continue
            self.workers_peak = max(self.workers_peak, total)
            self._stop.wait(0.5)

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.step_peak = max(self.step_peak, self._proc.memory_info().rss)


def peak_mib() -> float:
    """This process's peak resident memory in MiB (VmHWM): what the benchmarks report as a step's peak."""
    return _status_kib("VmHWM") / 1024


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmHWM: this process's peak RSS since it started or exec'd; RssShmem:
    the shared-memory part of its RSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def store_stats(address: str) -> dict:
    """Spilled and restored bytes and objects of the cluster's object stores, totals since they started."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    stats = get_memory_info_reply(get_state_from_address(address)).store_stats
    return {"spilled_bytes": stats.spilled_bytes_total, "spilled_objects": stats.spilled_objects_total,
            "restored_bytes": stats.restored_bytes_total}


def document_key(batch):
    """The cleaning stage's grouping: a PDF's or Word file's pages together, any other record alone."""
    import polars as pl

    from finetune_pipeline.cleaning import noise

    paged = pl.col("source_type").is_in(list(noise.PAGED_SOURCE_TYPES))
    return batch.with_columns(pl.when(paged).then(pl.col("source_uri")).otherwise(pl.col("record_id"))
                              .alias("_document"))


def kept_rows(batch):
    import polars as pl

    return batch.filter(pl.col("_reason").is_null() & pl.col("_erased_by").is_null())


def _dedup(root: Path, out: Path, overrides: dict):
    """The dedup stage on `root`'s stored cleaned_corpus into `out`/kept and `out`/rejects."""
    from finetune_pipeline import shards
    from finetune_pipeline.dedup.sharded import applies
    from finetune_pipeline.settings import load_settings
    from finetune_pipeline.streaming import deduplicate_dataset

    settings = load_settings(root, overrides=overrides)
    if not applies(settings):
        raise SystemExit(f"{root}: its settings do not take the sharded dedup path (classification, no domain "
                         "filter, no semantic dedup)")
    for name in ("kept", "rejects"):
        shutil.rmtree(out / name, ignore_errors=True)
    source = shards.open_dataset(root / ".pipeline" / "assets" / "cleaned_corpus")
    with shards.DatasetWriter(out / "kept") as kept, shards.DatasetWriter(out / "rejects") as rejected:
        stats = deduplicate_dataset(source, settings, kept, rejected)
    return source, stats


def local_dedup(root: Path, out: Path) -> int:
    """The local backend's run of `_dedup`, in its own process: prints its wall time and peak RSS as JSON (VmHWM,
    which starts again at exec: `getrusage`'s maxrss would carry the RSS of the parent it was forked from)."""
    started = time.perf_counter()
    source, stats = _dedup(root, out, {"execution": {"backend": "local"}})
    print(json.dumps({"wall_s": time.perf_counter() - started, "records_in": source.rows,
                      "peak_rss_mib": _status_kib("VmHWM") / 1024,
                      "near_duplicates": stats.near_duplicates, "exact_duplicates": stats.exact_duplicates}))
    return 0


def dedup_stage(args) -> int:
    from finetune_pipeline import execution, shards
    from finetune_pipeline.settings import ExecutionSettings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(RAY_ENV)
    temp = Path(tempfile.mkdtemp(prefix="rayb", dir="/tmp"))
    address, nodes = start_cluster(args.workers, args.store_mib, temp)
    try:
        overrides = {"execution": {"backend": "ray", "ray_address": address}}
        execution.connect(ExecutionSettings(backend="ray", ray_address=address))
        _wait(lambda: _alive_nodes() == args.workers + 1, "worker nodes", temp / "worker0.log")
        baseline = psutil.Process().memory_info().rss
        before = store_stats(address)
        with Sampler([n.pid for n in nodes[1:]]) as sampler:
            started = time.perf_counter()
            source, stats = _dedup(args.dedup_stage, out / "ray", overrides)
            seconds = time.perf_counter() - started
        after = store_stats(address)
    finally:
        stop_cluster(nodes, temp)
    done = subprocess.run([sys.executable, __file__, "--local-dedup", str(args.dedup_stage), str(out / "local")],
                          check=True, capture_output=True, text=True)
    local = json.loads(done.stdout.strip().splitlines()[-1])
    same = all(shards.read_manifest(out / "ray" / name).digest == shards.read_manifest(out / "local" / name).digest
               for name in ("kept", "rejects"))
    cpu = platform.processor() or platform.machine()
    print(f"{platform.node()} · {cpu} · {psutil.cpu_count()} cores · {psutil.virtual_memory().total / 2**30:.0f} GiB"
          f" · {source.rows:,} records in {len(source.manifest.shards)} shards · exact {stats.exact_duplicates:,},"
          f" near {stats.near_duplicates:,} duplicates · step RSS after connecting {baseline / 2**20:,.0f} MiB")
    print("| backend | wall s | records/s | step peak RSS MiB | of it shared (object store pages) MiB "
          "| worker nodes peak RSS MiB | spilled MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| ray (head + {args.workers} worker nodes, 1 CPU each) | {seconds:.1f} | {source.rows / seconds:,.0f} | "
          f"{sampler.step_peak / 2**20:,.0f} | {sampler.step_shmem_at_peak / 2**20:,.0f} | "
          f"{sampler.workers_peak / 2**20:,.0f} | {(after['spilled_bytes'] - before['spilled_bytes']) / 2**20:,.0f} |")
    print(f"| local (one process) | {local['wall_s']:.1f} | {local['records_in'] / local['wall_s']:,.0f} | "
          f"{local['peak_rss_mib']:,.0f} | - | - | - |")
    print("kept rows and rejects: " + ("the same on both backends" if same else "DIFFER between the backends"))
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", default="/tmp/raybench")
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (one CPU each)")
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1024, help="execution.batch_size")
    parser.add_argument("--store-mib", type=int, default=1024, help="object store per node, MiB")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--minhash-only", action="store_true",
                        help="only the MinHash stage, on --out's cleaned_kept dataset from an earlier run")
    parser.add_argument("--cleaning-stage-only", action="store_true",
                        help="only the cleaning stage as the cleaned_corpus asset runs it on Ray "
                             "(streaming.clean_dataset_on_ray: workers read, clean and write their batch's shards), "
                             "with a cold and then a warm cleaning cache")
    parser.add_argument("--dedup-stage", type=Path, metavar="ROOT",
                        help="only the dedup stage as the deduplicated_corpus asset runs it, on ROOT's stored "
                             "cleaned_corpus: on Ray, then locally in a subprocess, with the outputs compared")
    parser.add_argument("--local-dedup", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.local_dedup:
        return local_dedup(Path(args.local_dedup[0]), Path(args.local_dedup[1]))
    if args.dedup_stage:
        return dedup_stage(args)
    if args.prepare_only:
        prepare(args.records, out, args.shard_rows)
        return 0

    out.mkdir(parents=True, exist_ok=True)
    if not args.minhash_only and not (args.cleaning_stage_only and (out / "raw_corpus" / "manifest.json").exists()):
        subprocess.run([sys.executable, __file__, "--prepare-only", "--records", str(args.records), "--out",
                        str(out), "--shard-rows", str(args.shard_rows)], check=True)

    os.environ.update(RAY_ENV)
    import ray

    from finetune_pipeline import execution, shards
    from finetune_pipeline.cleaning.stage import clean_documents
    from finetune_pipeline.dedup import minhash
    from finetune_pipeline.settings import load_settings
    from finetune_pipeline.streaming import clean_dataset_on_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # document_key, kept_rows
    temp = Path(tempfile.mkdtemp(prefix="rayb", dir="/tmp"))
    address, nodes = start_cluster(args.workers, args.store_mib, temp)
    try:
        settings = load_settings(out / "data", overrides={
            "privacy": {"detector": "patterns"},
            "execution": {"backend": "ray", "ray_address": address, "batch_size": args.batch_size}})
        execution.connect(settings.execution)
        _wait(lambda: _alive_nodes() == args.workers + 1, "worker nodes", temp / "worker0.log")
        baseline = psutil.Process().memory_info().rss
        raw = shards.open_dataset(out / "raw_corpus")
        rows = []

        def stage(name: str, rows_in: int, run):
            before = store_stats(address)
            with Sampler([n.pid for n in nodes[1:]]) as sampler:
                started = time.perf_counter()
                result, rows_out = run()
                seconds = time.perf_counter() - started
            after = store_stats(address)
            rows.append({"stage": name, "records_in": rows_in, "records_out": rows_out, "wall_s": seconds,
                         "records_per_s": rows_in / seconds, "step_peak_rss_mib": sampler.step_peak / 2**20,
                         "workers_peak_rss_mib": sampler.workers_peak / 2**20,
                         **{k: after[k] - before[k] for k in after}})
            print(json.dumps(rows[-1]), flush=True)
            return result

        if args.minhash_only:  # an earlier run's kept rows
            raw = kept = shards.open_dataset(out / "cleaned_kept")
        elif args.cleaning_stage_only:  # the pipeline's cleaning stage as the asset runs it on Ray
            for name in ("stage_kept", "stage_rejects"):
                shutil.rmtree(out / name, ignore_errors=True)
            (out / "stage_cache.parquet").unlink(missing_ok=True)
            for attempt in ("cold cache", "warm cache"):
                stage(f"cleaning stage, {attempt} (clean_dataset_on_ray, patterns)", raw.rows, lambda: (
                    clean_dataset_on_ray(raw, settings, [], str(out / "stage_kept"), str(out / "stage_rejects"),
                                         cache_file=out / "stage_cache.parquet"),
                    shards.read_manifest(out / "stage_kept").rows))
        else:
            cleaned = stage("cleaned rows (clean_documents, patterns)", raw.rows, lambda: (
                m := execution.map_groups_to_dataset(raw, ["_document"], clean_documents, out / "cleaned_rows",
                                                     settings.execution, prepare=document_key, row_index="_row",
                                                     settings=settings, erasure_requests=[]), m.rows))
            kept = stage("kept rows (filter)", cleaned.rows, lambda: (
                m := execution.map_batches_to_dataset(shards.open_dataset(out / "cleaned_rows"), kept_rows,
                                                      out / "cleaned_kept", settings.execution), m.rows))
        if args.cleaning_stage_only:
            kept = None
        found = None if kept is None else stage("MinHash near duplicates", kept.rows, lambda: (
            d := minhash.near_duplicate_clusters(shards.open_dataset(out / "cleaned_kept"), settings.dedup,
                                                 settings.execution), int((d.root == np.arange(len(d.root))).sum())))
        if found is not None:
            print(f"near-duplicate pairs verified: {found.verified_pairs:,}; candidates {found.candidate_pairs:,}")

        cpu = platform.processor() or platform.machine()
        print(f"\n{platform.node()} · {cpu} · {psutil.cpu_count()} cores · "
              f"{psutil.virtual_memory().total / 2**30:.0f} GiB · head (0 CPUs) + {args.workers} worker nodes "
              f"(1 CPU, {args.store_mib} MiB object store each) · {raw.rows:,} records in "
              f"{len(raw.manifest.shards)} shards · step process RSS after connecting {baseline / 2**20:,.0f} MiB")
        print("| stage | records in | out | wall s | records/s | step peak RSS MiB | worker nodes peak RSS MiB "
              "| spilled MiB (objects) | restored MiB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['stage']} | {r['records_in']:,} | {r['records_out']:,} | {r['wall_s']:.1f} | "
                  f"{r['records_per_s']:,.0f} | {r['step_peak_rss_mib']:,.0f} | {r['workers_peak_rss_mib']:,.0f} | "
                  f"{r['spilled_bytes'] / 2**20:,.0f} ({r['spilled_objects']:,}) | "
                  f"{r['restored_bytes'] / 2**20:,.0f} |")
        return 0
    finally:
        stop_cluster(nodes, temp)


if __name__ == "__main__":
    sys.exit(main())
