"""The local streaming path (issue 36): each stage reads the previous stage's sharded dataset (shards.py) and
writes its own with `DatasetWriter`s, so one machine handles a corpus larger than its memory. Outputs equal the
in-memory stage functions' (same rows, same order, same values: test_streaming.py holds it).

How each stage streams:
- cleaning (`clean_dataset`): batch by batch, cut only between documents (a PDF's or Word file's pages are
  cleaned together: its repeated headers are found across them), each batch cleaned, kept rows and rejects
  written, statistics combined; the cleaning cache is read per batch (only the batch's units) and rewritten
  as one file at the end. Holds one batch.
- dedup (`deduplicate_dataset`), labeling (`label_dataset`), the split (`split_assignment_dataset`): a
  decision over the whole corpus (exact hash groups, MinHash LSH and connected components, the label set and
  the classifier, the stratified group split) computed on the columns it reads (`scan().select(...)`), then
  the rows streamed through shard by shard with the decision joined (`write_joined`): the columns it does
  not read (`*_PASSENGERS`) never sit in memory whole. Dedup and the split read the text column (near
  copies are found on it); labeling reads only the texts the model or the classifier sees.
- the split applied (`apply_split_dataset`): a small table (record id, source) decides each row's place;
  rows streamed through in that order.
- on Ray, where a stage knows each output row's input row (dedup and labeling of classification data, the
  split applied, augmentation's copies), `write_rows_on_ray`: each output shard joined and written by a Ray task.
- augmentation (`augment_dataset`): originals streamed with the augmentation columns; when a technique is
  on, the label counts and the near-held-out filter need the whole corpus: it is read whole (said here
  and in docs/benchmarks.md).
Library code: no dagster import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from finetune_pipeline.cleaning import noise
from finetune_pipeline.progress import report as report_progress
from finetune_pipeline.records import DATASET_ROW, SPLITS, StageStats
from finetune_pipeline.settings import Settings
from finetune_pipeline.shards import DEFAULT_SHARD_ROWS, DatasetWriter, ShardedDataset, is_local, make_folder, owned

log = logging.getLogger(__name__)

# Columns a stage neither reads nor changes: streamed from the input shards, never held whole.
DEDUP_PASSENGERS = ("redactions", "content_sha256", "label_source", "label_confidence")
ROW = DATASET_ROW
# labeling reads none of these (the text only of the records it labels)
LABELING_PASSENGERS = ("text", "redactions", "quality_flags", "content_sha256", "source_type", "ingested_at",
                       "element_types", "group_id")
# classification augmentation copies these from a source record and changes none of them (`augment.stage._materialize`)
AUGMENT_PASSENGERS = ("source_uri", "source_type", "locator", "ingested_at", "element_types", "quality_flags",
                      "group_id", "label_confidence", "label_model", "label_agreement")
# what a copy (oversampling) takes unchanged from its source record: its text and what cleaning derived from it
COPY_PASSENGERS = ("text", "content_sha256", "redactions")
# the split reads none of these (a `splits.group_column` naming one is read)
SPLIT_PASSENGERS = ("redactions", "quality_flags", "content_sha256", "label_source", "label_confidence",
                    "label_model", "label_agreement", "ingested_at", "locator", "element_types")


def enabled(settings: Settings) -> bool:
    """Whether the stages stream: `execution.streaming` on, with either backend (on Ray each batch's work runs on
    the cluster; the step process holds one batch, as locally)."""
    return bool(getattr(settings.execution, "streaming", True))


def batch_rows(settings: Settings) -> int:
    """Rows per batch and per shard: `execution.shard_rows` where the settings have it."""
    return int(getattr(settings.execution, "shard_rows", None) or DEFAULT_SHARD_ROWS)


# ---- statistics of batches, combined


def combine_stats(first, second, same: frozenset[str] = frozenset()):
    """Two batches' statistics as one: counts summed, dicts merged key by key (values combined), lists
    joined without repeats (warnings), nested dataclasses combined field by field; fields named in `same`
    (figures every batch reports whole, e.g. how many erasure requests there are) taken from `first`."""
    if first is None:
        return second
    if second is None:
        return first
    if dataclasses.is_dataclass(first):
        return type(first)(**{f.name: getattr(first, f.name) if f.name in same
                              else combine_stats(getattr(first, f.name), getattr(second, f.name), same)
                              for f in dataclasses.fields(first)})
    if isinstance(first, bool):
        return first or second
    if isinstance(first, (int, float)):
        return first + second
    if isinstance(first, dict):
        merged = dict(first)
        for key, value in second.items():
            merged[key] = combine_stats(merged[key], value, same) if key in merged else value
        return merged
    if isinstance(first, list):
        return first + [item for item in second if item not in first]
    return first


# ---- cleaning


DOCUMENT_COLUMNS = ["record_id", "source_type", "source_uri"]  # what decides a row's cleaning unit


def document_ranges(dataset: ShardedDataset, rows: int) -> list[tuple[int, int]]:
    """The batches of `document_batches` as row ranges (start, stop) of `dataset`, found by reading only the
    columns that decide a row's document, one shard at a time: the Ray path hands each range to a worker."""
    ranges, start = [], 0
    for batch in document_batches(dataset, rows, DOCUMENT_COLUMNS):
        ranges.append((start, start + batch.height))
        start += batch.height
    return ranges


