r"""The augmentation stage on the streaming path (`streaming.augment_dataset`), on a sharded labeled corpus and its
split assignment: the step's peak resident memory (VmHWM of this process), wall time, rows out and the content
digest of what it wrote (the same digest before and after a change: the same rows).

  .venv/bin/python scripts/bench_augmentation.py --prepare /tmp/s12/kept1m --out /tmp/aug1m
  .venv/bin/python scripts/bench_augmentation.py --out /tmp/aug1m

`--prepare DATASET`: once, builds `<out>/labeled` from any sharded dataset with `record_id`, `text` and `label`
(a deduplicated corpus of scripts/bench_domain_sharded.py, `<out>/sharded/kept`, is one: the soak generator's
tickets after dedup): its records with a label, with the columns the labeling stage leaves (`content_sha256` of
the text, `redactions` "[]", `label_source` "column", `label_confidence` 1.0, nulls for the model's and the
annotators' columns); and `<out>/assignment.parquet`, the split assignment of it
on the streaming path (`streaming.split_assignment_dataset`, the defaults; about 13 minutes at 920k records on 2
cores). Then each run of the script (without `--prepare`) augments `<out>/labeled` with the defaults
(oversampling on) into a temporary folder and prints one JSON line. `--settings` adds YAML overrides of the
default settings; `--ray-workers 2` runs it on `backend: ray` (the step's peak is this process's: the nodes are
processes of their own).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ray_cluster import peak_mib  # noqa: E402


def prepare(source: Path, out: Path, settings) -> dict:
    import polars as pl

    from finetune_pipeline import shards, streaming

    dataset = shards.open_dataset(source)
    with shards.DatasetWriter(out / "labeled") as writer:
        for shard in dataset.iter_shards():
            shard = shard.filter(pl.col("label").is_not_null())  # labeling labels or rejects the others
            sha = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in shard["text"].to_list()]
            writer.write(shard.with_columns(pl.Series("content_sha256", sha, dtype=pl.String),
                                            pl.lit("[]").alias("redactions"), pl.lit("column").alias("label_source"),
                                            pl.lit(1.0).alias("label_confidence"),
                                            pl.lit(None, pl.String).alias("label_model"),
                                            pl.lit(None, pl.Float64).alias("label_agreement"),
                                            pl.lit(None, pl.String).alias("element_types")))
    start = time.perf_counter()
    if not (out / "assignment.parquet").exists():  # the split reads none of the columns added above
        assignment, _ = streaming.split_assignment_dataset(shards.open_dataset(out / "labeled"), settings)
        assignment.write_parquet(out / "assignment.parquet")
    return {"prepared": str(out), "records": shards.open_dataset(out / "labeled").rows, "split_s": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the folder with labeled/ and assignment.parquet")
    parser.add_argument("--prepare", type=Path, help="build <out> from this sharded dataset first")
    parser.add_argument("--settings", default="", help="YAML overrides of the default settings")
    parser.add_argument("--output", type=Path, help="keep the augmented dataset here (default: a temporary folder)")
    parser.add_argument("--ray-workers", type=int, default=0,
                        help="run on `backend: ray`, on a cluster started here: a head with no CPUs and this many "
                             "one-CPU `ray start` worker nodes (scripts/bench_ray_cluster.py's); the rows are "
                             "written by Ray tasks (`streaming.write_rows_on_ray`)")
    args = parser.parse_args()

    import polars as pl
    import yaml

    from finetune_pipeline import shards, streaming
    from finetune_pipeline.allocator import set_mmap_threshold
    from finetune_pipeline.settings import Settings

    settings = Settings.model_validate(yaml.safe_load(args.settings) or {})
    set_mmap_threshold(settings.execution.malloc_mmap_threshold)  # as the asset's step process does
    if args.prepare:
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(prepare(args.prepare, args.out, settings)))
        return 0
    dataset = shards.open_dataset(args.out / "labeled")
    assignment = pl.read_parquet(args.out / "assignment.parquet")
    if not args.ray_workers:
        return _run(args, settings, dataset, assignment)
    from bench_ray_cluster import local_cluster

    from finetune_pipeline.execution import connect

    with local_cluster(args.ray_workers, "augment") as address:
        settings = settings.model_copy(update={"execution": settings.execution.model_copy(
            update={"backend": "ray", "ray_address": address})})
        connect(settings.execution)
        return _run(args, settings, dataset, assignment)


def _run(args, settings, dataset, assignment) -> int:
    from finetune_pipeline import shards, streaming

    with tempfile.TemporaryDirectory(prefix="bench-augment-") as folder:
        output = args.output or Path(folder) / "augmented"
        start = time.perf_counter()
        with shards.DatasetWriter(output) as writer:
            stats = streaming.augment_dataset(dataset, settings, writer, assignment=assignment)
        wall = time.perf_counter() - start
        written = shards.read_manifest(output)
    print(json.dumps({"records": dataset.rows, "rows_out": written.rows, "wall_s": round(wall, 1),
                      "peak_mib": round(peak_mib()), "augmented_rows": stats.augmented_rows,
                      "dropped": stats.generated_dropped, "digest": written.digest[:16],
                      "backend": settings.execution.backend}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
