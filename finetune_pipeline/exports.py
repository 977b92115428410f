"""The exported dataset: the splits as a `datasets.DatasetDict` and JSONL in the task's export form,
written whole (a reader never loads a half-written export), and the data snapshot id naming what they hold.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from finetune_pipeline.atomic import atomic_path
from finetune_pipeline.records import SPLITS
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.tasks import Task, task_named

# Columns exported per record: the corpus columns minus run-specific ones (ingest time), so the same
# inputs give byte-identical exports.
EXPORT_COLUMNS = ["record_id", "text", "label", "label_source", "label_confidence", "label_model", "label_agreement",
                  "split", "group_id",
                  "source_uri", "source_type", "locator", "content_sha256", "augmented_from", "augmentation",
                  "augmentation_model", "category", "prompt", "response", "messages", "prompt_messages",
                  "completion"]


EXPORT_BATCH_ROWS = 50_000  # rows of a split read, converted and written at a time
DATA_FILE = "data-00000-of-00001.arrow"  # the one Arrow file of an exported split (`datasets`' own name)


def export_splits(splits: pl.DataFrame | pl.LazyFrame | ShardedDataset, target: Path, task: Task | None = None) -> Path:
    """`target` (exports/splits/): a `datasets.DatasetDict` (load_from_disk) plus `<split>.jsonl` files, in
    the task's export form (instruction records also carry `messages`, and `prompt_messages` with
    `completion`: see `InstructionTask.export_form`), each split's rows in record id order.

    Written a batch of `EXPORT_BATCH_ROWS` rows at a time. `splits` may be a frame, a lazy frame (one split
    read at a time), or a sharded dataset in split, record id order (dataset_splits' order: read a shard at a
    time, so no split is held whole; in another order, one split at a time). The batches are the same
    whatever `splits` is, so the files are too."""
    from datasets import config
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one bar per shard and split drowns the run log

    task = task or task_named(None)
    head = splits.read_rows(0, 1) if isinstance(splits, ShardedDataset) else splits.lazy().head(1).collect()
    form = task.export_form(head)  # the export's columns and types, for an empty split too
    columns = [c for c in task.export_columns() if c in form.columns]
    in_order = isinstance(splits, ShardedDataset) and _in_split_order(splits)
    with atomic_path(Path(target)) as tmp:
        # What `DatasetDict.save_to_disk` writes (its `dataset_dict.json`, then each split's `save_to_disk`), one
        # split at a time: a DatasetDict holds every split at once.
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / config.DATASETDICT_JSON_FILENAME).write_text(json.dumps({"splits": list(SPLITS)}), encoding="utf-8")
        for name in SPLITS:
            parts = _split_parts_in_order(splits, name) if in_order else _split_parts(splits, name)
            batches = (task.export_form(batch).select(columns) for batch in _rebatched(parts, EXPORT_BATCH_ROWS))
            _write_split(batches, form.clear().select(columns), tmp, name)
    return Path(target)


def _in_split_order(dataset: ShardedDataset) -> bool:
    """Whether each split's rows come in record id order through the dataset (as dataset_splits writes them:
    by split, then record id), read two columns a shard at a time."""
    last: dict[str, str] = {}
    for shard in dataset.iter_shards(columns=["split", "record_id"]):
        for (name,), part in shard.group_by("split", maintain_order=True):
            ids = part["record_id"]
            if not ids.is_sorted() or (name in last and ids[0] < last[name]):
                return False
            last[name] = ids[-1]
    return True


def _split_parts_in_order(dataset: ShardedDataset, name: str) -> Iterator[pl.DataFrame]:
    for shard in dataset.iter_shards():
        part = shard.filter(pl.col("split") == name)
        if part.height:
            yield part


def _split_parts(splits, name: str) -> Iterator[pl.DataFrame]:
    source = splits.scan() if isinstance(splits, ShardedDataset) else splits.lazy()
    yield source.filter(pl.col("split") == name).collect().sort("record_id")


def _rebatched(parts: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """The rows of `parts`, in order, in frames of exactly `rows` rows (the last one fewer)."""
    pending, held = [], 0
    for part in parts:
        pending.append(part)
        held += part.height
        while held >= rows:
            whole = pl.concat(pending, how="vertical_relaxed") if len(pending) > 1 else pending[0]
            yield whole.head(rows)
            pending, held = [whole.slice(rows)], whole.height - rows
    if held:
        yield pl.concat(pending, how="vertical_relaxed") if len(pending) > 1 else pending[0]


def _write_split(batches: Iterator[pl.DataFrame], empty: pl.DataFrame, tmp: Path, name: str) -> None:
    """`<name>.jsonl` and the `datasets` folder `<name>/` from the split's batches: the JSONL and the Arrow file
    appended a batch at a time, the fingerprint (a SHA-256 of the Arrow IPC stream of the batches) written
    beside them as `Dataset.save_to_disk` would, and one Arrow file also for a split of no rows (which
    `datasets` 5.2 leaves out, so that `load_from_disk` of the export fails with IndexError instead of giving
    an empty split)."""
    import pyarrow as pa
    from datasets import Dataset, Features, config
    from datasets.arrow_writer import ArrowWriter

    folder, data = tmp / name, tmp / f".{name}.arrow"
    sink = _Hash()
    writer = stream = schema = None
    with open(tmp / f"{name}.jsonl", "wb") as jsonl:
        for batch in itertools.chain(batches, [empty]):
            if writer is not None and not batch.height:
                continue  # the empty frame only stands in for a split without rows
            batch.write_ndjson(jsonl)
            # taken into buffers of its own (Arrow's `take`): a slice's validity bitmap carries the bits of the rows
            # after it, and a null string the bytes a computation left behind it, into the file; so the same rows
            # would not give the same bytes from every path
            table = batch.to_arrow()
            table = table.take(pa.array(range(table.num_rows), pa.int64()))
            if writer is None:
                schema = table.schema
                writer = ArrowWriter(features=Features.from_arrow_schema(schema), path=str(data))
                stream = pa.ipc.new_stream(sink, schema)
            elif table.schema != schema:
                table = table.cast(schema)  # a batch whose nulls polars typed otherwise
            writer.write_table(table)
            stream.write_table(table, max_chunksize=65_536)
            del table, batch
    writer.finalize()
    writer.close()
    stream.close()
    # the folder `save_to_disk` writes, its Arrow file ours: the dataset saved without rows, then its file
    Dataset(schema.empty_table(), fingerprint=sink.sha.hexdigest()[:16]).save_to_disk(str(folder))
    data.rename(folder / DATA_FILE)
    state_file = folder / config.DATASET_STATE_JSON_FILENAME
    state = json.loads(state_file.read_text(encoding="utf-8"))
    state["_data_files"] = [{"filename": DATA_FILE}]
    state_file.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")


class _Hash:
    """A write-only file that hashes what is written to it (SHA-256)."""

    closed = False

    def __init__(self):
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return len(data)

    def flush(self) -> None:
        pass


def published_columns(folder: Path, columns: tuple[str, ...] | list[str]) -> pl.DataFrame:
    """`columns` (those present) of every split of the export in `folder` (exports/splits/), read from each
    split's Arrow file (an IPC stream, by polars' reader) for those columns only, so the texts are never parsed:
    a published export of 920k records in 0.15 s and 177 MiB (its JSONL: 1.9 s and 557 MiB, docs/benchmarks.md).
    An export without its Arrow file (a folder written by hand) is read from its JSONL, those columns only.
    Empty before the first publish."""
    import pyarrow as pa

    frames = []
    for name in SPLITS:
        arrow, jsonl = Path(folder) / name / DATA_FILE, Path(folder) / f"{name}.jsonl"
        if arrow.exists():
            with pa.memory_map(str(arrow)) as source:
                names = pa.ipc.open_stream(source).schema.names
            wanted = [c for c in names if c in columns]
            if wanted:
                frames.append(pl.read_ipc_stream(arrow, columns=wanted))
        elif jsonl.exists() and jsonl.stat().st_size:
            scan = pl.scan_ndjson(jsonl, infer_schema_length=None)
            frames.append(scan.select([c for c in scan.collect_schema().names() if c in columns]).collect())
    frames = [frame for frame in frames if frame.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def content_digest(splits: pl.DataFrame | pl.LazyFrame) -> str:
    """A short hash of what the splits contain (ids, texts, labels, splits): the data snapshot id. A lazy frame
    (a sharded dataset's scan) is read for those four columns only."""
    rows = splits.lazy().select("record_id", "content_sha256", "label", "split").sort("record_id").collect().write_csv()
    return hashlib.sha256(rows.encode()).hexdigest()[:16]


def jsonl_rows(path: Path) -> int:
    """The number of rows (lines) of an exported JSONL file, read a block at a time."""
    with open(path, "rb") as src:
        return sum(block.count(b"\n") for block in iter(lambda: src.read(1 << 20), b""))


EXPORTED_TEXTS_SCHEMA = {"split": pl.String, "record_id": pl.String, "field": pl.String, "text": pl.String}


def exported_texts(target: Path, task: Task | None = None) -> pl.DataFrame:
    """`split, record_id, field, text`: every text written to the `<split>.jsonl` files under `target`, one
    row per column or conversation turn, as the cleaning stage saw them (`Task.export_texts`: e.g. a
    conversation's `text` is left out, it is its turns, rendered), and every record's `source_uri` and
    `locator` (a file name or a database id can hold personal data: cleaning redacts it there too). Ids and
    hashes are left out. `task`: classification when None."""
    parts = list(iter_exported_texts(target, task))
    return pl.concat(parts) if parts else pl.DataFrame(schema=EXPORTED_TEXTS_SCHEMA)


def iter_exported_texts(target: Path, task: Task | None = None, rows: int = 20_000) -> Iterator[pl.DataFrame]:
    """`exported_texts` a part at a time: the texts of up to `rows` exported records per frame (a record's
    texts always in one part), the files read line by line."""
    task = task or task_named(None)
    for name in SPLITS:
        path = Path(target) / f"{name}.jsonl"
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as lines:
            while chunk := list(itertools.islice(lines, rows)):
                texts = []
                for line in chunk:
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    record = {"split": name, "record_id": row.get("record_id")}
                    texts += [{**record, "field": field, "text": text} for field, text in task.export_texts(row)]
                yield pl.DataFrame(texts, schema=EXPORTED_TEXTS_SCHEMA)
