"""Collection: every file under `raw/` (any depth) and every configured SQL source becomes records.

`collect_raw_corpus` never raises for a bad input: an unreadable file, a malformed row or an
unreachable database becomes a reject naming the input, the reason and what to do.

Incremental: a source is parsed only when its content hash is new (see `sources.cache`); unchanged,
renamed or moved files come from the parse cache with their first ingest time, and a deleted file's
records are simply absent from the next corpus. SQL sources are queried on every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from finetune_pipeline.execution import map_batches
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.raw_inventory import file_sha256
from finetune_pipeline.records import (CORPUS_SCHEMA, StageResult, StageStats, corpus_frame, make_record_id,
                                       rejects_frame, sha256_text)
from finetune_pipeline.settings import Settings
from finetune_pipeline.sources import files, sql, tabular
from finetune_pipeline.sources.cache import CachedParse, ParseCache
from finetune_pipeline.sources.readers import (EXTRA_COLUMNS, SUPPORTED, ArchiveTooLarge, bad,
                                               source_type_of)
from finetune_pipeline.tasks import Task, task_for

log = logging.getLogger(__name__)
STAGE = "raw_corpus"


@dataclass
class SourceCounts:
    """Per source type: sources seen, records and rejects they gave, sources parsed now or from the cache."""

    files: int = 0
    records: int = 0
    rejects: int = 0
    parsed: int = 0
    cached: int = 0
    rejected: int = 0  # sources refused before parsing (too large, unreadable, leaving the data root)


@dataclass
class CollectionStats(StageStats):
    files: int = 0  # files under raw/ (SQL sources are counted under by_source_type["sql"])
    by_source_type: dict[str, SourceCounts] = field(default_factory=dict)
    parsed: int = 0
    cached: int = 0
    cache_entries_pruned: int = 0
    # Tables whose text or label column was recognised rather than configured, and how: "raw/quotes.csv: text
    # column 'quote', label column 'category' (recognised; ...)".
    recognised_columns: list[str] = field(default_factory=list)


Progress = Callable[[int, int, str, str], None]  # (done, total, source_uri, "parsed" | "cached" | "rejected")


def discover_sources(data_dir: Path) -> list[Path]:
    """Every source under `<data_dir>/raw`, sorted: files, symlinks (checked later) and Hugging Face
    `save_to_disk` folders (one source each). Hidden names (starting with '.') are skipped. Symlinked
    folders inside the data root are followed once; links leaving it are listed so they can be refused."""
    data_dir = Path(data_dir).resolve()
    raw = DataRoot(data_dir).raw
    found: list[Path] = []

    def visit(folder: Path, seen: frozenset[Path]) -> None:
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.name.startswith("."):
                continue
            target = entry.resolve()
            inside = target.is_relative_to(data_dir)
            if entry.is_dir() and not tabular.is_hf_dataset_dir(entry):
                if inside and target not in seen:  # a folder, or a link to a folder not visited yet
                    visit(entry, seen | {target})
                elif not inside:
                    found.append(entry)  # refused later: it leaves the data root
            elif entry.is_dir() or entry.is_file() or entry.is_symlink():
                found.append(entry)

    if raw.is_dir():
        visit(raw, frozenset({raw.resolve()}))
    return found


def collect_raw_corpus(data_dir: Path, settings: Settings, cache_dir: Path | None = None,
                       progress: Progress | None = None) -> StageResult:
    """Parse every raw source and SQL source into corpus rows; failures become rejects.

    `cache_dir`: where parse results are kept between runs (None: parse everything every time).
    `progress`: called after each source with (done, total, source_uri, status)."""
    kept, rejected = [], []
    stats = collect_sources(data_dir, settings, lambda k, r: (kept.append(k), rejected.append(r)), cache_dir,
                            progress)
    return StageResult(kept=pl.concat(kept), rejected=pl.concat(rejected), stats=stats)


def collect_sources(data_dir: Path, settings: Settings, emit: Callable[[pl.DataFrame, pl.DataFrame], None],
                    cache_dir: Path | None = None, progress: Progress | None = None) -> CollectionStats:
    """`collect_raw_corpus`, handing each source's rows and rejects to `emit(kept, rejected)` as it is read
    (in source order; every frame with the corpus's columns, the first one even when empty): one source's
    records in memory at a time (a streaming caller writes them shard by shard)."""
    data_dir = Path(data_dir).resolve()
    task = task_for(settings)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    cache = ParseCache(cache_dir, settings)
    sources = discover_sources(data_dir)
    total = len(sources) + len(settings.sources.sql)
    columns = corpus_columns(settings)
    by_type: dict[str, SourceCounts] = {}
    recognised: list[str] = []
    emitted = False

    def put(records: list[dict], rejects: list[dict]) -> None:
        nonlocal emitted
        if records or rejects or not emitted:
            _identify(records, rejects)
            emit(_conform(corpus_frame(records), columns), rejects_frame(rejects))
            emitted = True

    for number, outcome in parse_files(sources, data_dir, settings, cache, now, progress, total):
        records, rejects, notes = _file_records(sources[number], outcome, data_dir, settings, by_type)
        recognised += notes
        log.debug("[%d/%d] %s (%s)", number + 1, total, sources[number].relative_to(data_dir).as_posix(),
                  outcome[3])
        put(records, rejects)
    put(*sql_records(task, settings, by_type, now, progress, len(sources), total))
    return CollectionStats(files=len(sources), by_source_type=by_type,
                           parsed=sum(c.parsed for c in by_type.values()),
                           cached=sum(c.cached for c in by_type.values()),
                           cache_entries_pruned=cache.prune(), recognised_columns=recognised)


def corpus_columns(settings: Settings) -> dict[str, pl.DataType]:
    """The raw corpus's columns, in order: the standard ones, the kind's (`Task.record_columns`), then
    `element_types`."""
    return {**CORPUS_SCHEMA, **task_for(settings).record_columns(settings), **EXTRA_COLUMNS}


# (records, rejects, ingested_at, status, notes) of one source
Outcome = tuple[list[dict], list[dict], str, str, list[str]]

# sources parsed per Ray round: their records come back to this process together, and each round waits for its
# slowest source (at 32, the sample root's ~80 sources took three rounds and its three-path test 13 s longer)
RAY_PARSE_GROUP = 128


def parse_files(sources: list[Path], data_dir: Path, settings: Settings, cache: ParseCache, now: str,
                progress: Progress | None, total: int) -> Iterator[tuple[int, Outcome]]:
    """Each source's number and outcome, in source order: refused or cached ones from cheap checks and cache
    look-ups, new ones parsed by a batch function (`parse_sources`), one source at a time in-process or a
    group at a time spread over the Ray workers, and put in the cache. Only a group's records are held."""
    group = RAY_PARSE_GROUP if settings.execution.backend == "ray" else 1
    try:
        for first in range(0, len(sources), group):
            outcomes: dict[int, Outcome] = {}
            to_parse, keys = [], {}
            for number in range(first, min(first + group, len(sources))):
                path = sources[number]
                source_type = source_type_of(path)
                outcome, keys[number] = _lookup(path, source_type, data_dir, settings, cache, now)
                if outcome is None:
                    to_parse.append({"number": number, "path": str(path), "source_type": source_type})
                else:
                    outcomes[number] = outcome
            if to_parse:
                pending = pl.DataFrame(to_parse, schema={"number": pl.Int64, "path": pl.String,
                                                         "source_type": pl.String})
                parsed = map_batches(pending, parse_sources, settings.execution, settings=settings, batch_size=1)
                for number, records_json, rejects_json, notes_json in parsed.select(
                        "number", "records", "rejects", "notes").iter_rows():
                    new_records, new_rejects, notes = json.loads(records_json), json.loads(rejects_json), \
                        json.loads(notes_json)
                    cache.put(keys[number], CachedParse(records=new_records, rejects=new_rejects, ingested_at=now,
                                                        notes=notes))
                    outcomes[number] = (new_records, new_rejects, now, "parsed", notes)
                del parsed
            for number in sorted(outcomes):
                if progress:
                    progress(number + 1, total, sources[number].relative_to(data_dir).as_posix(),
                             outcomes[number][3])
                yield number, outcomes.pop(number)
    finally:
        files.release_worker()


def _file_records(path: Path, outcome: Outcome, data_dir: Path, settings: Settings,
                  by_type: dict[str, SourceCounts]) -> tuple[list[dict], list[dict], list[str]]:
    """The records and rejects of one file with where they came from (counted in `by_type`), and what was
    recognised rather than configured ("<uri>: <note>")."""
    uri = path.relative_to(data_dir).as_posix()
    source_type = source_type_of(path)
    counts = by_type.setdefault(source_type, SourceCounts())
    counts.files += 1
    new_records, new_rejects, ingested_at, status, notes = outcome
    label = _folder_label(path, data_dir, settings) if source_type in files.DOCUMENT_TYPES.values() else None
    for record in new_records:
        record.update(source_uri=uri, source_type=source_type, ingested_at=ingested_at)
        if label and record.get("label") is None:
            record.update(label=label, label_source="folder")
    rejects = [_reject(uri, **r) for r in new_rejects]
    if not new_records and not new_rejects:  # a header-only table or blank lines: say so, never vanish
        rejects.append(_reject(uri, None, "empty_file", "no records (a header-only table, or blank lines only); "
                                                   "add rows or remove the file"))
        counts.rejects += 1
    counts.records += len(new_records)
    counts.rejects += len(new_rejects)
    setattr(counts, status, getattr(counts, status) + 1)
    return new_records, rejects, [f"{uri}: {note}" for note in notes]


def sql_records(task: Task, settings: Settings, by_type: dict[str, SourceCounts], now: str,
                progress: Progress | None, done: int, total: int) -> tuple[list[dict], list[dict]]:
    """The records and rejects of every configured SQL query (counted in `by_type["sql"]`); `done`: the
    sources reported before them."""
    records, rejects = [], []
    for number, source in enumerate(settings.sources.sql, start=done + 1):
        uri = f"sql://{source.name}"
        counts = by_type.setdefault("sql", SourceCounts())
        counts.files += 1
        try:
            rows = sql.read_sql_query(source.url_env, source.query)
            new_records, bad = task.read_query_rows([(f"row {i + 1}", r) for i, r in enumerate(rows)], source, uri)
            counts.parsed += 1
        except (sql.DatabaseUnavailable, tabular.MissingColumn) as exc:
            new_records, bad = [], []
            rejects.append(_reject(uri, None, "database_unreachable", str(exc)))
            counts.rejects += 1
        for record in new_records:
            record.update(source_uri=uri, source_type="sql", ingested_at=now)
        rejects += [_reject(uri, **r) for r in bad]
        counts.records += len(new_records)
        counts.rejects += len(bad)
        records += new_records
        if progress:
            progress(number, total, uri, "parsed")
    return records, rejects


def _identify(records: list[dict], rejects: list[dict]) -> None:
    """Give every record its id and content hash, every reject its id (where it names a row) and stage."""
    for record in records:
        record["record_id"] = make_record_id(record["source_uri"], record["locator"])
        record["content_sha256"] = sha256_text(record["text"])
    for reject in rejects:
        if reject.get("locator") is not None and reject.get("record_id") is None:
            reject["record_id"] = make_record_id(reject["source_uri"], reject["locator"])
        reject["stage"] = STAGE


def _conform(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with exactly `columns`, in order: absent ones null (a source without labels), the types
    given (a column null in every record of a source); a record field outside them is left out (e.g. the
    instruction columns of a conversation file in a classification root)."""
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                         for c, t in columns.items()])


def _reject(uri: str, locator: str | None, reason: str, detail: str) -> dict:
    """A reject row; `detail` says what happened and what to do, prefixed here with where."""
    where = f"{uri} {locator}" if locator else uri
    return {"source_uri": uri, "locator": locator, "reason": reason, "detail": f"{where}: {detail}"}


def source_digest(path: Path) -> str:
    """Content hash of a file, or of every file of a dataset folder (names and bytes)."""
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for part in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(part.relative_to(path).as_posix().encode() + b"\0" + file_sha256(part).encode())
    return digest.hexdigest()


def _lookup(path: Path, source_type: str, data_dir: Path, settings: Settings, cache: ParseCache,
            now: str) -> tuple[tuple[list[dict], list[dict], str, str] | None, str | None]:
    """((records, rejects, ingested_at, status), cache key) of a source refused or found in the cache;
    (None, cache key) when it has to be parsed."""
    refused = _refuse(path, data_dir, settings)
    if refused:
        return ([], [{"locator": None, "reason": refused[0], "detail": refused[1]}], now, "rejected", []), None
    try:
        key = cache.key(source_digest(path), source_type)
    except OSError as exc:
        return ([], [{"locator": None, "reason": "unreadable_file",
                      "detail": f"cannot read it ({type(exc).__name__}); check its permissions"}], now, "rejected",
                     []), None
    hit = cache.get(key)
    if hit is not None:
        return (hit.records, hit.rejects, hit.ingested_at, "cached", hit.notes), key
    return None, key


def parse_sources(batch: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Batch function: (number, path, source_type) -> (number, records, rejects, notes) as JSON lists (notes:
    what the collection recognised, e.g. a table's text column, for the summary). Never raises
    for bad content. With Ray the workers read the paths: they must see the data root at the same path."""
    out = []
    for number, path, source_type in batch.select("number", "path", "source_type").iter_rows():
        started = time.perf_counter()
        notes: list[str] = []
        new_records, new_rejects = _parse(Path(path), source_type, settings, notes)
        log.debug("parsed %s in %.2fs", Path(path).name, time.perf_counter() - started)
        out.append({"number": number, "records": json.dumps(new_records, default=str),
                    "rejects": json.dumps(new_rejects, default=str), "notes": json.dumps(notes)})
    return pl.DataFrame(out, schema={"number": pl.Int64, "records": pl.String, "rejects": pl.String,
                                     "notes": pl.String})


def _refuse(path: Path, data_dir: Path, settings: Settings) -> tuple[str, str] | None:
    """Cheap checks before reading: (reason, what to do) or None."""
    if path.is_symlink() and not path.resolve().is_relative_to(data_dir):
        return "symlink_outside_data_root", "links outside the data root; copy the file into raw/ instead"
    if path.is_dir():
        return None
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        return ("unsupported_file_type",
                f"no reader for '{suffix or path.name}'; supported: {', '.join(sorted(SUPPORTED))}, "
                f"and Hugging Face save_to_disk folders")
    size = path.stat().st_size
    if size == 0:
        return "empty_file", "zero bytes"
    if size > settings.sources.max_file_mb * 2**20:
        return ("file_too_large", f"{size / 2**20:.0f} MiB is over sources.max_file_mb "
                                  f"({settings.sources.max_file_mb:g}); split it or raise the limit")
    return None


def _parse(path: Path, source_type: str, settings: Settings, notes: list[str] | None = None
           ) -> tuple[list[dict], list[dict]]:
    """Records and rejects ({locator, reason, detail}) from the content of one source, read as the task's
    kind reads it (`Task.read_rows`). A parser failing on bad content becomes a reject. What was
    recognised rather than configured (a table's columns) is appended to `notes`."""
    notes = [] if notes is None else notes
    try:
        return task_for(settings).read_rows(path, source_type, settings, notes)
    except files.ParseTimeout as exc:
        return [], [bad(None, "parse_timeout", str(exc))]
    except ArchiveTooLarge as exc:
        return [], [bad(None, "archive_too_large", str(exc))]
    except files.UnreadableDocument as exc:
        return [], [bad(None, "unreadable_file", str(exc))]
    except tabular.MissingColumn as exc:
        return [], [bad(None, "missing_column", str(exc))]
    except sql.DatabaseUnavailable as exc:
        return [], [bad(None, "unreadable_database", str(exc))]
    except Exception as exc:  # a parser failing on bad content must not stop the run
        log.warning("%s: %s while parsing", path.name, type(exc).__name__)
        return [], [bad(None, "unreadable_file",
                         f"parser failed ({type(exc).__name__}); check the file opens and re-export it")]


def _folder_label(path: Path, data_dir: Path, settings: Settings) -> str | None:
    """The parent folder's name, when labels come from folders and the name is a label."""
    if not settings.sources.label_from_folder:
        return None
    parent = path.parent
    if parent == DataRoot(data_dir).raw:
        return None
    name = parent.name
    if settings.labels and name not in settings.labels:
        return None
    return name