def _document_key(frame: pl.DataFrame) -> pl.Series:
    """The cleaning unit of each row (as `clean_rows` groups them): a paged document's source, else the record."""
    paged = pl.col("source_type").is_in(list(noise.PAGED_SOURCE_TYPES))
    return frame.select(pl.when(paged).then(pl.lit("document:") + pl.col("source_uri"))
                        .otherwise(pl.lit("record:") + pl.col("record_id"))).to_series()


def document_batches(dataset: ShardedDataset, rows: int, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """`dataset`'s rows in order (only `columns`, when named: they must include DOCUMENT_COLUMNS), in batches of
    about `rows`, cut only between documents: the trailing document of what is read so far waits for the next
    batch. A paged document whose rows are not together (collection writes a file's records together) fails,
    naming it."""
    pending, pending_rows, done = [], 0, set()

    def cut(frame: pl.DataFrame, final: bool) -> tuple[pl.DataFrame | None, pl.DataFrame]:
        keys = _document_key(frame)
        starts = np.flatnonzero(keys.ne_missing(keys.shift(1)).fill_null(True).to_numpy())[1:]  # boundaries
        if final or not len(starts):
            return (frame, frame.clear()) if final else (None, frame)
        before = starts[starts <= rows]
        at = int(before[-1]) if len(before) else int(starts[0])
        return frame.slice(0, at), frame.slice(at)

    def emit(batch: pl.DataFrame) -> pl.DataFrame:
        paged = set(_document_key(batch).filter(batch["source_type"].is_in(list(noise.PAGED_SOURCE_TYPES)))
                    .unique().to_list())
        if paged & done:
            name = sorted(paged & done)[0].removeprefix("document:")
            raise ValueError(f"{dataset.location}: the rows of {name} are not together, so its pages cannot be "
                             "cleaned as one document batch by batch; collection writes a file's records "
                             "together: materialize raw_corpus again (or set execution.streaming: false)")
        done.update(paged)
        return batch

    for shard in dataset.iter_shards(columns):
        pending.append(shard)
        pending_rows += shard.height
        while pending_rows >= rows:
            frame = pl.concat(pending, how="vertical") if len(pending) > 1 else pending[0]
            batch, rest = cut(frame, final=False)
            if batch is None:
                pending = [frame]
                break
            yield emit(batch)
            pending, pending_rows = [rest], rest.height
    frame = pl.concat(pending, how="vertical") if pending else None
    if frame is not None and frame.height:
        yield emit(frame)


class _CacheWriter:
    """The cleaning cache file rewritten batch by batch: a temporary sibling renamed over it at the end."""

    def __init__(self, target: Path):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.target.with_name(f".{self.target.name}.{os.getpid()}.tmp")
        self.writer, self.schema = None, None

    def write(self, frame: pl.DataFrame) -> None:
        if self.schema is None:
            self.schema = frame.schema
        else:
            frame = frame.select(list(self.schema)).cast(dict(self.schema))
        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.tmp), table.schema)
        self.writer.write_table(table)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.close()
        if ok and self.writer is not None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def _clean_batch(batch: pl.DataFrame, settings: Settings, requests: list, cache_file: Path | None):
    """One batch of whole documents cleaned (the cached outcome of unchanged units reused):
    `(CleaningResult, the batch's cache rows or None, CleaningCacheReport)`."""
    from finetune_pipeline.cleaning.cache import KEY, POSITION, CleaningCacheReport, cache_rows, cached_clean_rows
    from finetune_pipeline.cleaning.stage import clean_rows, cleaning_result

    if cache_file is None:
        outcome, cached = clean_rows(batch, settings, requests), None
        report = CleaningCacheReport(rows_cleaned=batch.height, units_cleaned=batch.height)
    else:
        outcome, report = cached_clean_rows(batch, settings, requests, cache_file)
        cached = cache_rows(outcome)
        outcome = outcome.drop(KEY, POSITION)
    return cleaning_result(batch, outcome, settings, requests), cached, report


def _fold_cleaning(stats, report, batch_stats, batch_report):
    """The statistics and cache report so far, with one more batch's."""
    return (combine_stats(stats, batch_stats, same=frozenset({"requests"})), combine_stats(report, batch_report))


