r"""The split assignment on the streaming path (`streaming.split_assignment_dataset`: the record columns in
memory, the texts read shard by shard by the contamination looks), on a sharded corpus with labels: its peak
resident memory (VmHWM of this process), wall time and answer.

  .venv/bin/python scripts/bench_split_assignment.py --dataset /tmp/s12/dom1000000/sharded/kept
  .venv/bin/python scripts/bench_split_assignment.py --dataset /tmp/s13/aug1m/labeled \
      --look /tmp/s13/aug1m/assignment.parquet

`--look`: the contamination look alone, over the rows of a stored assignment (scripts/bench_augmentation.py
--prepare writes one). The corpus is any sharded dataset with `record_id`, `text` and `label` (and `group_id`); a
deduplicated corpus
of scripts/bench_domain_sharded.py (its `<out>/sharded/kept`) is one: the soak generator's tickets after dedup,
their labels those the generator gave. The settings are the defaults (`--settings` adds YAML overrides).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ray_cluster import peak_mib  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a sharded dataset folder (its manifest inside)")
    parser.add_argument("--settings", default="", help="YAML overrides of the default settings")
    parser.add_argument("--look", type=Path, metavar="ASSIGNMENT",
                        help="only the contamination look (`splits.cross_split_near_duplicates`, as the blocking "
                             "check asks it) over the rows of this stored assignment (a Parquet file of record_id, "
                             "split), the texts read from the dataset's shards")
    args = parser.parse_args()

    from finetune_pipeline import shards, streaming
    from finetune_pipeline.settings import Settings

    import yaml

    settings = Settings.model_validate(yaml.safe_load(args.settings) or {})
    from finetune_pipeline.allocator import set_mmap_threshold

    set_mmap_threshold(settings.execution.malloc_mmap_threshold)  # as the asset's step process does
    dataset = shards.open_dataset(args.dataset)
    if args.look:
        return _look(dataset, args.look, settings)
    start = time.perf_counter()
    assignment, joined = streaming.split_assignment_dataset(dataset, settings)
    wall = time.perf_counter() - start
    peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM")) / 1024
    sizes = dict(assignment.group_by("split").len().iter_rows())
    print(json.dumps({"records": dataset.rows, "wall_s": round(wall, 1), "records_per_s": round(dataset.rows / wall),
                      "peak_mib": round(peak), "splits": sizes, "groups": assignment["group_id"].n_unique(),
                      "clusters_joined_after_split": joined}))
    return 0


def _look(dataset, assignment: Path, settings) -> int:
    import polars as pl

    from finetune_pipeline.splits import TextSource, cross_split_near_duplicates

    ids = dataset.scan().select("record_id").with_row_index("_row").collect().with_columns(pl.col("_row").cast(pl.Int64))
    rows = pl.read_parquet(assignment).select("record_id", "split").join(ids, on="record_id").sort("split", "record_id")
    del ids
    start = time.perf_counter()
    crossing = cross_split_near_duplicates(rows, settings.splits.contamination_threshold, settings.dedup,
                                           texts=TextSource(dataset, settings.execution))
    wall = time.perf_counter() - start
    print(json.dumps({"rows": rows.height, "wall_s": round(wall, 1), "peak_mib": round(peak_mib()),
                      "crossing_clusters": crossing.height,
                      "records_in_crossing_clusters": int(crossing["record_ids"].list.len().sum())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
