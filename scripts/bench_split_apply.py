r"""The split applied to an augmented corpus (what the `dataset_splits` asset writes before its export and
checks), locally (`streaming.apply_split_dataset`: the rows streamed through the step process) and on Ray
(the same call on `backend: ray`: `streaming.write_rows_on_ray`, each output shard a Ray task on the workers; the
step reads the record ids only): the step process's peak resident memory (VmHWM), wall time, and the written dataset's content digest,
which must be the same on both paths.

  .venv/bin/python scripts/bench_split_apply.py --dataset /tmp/s13/root1m/.pipeline/assets/augmented_corpus \
      --assignment /tmp/s13/root1m/.pipeline/assets/split_assignment.parquet --out /tmp/split-apply

`--paths local,ray` (default both). The Ray path runs on a cluster this script starts on this machine (a head
with no CPUs and `--ray-workers` one-CPU `ray start` worker nodes, bench_ray_cluster.py's). Each path runs in a
process of its own. Prints one JSON line per path, then whether the digests agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ray_cluster import parse_or_run_child, peak_mib, run_path  # noqa: E402


def child(args) -> None:
    import polars as pl

    from finetune_pipeline import shards, streaming
    from finetune_pipeline.settings import ExecutionSettings

    dataset = shards.open_dataset(args.dataset)
    assignment = pl.read_parquet(args.assignment)
    location = Path(args.out) / args.child
    execution = ExecutionSettings()
    if args.child == "ray":
        from finetune_pipeline.execution import connect

        execution = ExecutionSettings(backend="ray", ray_address=args.address)
        connect(execution)
    ready = time.perf_counter()
    with shards.DatasetWriter(location, shard_rows=args.shard_rows) as writer:
        streaming.apply_split_dataset(dataset, assignment, writer, rows=args.shard_rows, execution=execution)
    manifest = shards.read_manifest(location)
    wall = time.perf_counter() - ready
    print(json.dumps({"path": args.child, "rows": manifest.rows, "shards": len(manifest.shards),
                      "wall_s": round(wall, 1), "records_per_s": round(manifest.rows / wall),
                      "peak_mib": round(peak_mib()), "digest": manifest.digest[:16]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="an augmented corpus (a sharded dataset folder)")
    parser.add_argument("--assignment", required=True, help="its split assignment (Parquet: record_id, split, "
                                                            "group_id)")
    parser.add_argument("--out", required=True, help="where each path writes its dataset")
    parser.add_argument("--paths", default="local,ray")
    parser.add_argument("--shard-rows", type=int, default=50_000)
    args = parse_or_run_child(parser, child)
    if args is None:
        return 0
    print(f"{platform.node()}, {os.cpu_count()} cores", flush=True)
    rows = []

    for path in args.paths.split(","):
        rows.append(run_path(__file__, path, ["--dataset", args.dataset, "--assignment", args.assignment, "--out",
                                              args.out, "--shard-rows", str(args.shard_rows)],
                             args.ray_workers, "split-apply"))
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) > 1:
        print("same dataset on every path (content digest):", len({r["digest"] for r in rows}) == 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