def clean_dataset(dataset: ShardedDataset, settings: Settings, requests: list | None, kept: DatasetWriter,
                  rejected: DatasetWriter, cache_file: Path | None = None, rows: int | None = None):
    """`cleaning.cache.cached_clean_corpus` batch by batch: kept rows and rejects written to `kept` and
    `rejected` (not committed here), `(CleaningStats, CleaningCacheReport)` returned. `cache_file` None:
    no cache, every unit cleaned."""
    from finetune_pipeline.cleaning.cache import CleaningCacheReport

    requests = list(requests or [])
    stats, report = None, CleaningCacheReport()
    cache = _CacheWriter(cache_file) if cache_file is not None else None
    batches = document_batches(dataset, rows or batch_rows(settings))
    first = next(batches, None)
    if first is None:  # an empty corpus: one empty batch, for the schema of the outputs
        first = dataset.scan().head(0).collect()
    ok = False
    try:
        for batch in _chain(first, batches):
            result, cached, batch_report = _clean_batch(batch, settings, requests, cache_file)
            if cache is not None:
                cache.write(cached)
            kept.write(result.kept)
            rejected.write(result.rejected)
            stats, report = _fold_cleaning(stats, report, result.stats, batch_report)
        ok = True
    finally:
        if cache is not None:
            cache.close(ok)
    stats.pii_passes = dict(sorted(stats.pii_passes.items()))
    return stats, report


def _clean_range(dataset: ShardedDataset, start: int, stop: int, index: int, settings: Settings, requests: list,
                 cache_file: Path | None, kept_generation: str, rejects_generation: str, cache_parts: Path | None):
    """A Ray task: rows `start`..`stop` of `dataset` (whole documents) read, cleaned and written as shard
    `index` of the kept rows and of the rejects, on the worker; its cache rows to `cache_parts`. Returns the
    shards' descriptions, empty frames of the two schemas, and the batch's statistics: never its rows."""
    from finetune_pipeline.shards import write_shard

    batch = dataset.read_rows(start, stop)
    result, cached, report = _clean_batch(batch, settings, requests, cache_file)
    name = f"part-{index:05d}.parquet"
    kept = write_shard(kept_generation, name, result.kept) if result.kept.height else None
    rejected = write_shard(rejects_generation, name, result.rejected) if result.rejected.height else None
    if cached is not None and cache_parts is not None:
        cache_parts.mkdir(parents=True, exist_ok=True)
        cached.write_parquet(cache_parts / name)
    return kept, rejected, result.kept.clear(), result.rejected.clear(), result.stats, report


