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


def export_splits(splits: pl.DataFrame | pl.LazyFrame, target: Path, task: Task | None = None) -> Path:
    """`target` (exports/splits/): a `datasets.DatasetDict` (load_from_disk) plus `<split>.jsonl` files, in
    the task's export form (instruction records also carry `messages`, and `prompt_messages` with
    `completion`: see `InstructionTask.export_form`). `splits` may be lazy (a sharded dataset's scan): one
    split is read and written at a time."""
    from datasets import Dataset, config
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one bar per shard and split drowns the run log

    task = task or task_named(None)
    source = splits.lazy()
    form = task.export_form(source.head(1).collect())  # the export's columns and types, for an empty split too
    columns = [c for c in task.export_columns() if c in form.columns]
    with atomic_path(Path(target)) as tmp:
        # What `DatasetDict.save_to_disk` writes (its `dataset_dict.json`, then each split's `save_to_disk`), one
        # split at a time: a DatasetDict holds every split at once.
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / config.DATASETDICT_JSON_FILENAME).write_text(json.dumps({"splits": list(SPLITS)}), encoding="utf-8")
        for name in SPLITS:
            part = task.export_form(source.filter(pl.col("split") == name).collect())
            part = (part if part.height else form.clear()).select(columns).sort("record_id")
            part.write_ndjson(tmp / f"{name}.jsonl")
            table = part.to_arrow()
            del part
            # the fingerprint given: `datasets` would otherwise hash the table by serializing it whole (2.4 GiB
            # more at 1M records)
            _save_split(Dataset(table, fingerprint=table_fingerprint(table)), tmp / name)
            del table
    return Path(target)


def _save_split(dataset, folder: Path) -> None:
    """`dataset.save_to_disk(folder)`; for a split without rows also its one Arrow file of no rows, which
    `datasets` (5.2) leaves out, so that `load_from_disk` of the export fails (IndexError) instead of giving
    an empty split."""
    from datasets import config
    from datasets.arrow_writer import ArrowWriter

    dataset.save_to_disk(str(folder))
    if dataset.num_rows:
        return
    name = "data-00000-of-00001.arrow"
    with ArrowWriter(features=dataset.features, path=str(folder / name)) as writer:
        writer.write_table(dataset.data.table)
        writer.finalize()
    state_file = folder / config.DATASET_STATE_JSON_FILENAME
    state = json.loads(state_file.read_text(encoding="utf-8"))
    state["_data_files"] = [{"filename": name}]
    state_file.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")


def table_fingerprint(table) -> str:
    """A `datasets` fingerprint of an Arrow table from its content: the SHA-256 of its Arrow IPC stream,
    written batch by batch into the hash (no copy of the table)."""
    import pyarrow as pa

    class _Hash:
        closed = False

        def __init__(self):
            self.sha = hashlib.sha256()

        def write(self, data) -> int:
            self.sha.update(data)
            return len(data)

        def flush(self) -> None:
            pass

    sink = _Hash()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65_536)
    return sink.sha.hexdigest()[:16]


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
