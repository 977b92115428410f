r"""What reading the last published split costs the `dataset_splits` asset's drift warning and stability
metadata: its record columns (`defs/splits.py` RECORD_COLUMNS) read from the export's Arrow files batch by batch
(`exports.published_columns`, now) against a scan of its JSONL files for those columns (before), each in a fresh
process: peak resident memory (VmHWM, read as the read ends; the RSS after the imports beside it) and wall
time, and whether the two give the same rows.

  .venv/bin/python scripts/bench_published_read.py --dataset /tmp/s12/kept1m --out /tmp/s12/published

The export is written once under --out from a sharded corpus (any dataset with `record_id`, `text`, `label`):
each record given a split by a hash of its id (80/10/10), then `exports.export_splits` (the export dataset_splits
stages and publishes). Prints one JSON line per reader.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ray_cluster import peak_mib  # noqa: E402


def _rss_mib() -> float:
    return next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmRSS")) / 1024


def child(how: str, export: Path) -> None:
    import polars as pl

    from finetune_pipeline import exports
    from finetune_pipeline.defs.splits import RECORD_COLUMNS

    before = _rss_mib()
    start = time.perf_counter()
    if how == "arrow":
        frame = exports.published_columns(export, RECORD_COLUMNS)
    else:  # the code before: each split's JSONL scanned (schema inferred over the whole file), the columns selected
        frames = []
        for name in ("train", "validation", "test"):
            scan = pl.scan_ndjson(export / f"{name}.jsonl", infer_schema_length=None)
            frames.append(scan.select([c for c in scan.collect_schema().names() if c in RECORD_COLUMNS]).collect())
        frame = pl.concat(frames, how="diagonal_relaxed")
    wall, peak = time.perf_counter() - start, peak_mib()
    frame.select(sorted(frame.columns)).sort("record_id").write_parquet(export.parent / f"read-{how}.parquet")
    print(json.dumps({"reader": how, "rows": frame.height, "columns": sorted(frame.columns),
                      "wall_s": round(wall, 2), "rss_before_mib": round(before), "peak_mib": round(peak),
                      "frame_mib": round(frame.estimated_size() / 2**20)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="a sharded corpus to export (not needed once --out holds the export)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    export = out / "splits"
    if args.child:
        child(args.child, export)
        return 0
    if not (export / "train.jsonl").exists():
        import polars as pl

        from finetune_pipeline import exports, shards

        hashed = pl.col("record_id").hash(seed=7) % 10
        splits = shards.open_dataset(args.dataset).scan().with_columns(
            pl.when(hashed < 8).then(pl.lit("train")).when(hashed < 9).then(pl.lit("validation"))
            .otherwise(pl.lit("test")).alias("split"))
        start = time.perf_counter()
        exports.export_splits(splits, export)
        print(f"export written in {time.perf_counter() - start:.0f} s", flush=True)
    for how in ("jsonl", "arrow"):
        done = subprocess.run([sys.executable, __file__, "--out", str(out), "--child", how], capture_output=True,
                              text=True, check=True)
        print(done.stdout.strip().splitlines()[-1], flush=True)
    import polars as pl

    same = pl.read_parquet(out / "read-jsonl.parquet").equals(pl.read_parquet(out / "read-arrow.parquet"))
    print(json.dumps({"same_rows": same}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