def clean_dataset_on_ray(dataset: ShardedDataset, settings: Settings, requests: list | None, kept_location: str,
                         rejects_location: str, cache_file: Path | None = None, rows: int | None = None,
                         progress=None):
    """`clean_dataset` on the Ray cluster, dataset to dataset: this process reads only the columns that cut
    the corpus into batches of whole documents (`document_ranges`); each batch is one Ray task that reads its
    rows from the shards, cleans them (the cache read and written there too) and writes its shard of the kept
    rows and of the rejects. This process gathers the statistics and commits both datasets (manifests last:
    complete or absent). A task whose worker dies is run again by Ray (its shard is written whole again).
    The cache is used when the datasets are on a local file system (the workers share this machine's disk, as
    `ray start` nodes on it do); with datasets at an object-store URL every unit is cleaned. `progress(done,
    total)` is called as batches finish. Returns `(CleaningStats, CleaningCacheReport)` as clean_dataset."""
    import shutil
    import uuid

    import ray

    from finetune_pipeline.cleaning.cache import CleaningCacheReport
    from finetune_pipeline.execution import connect
    from finetune_pipeline.shards import abort_generation, commit_shards, new_generation, write_shard

    connect(settings.execution)
    requests = list(requests or [])
    if cache_file is not None and not is_local(kept_location):
        # the workers of a cluster that reads its shards from object storage may not see the data root's disk
        log.info("cleaning on Ray with datasets at %s: the cleaning cache (on the data root's disk) is not used",
                 kept_location)
        cache_file = None
    # on a worker the batch is cleaned in its own process: no nested cluster, no process pool
    on_worker = settings.model_copy(update={"execution": settings.execution.model_copy(
        update={"backend": "local", "workers": 1})})
    ranges = document_ranges(dataset, rows or batch_rows(settings)) or [(0, 0)]
    generations = new_generation(kept_location), new_generation(rejects_location)
    uncommitted = dict(zip((kept_location, rejects_location), generations))
    for generation in generations:  # made here, not by the tasks: a task still running after a failure
        make_folder(generation)     # finds its generation removed and writes nothing
    cache_parts = None
    if cache_file is not None:
        for left in Path(cache_file).parent.glob(f".{Path(cache_file).name}.parts-*"):
            shutil.rmtree(left, ignore_errors=True)  # of a stage whose step process was killed before merging
        cache_parts = Path(cache_file).parent / f".{Path(cache_file).name}.parts-{uuid.uuid4().hex[:8]}"
        cache_parts.mkdir(parents=True)
    task = ray.remote(num_cpus=1, max_retries=3)(_clean_range)
    source = ray.put(dataset)
    refs = [task.remote(source, start, stop, index, on_worker, requests, cache_file, *generations, cache_parts)
            for index, (start, stop) in enumerate(ranges)]
    pending = list(refs)
    try:
        done = 0
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            done += len(finished)
            ray.get(finished)  # a failed task raises here, at once
            if progress is not None:
                progress(done, len(refs))
        answers = ray.get(refs)
        stats, report = None, CleaningCacheReport()
        kept, rejected = [], []
        for kept_shard, rejected_shard, kept_empty, rejected_empty, batch_stats, batch_report in answers:
            kept += [kept_shard] if kept_shard else []
            rejected += [rejected_shard] if rejected_shard else []
            stats, report = _fold_cleaning(stats, report, batch_stats, batch_report)
        if cache_parts is not None:  # the batches' cache rows in batch order, one part in memory at a time
            cache, ok = _CacheWriter(cache_file), False
            try:
                for part in sorted(cache_parts.glob("part-*.parquet")):
                    cache.write(pl.read_parquet(part))
                ok = True
            finally:
                cache.close(ok)
        # committed last: until here a failure leaves the previous datasets as they were
        for location, generation, written, empty in ((kept_location, generations[0], kept, answers[0][2]),
                                                     (rejects_location, generations[1], rejected, answers[0][3])):
            if not written:  # an empty result is still a typed dataset: one empty shard
                written = [write_shard(generation, "part-00000.parquet", empty)]
            commit_shards(location, generation, written, {k: str(v) for k, v in empty.schema.items()})
            del uncommitted[location]
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        for location, generation in uncommitted.items():
            abort_generation(location, generation)
        raise
    finally:
        if cache_parts is not None:
            shutil.rmtree(cache_parts, ignore_errors=True)
    stats.pii_passes = dict(sorted(stats.pii_passes.items()))
    return stats, report


def _chain(first, rest):
    yield first
    yield from rest


# ---- a decision over the whole corpus, rows streamed through


def decision_frame(dataset: ShardedDataset, passengers: tuple[str, ...]) -> pl.DataFrame:
    """The columns of `dataset` a whole-corpus decision reads: every one but the `passengers`."""
    return dataset.scan().select([c for c in dataset.columns if c not in passengers]).collect()


def texts_where(dataset: ShardedDataset, read: pl.Expr) -> pl.Series:
    """The `text` column of `dataset`, null where `read` is false: read shard by shard, the texts kept in
    buffers of their own (shards.owned), so holding a few texts does not hold every shard's (selecting
    them in one scan held the corpus's text: 345 MiB at 1M records for 9,225 texts)."""
    columns = ["text", *(c for c in read.meta.root_names() if c != "text")]
    rows, texts, offset = [], [], 0
    for shard in dataset.iter_shards(columns):
        picked = owned(shard.with_row_index("_row", offset=offset).filter(read).select("_row", "text"))
        rows.append(picked["_row"])
        texts.append(picked["text"])
        offset += shard.height
    column = pl.repeat(None, offset, dtype=pl.String, eager=True).alias("text")
    return column.scatter(pl.concat(rows), pl.concat(texts)) if rows and sum(map(len, rows)) else column


def _carried(dataset: ShardedDataset, decided: pl.DataFrame, passengers: tuple[str, ...]) -> list[str]:
    """The input columns a joined write takes from the input rows: the `passengers` and those `decided` lacks."""
    return [c for c in dataset.columns if (c in passengers or c not in decided.columns) and c != "record_id"]


