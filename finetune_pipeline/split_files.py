"""The exported split files, read without the data stack (polars, pandas, dagster): the trainers' command lines
run on GPU machines that have torch, transformers and peft only."""
from __future__ import annotations

import json
from pathlib import Path

SPLITS = ("train", "validation", "test")


def read_split_rows(splits_dir: str | Path) -> dict[str, list[dict]]:
    """The rows of each exported `<split>.jsonl` that exists in `splits_dir`, per split name."""
    splits = {}
    for name in SPLITS:
        path = Path(splits_dir) / f"{name}.jsonl"
        if path.exists():
            splits[name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return splits
