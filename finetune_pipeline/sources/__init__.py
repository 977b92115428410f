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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from finetune_pipeline.execution import map_batches
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.raw_inventory import file_sha256
from finetune_pipeline.records import StageResult, StageStats, corpus_frame, make_record_id, rejects_frame, sha256_text
from finetune_pipeline.settings import Settings
from finetune_pipeline.sources import files, sql, tabular
from finetune_pipeline.sources.cache import CachedParse, ParseCache
from finetune_pipeline.tasks import task_for

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
SUPPORTED = {**files.DOCUMENT_TYPES, **tabular.TABULAR_TYPES, **sql.SQLITE_TYPES}
HF_DATASET = "hf_dataset"
# Columns every raw corpus has besides the standard ones (null where they do not apply).
EXTRA_COLUMNS = {"element_types": pl.String}
# Instruction records (task: instruction): the conversation as a JSON array of {role, content} turns, the
# last user turn, the final assistant turn, and an optional category (see `sources.conversations`).
INSTRUCTION_COLUMNS = {"messages": pl.String, "prompt": pl.String, "response": pl.String, "category": pl.String}
# What classification roots with prompt_column/response_column carry (unchanged from before conversations).
PROMPT_RESPONSE_COLUMNS = {"prompt": pl.String, "response": pl.String}
NOT_A_CONVERSATION = ("instruction data roots take conversations (messages, conversations, instruction/output or "
                      "prompt/response columns in .jsonl, .json, .csv, .parquet, SQLite or Hugging Face datasets); "
                      "move documents to a classification root")

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


def source_type_of(path: Path) -> str:
    if path.is_dir():
        return HF_DATASET
    return SUPPORTED.get(path.suffix.lower(), path.suffix.lower().lstrip(".") or "unknown")


def collect_raw_corpus(data_dir: Path, settings: Settings, cache_dir: Path | None = None,
                       progress: Progress | None = None) -> StageResult:
    """Parse every raw source and SQL source into corpus rows; failures become rejects.

    `cache_dir`: where parse results are kept between runs (None: parse everything every time).
    `progress`: called after each source with (done, total, source_uri, status)."""
    data_dir = Path(data_dir).resolve()
    conversational = task_for(settings).conversational
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    cache = ParseCache(cache_dir, settings)
    records: list[dict] = []
    rejects: list[dict] = []
    by_type: dict[str, SourceCounts] = {}
    sources = discover_sources(data_dir)
    total = len(sources) + len(settings.sources.sql)

    # Cheap checks and cache look-ups here; the parsing of new sources is a batch function
    # (`parse_sources`), run one source at a time in-process or spread over the Ray workers.
    outcomes: dict[int, tuple[list[dict], list[dict], str, str, list[str]]] = {}
    to_parse, keys = [], {}
    for number, path in enumerate(sources):
        source_type = source_type_of(path)
        outcome, keys[number] = _lookup(path, source_type, data_dir, settings, cache, now)
        if outcome is None:
            to_parse.append({"number": number, "path": str(path), "source_type": source_type})
        else:
            outcomes[number] = outcome
    pending = pl.DataFrame(to_parse, schema={"number": pl.Int64, "path": pl.String, "source_type": pl.String})
    chunks = [pending] if settings.execution.backend == "ray" else [pending.slice(i, 1) for i in range(pending.height)]
    done = 0

    def report(number: int) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, sources[number].relative_to(data_dir).as_posix(), outcomes[number][3])

    for number in sorted(outcomes):
        report(number)
    try:
        for chunk in chunks:
            parsed = map_batches(chunk, parse_sources, settings.execution, settings=settings, batch_size=1)
            for number, records_json, rejects_json, notes_json in parsed.select(
                    "number", "records", "rejects", "notes").iter_rows():
                new_records, new_rejects, notes = json.loads(records_json), json.loads(rejects_json), \
                    json.loads(notes_json)
                cache.put(keys[number], CachedParse(records=new_records, rejects=new_rejects, ingested_at=now,
                                                    notes=notes))
                outcomes[number] = (new_records, new_rejects, now, "parsed", notes)
                report(number)
    finally:
        files.release_worker()

    recognised = []
    for number, path in enumerate(sources):
        uri = path.relative_to(data_dir).as_posix()
        source_type = source_type_of(path)
        counts = by_type.setdefault(source_type, SourceCounts())
        counts.files += 1
        new_records, new_rejects, ingested_at, status, notes = outcomes[number]
        recognised += [f"{uri}: {note}" for note in notes]
        label = _folder_label(path, data_dir, settings) if source_type in files.DOCUMENT_TYPES.values() else None
        for record in new_records:
            record.update(source_uri=uri, source_type=source_type, ingested_at=ingested_at)
            if label and record.get("label") is None:
                record.update(label=label, label_source="folder")
        rejects += [_reject(uri, **r) for r in new_rejects]
        if not new_records and not new_rejects:  # a header-only table or blank lines: say so, never vanish
            rejects.append(_reject(uri, None, "empty_file", "no records (a header-only table, or blank lines only); "
                                                       "add rows or remove the file"))
            counts.rejects += 1
        records += new_records
        counts.records += len(new_records)
        counts.rejects += len(new_rejects)
        setattr(counts, status, getattr(counts, status) + 1)
        log.debug("[%d/%d] %s (%s)", number + 1, total, uri, status)

    for number, source in enumerate(settings.sources.sql, start=len(sources) + 1):
        uri = f"sql://{source.name}"
        counts = by_type.setdefault("sql", SourceCounts())
        counts.files += 1
        try:
            rows = sql.read_sql_query(source.url_env, source.query)
            numbered = [(f"row {i + 1}", r) for i, r in enumerate(rows)]
            if conversational:
                new_records, bad = tabular.rows_to_conversations(numbered, source)
            else:
                new_records, bad = tabular.rows_to_records(numbered, source, uri)
            counts.parsed += 1
        except (sql.DatabaseUnavailable, tabular.MissingColumn) as exc:
            new_records, bad = [], []
            rejects.append(_reject(uri, None, "database_unreachable", str(exc)))
            counts.rejects += 1
        for record in new_records:
            record.update(source_uri=uri, source_type="sql", ingested_at=now)
        reason = "malformed_conversation" if conversational else "empty_text"
        rejects += [_reject(uri, loc, reason, why) for loc, why in bad]
        counts.records += len(new_records)
        counts.rejects += len(bad)
        records += new_records
        if progress:
            progress(number, total, uri, "parsed")

    for record in records:
        record["record_id"] = make_record_id(record["source_uri"], record["locator"])
        record["content_sha256"] = sha256_text(record["text"])
    for reject in rejects:
        if reject.get("locator") is not None and reject.get("record_id") is None:
            reject["record_id"] = make_record_id(reject["source_uri"], reject["locator"])
        reject["stage"] = STAGE
    pruned = cache.prune()

    if conversational:
        instruction = INSTRUCTION_COLUMNS
    elif settings.sources.tabular.prompt_column or any(s.prompt_column for s in settings.sources.sql):
        instruction = PROMPT_RESPONSE_COLUMNS
    else:
        instruction = {}
    kept = _with_columns(corpus_frame(records), {**EXTRA_COLUMNS, **instruction})
    return StageResult(kept=kept, rejected=rejects_frame(rejects),
                       stats=CollectionStats(files=len(sources), by_source_type=by_type,
                                             parsed=sum(c.parsed for c in by_type.values()),
                                             cached=sum(c.cached for c in by_type.values()),
                                             cache_entries_pruned=pruned, recognised_columns=recognised))