def write_joined(dataset: ShardedDataset, decided: pl.DataFrame, writer: DatasetWriter, *,
                 passengers: tuple[str, ...], columns: list[str], key: str | pl.Expr = "record_id",
                 rows: int = DEFAULT_SHARD_ROWS, source_rows: np.ndarray | None = None, execution=None) -> int:
    """Write the rows of `decided` in its order, each with the `passengers` columns (those of `dataset`
    not in `decided`, plus any named that `decided` also has: the input's value wins) of the row of
    `dataset` whose record_id is its `key` (an expression over `decided`, e.g. an augmented row's
    source); `columns`: the output's column order. When the output order follows the input's, one pass
    over the shards; otherwise a window of `rows` output rows at a time, each read from the shards holding its
    rows (`_joined`, as a Ray task does). `source_rows`:
    per row of `decided`, its row in `dataset`, when the caller knows it (no join of the record ids). Returns
    the rows written.

    On `execution.backend: ray`, with `source_rows` known and the writer at a shard's end, the rows are joined
    and written on the workers (`write_rows_on_ray`): this process never reads a shard; the same shards."""
    carried = _carried(dataset, decided, passengers)
    if source_rows is None:
        wanted = decided.select((key if isinstance(key, pl.Expr) else pl.col(key)).alias("record_id")) \
            .with_row_index("_out")
        ids = dataset.scan().select("record_id").collect().with_row_index("_in")
        place = wanted.join(ids, on="record_id", how="left")  # per output row, the input row it takes from
        del ids, wanted
        if place["_in"].null_count():
            missing = place.filter(pl.col("_in").is_null())["record_id"].head(3).to_list()
            raise ValueError(f"{dataset.location}: no input row for output record(s) {', '.join(missing)}")
        need = place.select("_out", "_in").sort("_out")
        del place
    else:
        need = pl.DataFrame({"_out": np.arange(len(source_rows)), "_in": np.asarray(source_rows)},
                            schema={"_out": pl.UInt32, "_in": pl.UInt32})
    order = need["_in"].to_numpy()
    body = decided.drop([c for c in carried if c in decided.columns])
    schema = {c: dataset.schema[c] if c in carried else body.schema[c] for c in columns}
    on_ray = execution if source_rows is not None else None  # the workers read rows by number, not by id
    return write_rows(dataset, [JoinedRows(order, carried, body)], writer, schema, rows=rows, execution=on_ray)


def write_rows(dataset: ShardedDataset, parts: list[JoinedRows], writer: DatasetWriter, schema: dict, *,
               rows: int = DEFAULT_SHARD_ROWS, execution=None) -> int:
    """The rows of `parts`, in order, as columns `schema`: on `execution.backend: ray` (the writer at a shard's
    end) by Ray tasks (`write_rows_on_ray`); here otherwise, a window at a time (`_joined`): a part whose rows
    follow the input's order in one pass, a window per input shard, any other `rows` output rows at a time,
    each window read from the shards holding its rows. Returns the rows written."""
    total = sum(len(part) for part in parts)
    if not total:  # nothing kept: an empty frame with the output's schema, so the dataset has one
        writer.write(pl.DataFrame(schema=schema))
        return 0
    if _on_ray(execution, writer):
        return write_rows_on_ray(dataset, parts, writer, execution, schema)
    for part in parts:
        order = part.source_rows
        if _in_input_order(order):
            cuts = np.unique(np.searchsorted(order, dataset.bounds))
        else:
            cuts = np.unique(np.append(np.arange(0, len(order), rows), len(order)))
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            writer.write(_joined(dataset, part.slice(lo, hi - lo)).select(list(schema)).cast(schema))
    return total


def _output_columns(dataset: ShardedDataset, decided: pl.DataFrame, passengers: tuple[str, ...]) -> list[str]:
    """The in-memory stages' columns, in their order: the input's that the stage kept (a column it dropped, such
    as labeling's `conflict_id`, stays dropped; `passengers` never went through it), then those it added."""
    return [*(c for c in dataset.columns if c in decided.columns or c in passengers),
            *(c for c in decided.columns if c not in dataset.columns)]


def deduplicate_dataset(dataset: ShardedDataset, settings: Settings, kept: DatasetWriter, rejected: DatasetWriter,
                        embedding_cache=None):
    """`dedup.deduplicate` over the columns it reads, the rows then streamed through in its keep order;
    returns `DedupStats`. Raises `DomainFilterRefused` as it does, before anything is written."""
    from finetune_pipeline.dedup import deduplicate
    from finetune_pipeline.dedup.sharded import applies, deduplicate_sharded

    source_rows = None
    if applies(settings):  # the texts read shard by shard, the signatures spilled to disk
        result = deduplicate_sharded(dataset, settings, embedding_cache=embedding_cache)
        source_rows, result.kept = result.kept["row"].to_numpy(), result.kept.drop("row")
        columns = [*dataset.columns, *(c for c in result.kept.columns if c not in dataset.columns)]
        passengers = tuple(c for c in dataset.columns if c not in result.kept.columns)
    else:
        result = deduplicate(decision_frame(dataset, DEDUP_PASSENGERS), settings, embedding_cache=embedding_cache)
        columns, passengers = _output_columns(dataset, result.kept, DEDUP_PASSENGERS), DEDUP_PASSENGERS
    rejected.write(result.rejected)
    write_joined(dataset, result.kept, kept, passengers=passengers, columns=columns, rows=batch_rows(settings),
                 source_rows=source_rows, execution=settings.execution)
    return result.stats


