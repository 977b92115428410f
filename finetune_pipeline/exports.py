"""The exported dataset: the splits as a `datasets.DatasetDict` and JSONL in the task's export form,
written whole (a reader never loads a half-written export), and the data snapshot id naming what they hold.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from finetune_pipeline.atomic import atomic_path
from finetune_pipeline.records import SPLITS
from finetune_pipeline.tasks import Task, task_named

# Columns exported per record: the corpus columns minus run-specific ones (ingest time), so the same
# inputs give byte-identical exports.
EXPORT_COLUMNS = ["record_id", "text", "label", "label_source", "label_confidence", "label_model", "label_agreement",
                  "split", "group_id",
                  "source_uri", "source_type", "locator", "content_sha256", "augmented_from", "augmentation",
                  "augmentation_model", "category", "prompt", "response", "messages", "prompt_messages",
                  "completion"]


def export_splits(splits: pl.DataFrame, target: Path, task: Task | None = None) -> Path:
    """`target` (exports/splits/): a `datasets.DatasetDict` (load_from_disk) plus `<split>.jsonl` files, in
    the task's export form (instruction records also carry `messages`, and `prompt_messages` with
    `completion`: see `InstructionTask.export_form`)."""
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one bar per shard and split drowns the run log

    task = task or task_named(None)
    splits = task.export_form(splits)
    columns = [c for c in task.export_columns() if c in splits.columns]
    with atomic_path(Path(target)) as tmp:
        parts = {}
        for name in SPLITS:
            part = splits.filter(pl.col("split") == name).select(columns).sort("record_id")
            parts[name] = Dataset(part.to_arrow())
        DatasetDict(parts).save_to_disk(str(tmp))
        for name in SPLITS:
            splits.filter(pl.col("split") == name).select(columns).sort("record_id").write_ndjson(tmp / f"{name}.jsonl")
    return Path(target)


def content_digest(splits: pl.DataFrame) -> str:
    """A short hash of what the splits contain (ids, texts, labels, splits): the data snapshot id."""
    rows = splits.select("record_id", "content_sha256", "label", "split").sort("record_id").write_csv()
    return hashlib.sha256(rows.encode()).hexdigest()[:16]


def exported_texts(target: Path, task: Task | None = None) -> pl.DataFrame:
    """`split, record_id, field, text`: every text written to the `<split>.jsonl` files under `target`, one
    row per column or conversation turn, as the cleaning stage saw them (`Task.export_texts`: e.g. a
    conversation's `text` is left out, it is its turns, rendered), and every record's `source_uri` and
    `locator` (a file name or a database id can hold personal data: cleaning redacts it there too). Ids and
    hashes are left out. `task`: classification when None."""
    task = task or task_named(None)
    rows = []
    for name in SPLITS:
        path = Path(target) / f"{name}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            record = {"split": name, "record_id": row.get("record_id")}
            rows += [{**record, "field": field, "text": text} for field, text in task.export_texts(row)]
    return pl.DataFrame(rows, schema={"split": pl.String, "record_id": pl.String, "field": pl.String,
                                      "text": pl.String})