def _with_columns(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Add the given columns as nulls where absent; drop instruction columns nobody asked for."""
    frame = frame.drop([c for c in INSTRUCTION_COLUMNS if c in frame.columns and c not in columns])
    return frame.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in columns.items() if c not in frame.columns])


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


def _bad(locator: str | None, reason: str, detail: str) -> dict:
    return {"locator": locator, "reason": reason, "detail": detail}


def _parse(path: Path, source_type: str, settings: Settings, notes: list[str] | None = None
           ) -> tuple[list[dict], list[dict]]:
    """Records and rejects ({locator, reason, detail}) from the content of one source: labeled texts, or
    conversations when the task trains on them. A parser failing on bad content becomes a reject. What was
    recognised rather than configured (a table's columns) is appended to `notes`."""
    notes = [] if notes is None else notes
    try:
        if task_for(settings).conversational:
            return _read_conversations(path, source_type, settings)
        return _read_texts(path, source_type, settings, notes)
    except files.ParseTimeout as exc:
        return [], [_bad(None, "parse_timeout", str(exc))]
    except ArchiveTooLarge as exc:
        return [], [_bad(None, "archive_too_large", str(exc))]
    except files.UnreadableDocument as exc:
        return [], [_bad(None, "unreadable_file", str(exc))]
    except tabular.MissingColumn as exc:
        return [], [_bad(None, "missing_column", str(exc))]
    except sql.DatabaseUnavailable as exc:
        return [], [_bad(None, "unreadable_database", str(exc))]
    except Exception as exc:  # a parser failing on bad content must not stop the run
        log.warning("%s: %s while parsing", path.name, type(exc).__name__)
        return [], [_bad(None, "unreadable_file",
                         f"parser failed ({type(exc).__name__}); check the file opens and re-export it")]


def _read_texts(path: Path, source_type: str, settings: Settings, notes: list[str]) -> tuple[list[dict], list[dict]]:
    """One record per document chunk or table row; a table without the configured text or label column has
    them recognised where the choice is clear (`tabular.recognised_mapping`, said in `notes`)."""
    suffix = path.suffix.lower()

    def mapping_for(rows: list[tuple[str, dict]], where: str = ""):
        mapping, note = tabular.recognised_mapping(rows, settings.sources.tabular, settings.labels)
        if note:
            notes.append(where + note)
        return mapping

    if source_type == HF_DATASET:
        records, rejects = [], []
        for split, rows in tabular.read_hf_dataset(path).items():
            prefix = f"split {split}; " if split else ""
            split_records, empty = tabular.rows_to_records(rows, mapping_for(rows, prefix), "")
            records += [{**r, "locator": prefix + r["locator"]} for r in split_records]
            rejects += [_bad(prefix + loc, "empty_text", why) for loc, why in empty]
        return records, rejects
    if suffix in files.DOCUMENT_TYPES:
        return _read_document(path, settings), []
    if suffix in tabular.TABULAR_TYPES:
        rows, malformed = tabular.read_table(path)
        records, empty = tabular.rows_to_records(rows, mapping_for(rows), "")
        return records, ([_bad(loc, "malformed_row", why) for loc, why in malformed]
                         + [_bad(loc, "empty_text", why) for loc, why in empty])
    if suffix in sql.SQLITE_TYPES:
        return _read_sqlite(path, settings)
    return [], []


def _read_conversations(path: Path, source_type: str, settings: Settings) -> tuple[list[dict], list[dict]]:
    """One conversation per row; documents are refused."""
    mapping = settings.sources.tabular
    suffix = path.suffix.lower()
    if source_type == HF_DATASET:
        records, rejects = [], []
        for split, rows in tabular.read_hf_dataset(path).items():
            prefix = f"split {split}; " if split else ""
            split_records, malformed = tabular.rows_to_conversations(rows, mapping)
            records += [{**r, "locator": prefix + r["locator"]} for r in split_records]
            rejects += [_bad(prefix + loc, "malformed_conversation", why) for loc, why in malformed]
        return records, rejects
    if suffix in files.DOCUMENT_TYPES:
        return [], [_bad(None, "not_a_conversation", NOT_A_CONVERSATION)]
    if suffix in tabular.TABULAR_TYPES:
        rows, malformed_rows = tabular.read_table(path)
        records, malformed = tabular.rows_to_conversations(rows, mapping)
        return records, ([_bad(loc, "malformed_row", why) for loc, why in malformed_rows]
                         + [_bad(loc, "malformed_conversation", why) for loc, why in malformed])
    if suffix in sql.SQLITE_TYPES:
        tables = sql.read_sqlite_tables(path, tabular.conversation_columns(mapping))
        if not tables:
            raise tabular.MissingColumn("no table has conversation columns; " + NOT_A_CONVERSATION.split(";")[0]
                                        + "; set sources.tabular in finetune.yaml to the database's columns")
        records, rejects = [], []
        for table, rows in tables.items():
            recs, malformed = tabular.rows_to_conversations(
                [(f"row {i + 1}", r) for i, r in enumerate(rows)], mapping)
            records += [{**r, "locator": f"table {table}; {r['locator']}"} for r in recs]
            rejects += [_bad(f"table {table}; {loc}", "malformed_conversation", why) for loc, why in malformed]
        return records, rejects
    return [], []


def _read_document(path: Path, settings: Settings) -> list[dict]:
    """One record per chunk, parsed in the time-limited worker (`sources.parse_timeout_s`)."""
    problem = (files.archive_problem(path, settings.sources.max_expanded_mb, settings.sources.max_compression_ratio)
               if path.suffix.lower() in files.ZIP_BASED else None)
    if problem:
        raise ArchiveTooLarge(problem)
    if not settings.sources.parse_timeout_s:
        return document_records(str(path), settings)
    return files.parse_with_time_limit(path, settings.model_dump_json(), settings.sources.parse_timeout_s)


class ArchiveTooLarge(files.UnreadableDocument):
    """A zip-based document over the expanded-size or compression-ratio limit."""


def document_records(path: str, settings: Settings) -> list[dict]:
    """The chunks of one document as record fields (what the worker process returns)."""
    path = Path(path)
    elements = files.partition_document(path, settings.sources.max_pdf_pages)
    cfg = settings.sources
    chunks = files.document_chunks(elements, cfg.chunk_max_chars, path.suffix.lower() == ".pdf",
                                   by=cfg.chunk_by, combine_under_chars=cfg.chunk_combine_under_chars)
    if not chunks:
        hint = "no text layer (scanned?); OCR it first" if path.suffix.lower() == ".pdf" else "no text found"
        raise files.UnreadableDocument(hint)
    return [{"text": c["text"], "locator": c["locator"], "element_types": c["element_types"],
             "label": None, "label_source": None} for c in chunks]


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


def _read_sqlite(path: Path, settings: Settings) -> tuple[list[dict], list[dict]]:
    mapping = settings.sources.tabular
    needed = mapping.prompt_column or mapping.text_column
    tables = sql.read_sqlite_tables(path, needed)
    if not tables:
        raise tabular.MissingColumn(
            f"no table has a column {needed!r}; set sources.tabular in finetune.yaml to the database's columns"
        )
    records, rejects = [], []
    for table, rows in tables.items():
        recs, bad = tabular.rows_to_records([(f"row {i + 1}", r) for i, r in enumerate(rows)], mapping, "")
        for rec in recs:
            rec["locator"] = f"table {table}; {rec['locator']}"
        records += recs
        rejects += [{"locator": f"table {table}; {loc}", "reason": "empty_text", "detail": why} for loc, why in bad]
    return records, rejects