def label_dataset(dataset: ShardedDataset, settings: Settings, kept: DatasetWriter, rejected: DatasetWriter,
                  annotations: pl.DataFrame | None = None, annotation_problems: list[dict] | None = None,
                  embedding_cache=None, labeler=None):
    """`labeling.apply_labels` on the columns labeling reads: the text only of records the classifier trains on or
    people annotated (classification; other kinds read every text); the records the model labels are named by
    their row (`labeling.rows`: their texts embedded shard by shard, on Ray by the workers, never read here but for
    the review queue's few). The rows then streamed through. Returns `(LabelingStats, review_queue)`. `labeler`: as
    `apply_labels`' (None: the built-in zero-shot model or classifier; a labeler of texts reads the texts of the
    records it labels too)."""
    from finetune_pipeline.labeling import apply_labels
    from finetune_pipeline.labeling.annotations import empty_annotations
    from finetune_pipeline.labeling.rows import row_labeler
    from finetune_pipeline.tasks import task_for

    annotations = annotations if annotations is not None else empty_annotations()
    task = task_for(settings)
    classification = task.name == "classification"
    frame = decision_frame(dataset, LABELING_PASSENGERS) if classification else dataset.collect()
    if "text" not in frame.columns:
        annotated = annotations["record_id"].unique().implode()
        sources = list(settings.labeling.classifier_label_sources)
        read = pl.col("label_source").is_in(sources) | pl.col("record_id").is_in(annotated)
        if labeler is not None:  # a labeler of texts: the texts of the records it labels too
            read = read | pl.col("label").is_null()
        frame = frame.hstack([texts_where(dataset, read)]) \
            .select([c for c in dataset.columns if c in frame.columns or c == "text"])
    # each record's row in the dataset rides along (classification: a record is labeled as it is, one row in,
    # one row out), so the rows are written without a join of the record ids, and the model names its records
    # by row
    frame = frame.with_row_index(ROW) if classification else frame
    if classification and labeler is None:
        labeler = row_labeler(dataset, ROW, task, settings.execution, embedding_cache)
    extra = {"labeler": labeler} if labeler is not None else {}
    result = apply_labels(frame, settings, annotations, annotation_problems, embedding_cache=embedding_cache, **extra)
    del frame  # the decision frame, while the rows are written: what the output holds of it stays
    source_rows = result.kept[ROW].to_numpy() if ROW in result.kept.columns else None
    result.kept, result.rejected, result.review_queue = (
        f.drop(ROW, strict=False) for f in (result.kept, result.rejected, result.review_queue))
    rejected.write(result.rejected)
    result.rejected = result.rejected.clear()
    write_joined(dataset, result.kept, kept, passengers=LABELING_PASSENGERS,
                 columns=_output_columns(dataset, result.kept, LABELING_PASSENGERS), rows=batch_rows(settings),
                 source_rows=source_rows, execution=settings.execution)
    return result.stats, result.review_queue


def augment_dataset(dataset: ShardedDataset, settings: Settings, kept: DatasetWriter,
                    assignment: pl.DataFrame | None = None, embedding_cache=None) -> StageStats:
    """`augment.augment_corpus`: the originals streamed shard by shard with the augmentation columns (null),
    then the augmented rows, written after the originals (not a copy of the corpus with them appended); on Ray
    both by the workers (`write_rows`), for classification.
    Classification reads the corpus without the columns augmentation only copies from a source record
    (`AUGMENT_PASSENGERS`), and with copies only (the default, `augment.stage.copies_only`) without the texts
    either: each augmented row takes those from its source's row as it is written, and the near-held-out
    filter reads the texts shard by shard. With paraphrases or synthetic examples on, the texts are read whole
    (the generators' few-shot prompts and candidate filters compare with them); other kinds read every column."""
    from finetune_pipeline.augment.stage import AUGMENT_COLUMNS, AugmentStats, augmented_rows, copies_only
    from finetune_pipeline.tasks import task_for

    cfg = settings.augmentation
    extra, stats, source_rows = None, AugmentStats(), None
    classification = task_for(settings).name == "classification"
    # Copies only (the default): the texts, and what a copy takes from them, stay in the shards; each copy's
    # are written from its source's row, and the near-held-out filter reads them shard by shard.
    passengers = AUGMENT_PASSENGERS + (COPY_PASSENGERS if copies_only(settings) else ())
    if dataset.rows and (cfg.oversample or cfg.paraphrase or cfg.synthetic):
        corpus = decision_frame(dataset, passengers).with_row_index(ROW) if classification else dataset.collect()
        extra, stats = augmented_rows(corpus, settings, embedding_cache=embedding_cache, assignment=assignment,
                                      texts=dataset if "text" not in corpus.columns else None)
        del corpus
        if classification:  # an augmented row is its source record's row, changed: ROW is its source's
            source_rows, extra = extra[ROW].to_numpy(), extra.drop(ROW)
    columns = [*dataset.columns, *(c for c in AUGMENT_COLUMNS if c not in dataset.columns)]
    types = {**dataset.schema, **AUGMENT_COLUMNS}
    # the originals with the augmentation columns (null), then each copy from its source's row; on Ray by the
    # workers, unless the augmented rows are whole rows of their own (other kinds), written here after them
    parts = [JoinedRows(np.arange(dataset.rows), [c for c in dataset.columns if c not in AUGMENT_COLUMNS],
                        added=AUGMENT_COLUMNS)]
    rows_of_their_own = extra is not None and extra.height and source_rows is None
    if extra is not None and extra.height and source_rows is not None:
        parts.append(JoinedRows(source_rows, _carried(dataset, extra, passengers), extra))
    write_rows(dataset, parts, kept, {c: types[c] for c in columns}, rows=batch_rows(settings),
               execution=None if rows_of_their_own else settings.execution)
    if rows_of_their_own:
        kept.write(extra.select(columns))
    return stats


def split_inputs(dataset: ShardedDataset, settings: Settings):
    """What the split reads of the corpus: the columns it decides on, and where it reads the texts
    (`splits.TextSource`): the dataset, shard by shard (the frame then carries each row's `_row`), unless the
    texts are the group column; then they are in the frame."""
    from finetune_pipeline.splits import TextSource

    cfg = settings.splits
    group_column = cfg.group_column if cfg.group_by == "column" else None
    passengers = tuple(c for c in SPLIT_PASSENGERS if c != group_column)
    if "text" in dataset.columns and group_column != "text":
        columns = [c for c in dataset.columns if c not in passengers and c != "text"]
        frame = dataset.scan().select(columns).with_row_index("_row").collect().with_columns(pl.col("_row").cast(pl.Int64))
        return frame, TextSource(dataset, settings.execution)
    return decision_frame(dataset, passengers), TextSource()


def split_assignment_dataset(dataset: ShardedDataset, settings: Settings, check_cache=None
                             ) -> tuple[pl.DataFrame, int]:
    """`splits.split_assignment` of the corpus on the columns it reads (small result: record id, split,
    group), the texts read shard by shard by the contamination looks, never all at once."""
    from finetune_pipeline.splits import split_assignment
    from finetune_pipeline.tasks import task_for

    frame, texts = split_inputs(dataset, settings)
    return split_assignment(frame, settings.splits, settings.dedup, task_for(settings), check_cache=check_cache,
                            texts=texts)


def _placed_rows(dataset: ShardedDataset, assignment: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray, list[str],
                                                                         tuple[str, ...]]:
    """What applying `assignment` to `dataset` decides, from the ids alone: the output rows in order (split,
    then record id) with their record columns, each one's input row, the output's columns, and the input
    columns carried through unchanged."""
    from finetune_pipeline.splits import apply_split_assignment

    has_source = "augmented_from" in dataset.columns
    ids = dataset.scan().select(["record_id", *(["augmented_from"] if has_source else [])]).collect()
    placed = apply_split_assignment(ids.with_row_index(ROW), assignment)  # checks the assignment covers the corpus
    source_rows, placed = placed[ROW].to_numpy(), placed.drop(ROW)  # each row's input row: no join of the ids
    del ids
    columns = [c for c in dataset.columns if c != "split"]
    columns += [c for c in ("group_id", "split") if c not in columns]
    # `group_id` is replaced where the input has one; every other input column passes through
    passengers = tuple(c for c in dataset.columns if c not in ("record_id", "split", "group_id", "augmented_from"))
    return placed, source_rows, columns, passengers


def apply_split_dataset(dataset: ShardedDataset, assignment: pl.DataFrame, writer: DatasetWriter,
                        rows: int = DEFAULT_SHARD_ROWS, execution=None) -> int:
    """`splits.apply_split_assignment`, the rows streamed through in its order (split, then record id). On
    `execution.backend: ray` each output shard is joined and written by a Ray task (`write_rows_on_ray`): this
    process reads the record ids (and `augmented_from`) and places each row (the group table), never a shard."""
    placed, source_rows, columns, passengers = _placed_rows(dataset, assignment)
    return write_joined(dataset, placed, writer, passengers=passengers, columns=columns, rows=rows,
                        source_rows=source_rows, execution=execution)


@dataclasses.dataclass
class JoinedRows:
    """Output rows made from input rows: row i is `decided`'s row i (None: no column of its own) with the `carried`
    columns of the input row `source_rows[i]`, and the `added` columns as nulls (their types)."""

    source_rows: np.ndarray
    carried: list[str]
    decided: pl.DataFrame | None = None
    added: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source_rows)

    def slice(self, start: int, length: int) -> JoinedRows:
        decided = None if self.decided is None else self.decided.slice(start, length)
        return JoinedRows(self.source_rows[start:start + length], self.carried, decided, self.added)


def _in_input_order(rows: np.ndarray) -> bool:
    """Whether input rows `rows` come in the input's order (repeats allowed): then read in one pass."""
    return len(rows) <= 1 or bool(np.all(np.diff(rows.astype(np.int64)) >= 0))


def _joined(dataset: ShardedDataset, part: JoinedRows) -> pl.DataFrame:
    """`part`'s rows, their carried columns read from the input shards that hold them (each read once): a run of
    consecutive rows as a slice of its shard, other rows gathered into buffers of their own (`shards.owned`: a
    selection would hold its shard's whole string buffers), put back in `part`'s order when it is not the input's."""
    own = part.decided.drop([c for c in part.carried if c in part.decided.columns]) \
        if part.decided is not None else None
    if part.carried:
        rows = part.source_rows.astype(np.int64)
        in_order = _in_input_order(rows)
        order = np.arange(len(rows)) if in_order else np.argsort(rows, kind="stable")
        bounds, wanted, pieces = dataset.bounds, rows[order], []
        for number in range(len(bounds) - 1):
            lo, hi = np.searchsorted(wanted, [bounds[number], bounds[number + 1]])
            if hi > lo:
                shard, local = dataset.read_shard(number, part.carried), wanted[lo:hi] - bounds[number]
                run = np.array_equal(local, np.arange(local[0], local[0] + hi - lo))  # each row once, in a row
                picked = shard.slice(int(local[0]), hi - lo) if run else owned(shard[local])
                pieces.append(picked if in_order else picked.with_columns(pl.Series("_out", order[lo:hi])))
        values = pl.concat(pieces) if in_order else pl.concat(pieces).sort("_out").drop("_out")
        own = values if own is None else own.hstack(values)
    return own.with_columns([pl.lit(None, t).alias(c) for c, t in part.added.items()])


def _write_window(dataset: ShardedDataset, parts: list[JoinedRows], schema: dict, generation: str, name: str):
    """A Ray task: one output shard, the rows of `parts` in order (`_joined`), written as shard `name` of
    `generation`. Returns the shard's description, never its rows."""
    from finetune_pipeline.shards import write_shard

    frame = pl.concat([_joined(dataset, part).select(list(schema)).cast(schema) for part in parts])
    return write_shard(generation, name, frame)


def _on_ray(execution, writer: DatasetWriter) -> bool:
    """Whether `write_rows_on_ray` can write `writer`'s next rows: on Ray, the writer at a shard's end."""
    return execution is not None and execution.backend == "ray" and writer.at_shard_end


def write_rows_on_ray(dataset: ShardedDataset, parts: list[JoinedRows], writer: DatasetWriter, execution,
                      schema: dict) -> int:
    """The rows of `parts`, in order, written on the Ray cluster into `writer`'s generation: each window of the
    writer's `shard_rows` output rows is a Ray task (`execution.per_shard`; run again when its worker dies) that
    reads the carried columns (the texts among them) from the input shards holding its rows and writes one
    shard; the writer adopts the shards in order, and commits them (or removes them with its generation). The
    same shards as `writer.write` of the same rows. This process holds the decided columns and row numbers, never
    an input shard. Reports "rows written on the workers" (`progress.report`). Returns the rows written."""
    from finetune_pipeline.execution import per_shard

    total, size = sum(len(part) for part in parts), writer.shard_rows

    def windows():
        pending, held = [], 0
        for part in parts:
            start = 0
            while start < len(part):
                piece = part.slice(start, size - held)
                pending.append(piece)
                held, start = held + len(piece), start + len(piece)
                if held == size:
                    yield pending
                    pending, held = [], 0
        if pending:
            yield pending

    count = -(-total // size)
    calls = ((dataset, window, schema, writer.generation, writer.shard_name(index))
             for index, window in enumerate(windows()))
    written, done = [None] * count, 0
    for index, shard in per_shard(_write_window, calls, execution):
        written[index], done = shard, done + shard.rows
        report_progress("rows written on the workers", done, total)
    writer.adopt(written, schema)
    return total


__all__ = ["SPLITS", "JoinedRows", "augment_dataset", "apply_split_dataset", "batch_rows",
           "clean_dataset", "combine_stats", "enabled", "deduplicate_dataset", "document_batches", "label_dataset",
           "split_assignment_dataset", "split_inputs", "write_joined", "write_rows", "write_rows_on_ray"]
