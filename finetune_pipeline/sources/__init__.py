"""Collection: every file under `raw/` (any depth) and every configured SQL source becomes records.

`collect_raw_corpus` never raises for a bad input: an unreadable file, a malformed row or an
unreachable database becomes a reject naming the input, the reason and what to do.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from finetune_pipeline.records import StageResult, corpus_frame, make_record_id, rejects_frame, sha256_text
from finetune_pipeline.settings import Settings, TabularSource
from finetune_pipeline.sources import files, sql, tabular

log = logging.getLogger(__name__)
STAGE = "raw_corpus"
SUPPORTED = {**files.DOCUMENT_TYPES, **tabular.TABULAR_TYPES, **sql.SQLITE_TYPES}


def discover_files(data_dir: Path) -> list[Path]:
    """Every file under `<data_dir>/raw`, sorted, symlinks included (checked later)."""
    raw = data_dir / "raw"
    if not raw.is_dir():
        return []
    return sorted(p for p in raw.rglob("*") if p.is_file() or p.is_symlink())


def collect_raw_corpus(data_dir: Path, settings: Settings) -> StageResult:
    """Parse every raw file and SQL source into corpus rows; failures become rejects."""
    data_dir = Path(data_dir).resolve()
    ingested_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records: list[dict] = []
    rejects: list[dict] = []
    by_type: dict[str, dict[str, int]] = {}
    paths = discover_files(data_dir)

    for number, path in enumerate(paths, start=1):
        uri = path.relative_to(data_dir).as_posix()
        source_type = SUPPORTED.get(path.suffix.lower(), path.suffix.lower().lstrip(".") or "unknown")
        log.info("[%d/%d] %s", number, len(paths), uri)
        stats = by_type.setdefault(source_type, {"files": 0, "records": 0, "rejects": 0})
        stats["files"] += 1
        new_records, new_rejects = _read_one(path, uri, source_type, data_dir, settings)
        for record in new_records:
            record.update(source_uri=uri, source_type=source_type, ingested_at=ingested_at)
        for reject in new_rejects:
            reject.setdefault("source_uri", uri)
        stats["records"] += len(new_records)
        stats["rejects"] += len(new_rejects)
        records += new_records
        rejects += new_rejects

    for source in settings.sources.sql:
        uri = f"sql://{source.name}"
        stats = by_type.setdefault("sql", {"files": 0, "records": 0, "rejects": 0})
        mapping = TabularSource(text_column=source.text_column, label_column=source.label_column,
                                id_column=source.id_column)
        try:
            rows = sql.read_sql_query(source.url_env, source.query)
            new_records, bad = tabular.rows_to_records([(f"row {i + 1}", r) for i, r in enumerate(rows)],
                                                       mapping, uri)
        except (sql.DatabaseUnavailable, tabular.MissingColumn) as exc:
            new_records, bad = [], []
            rejects.append(_reject(uri, None, "database_unreachable", str(exc)))
            stats["rejects"] += 1
        for record in new_records:
            record.update(source_uri=uri, source_type="sql", ingested_at=ingested_at)
        rejects += [_reject(uri, loc, "empty_text", why) for loc, why in bad]
        stats["records"] += len(new_records)
        stats["rejects"] += len(bad)
        records += new_records

    for record in records:
        record["record_id"] = make_record_id(record["source_uri"], record["locator"])
        record["content_sha256"] = sha256_text(record["text"])
    for reject in rejects:
        if reject.get("locator") is not None and reject.get("record_id") is None:
            reject["record_id"] = make_record_id(reject["source_uri"], reject["locator"])
        reject["stage"] = STAGE

    kept = corpus_frame(records)
    return StageResult(kept=kept, rejected=rejects_frame(rejects),
                       stats={"files": len(paths), "by_source_type": by_type})


def _reject(uri: str, locator: str | None, reason: str, detail: str) -> dict:
    return {"source_uri": uri, "locator": locator, "reason": reason, "detail": detail}


def _read_one(path: Path, uri: str, source_type: str, data_dir: Path,
              settings: Settings) -> tuple[list[dict], list[dict]]:
    """Records and rejects from one file. Never raises for bad content."""
    if path.is_symlink() and not path.resolve().is_relative_to(data_dir):
        return [], [_reject(uri, None, "symlink_outside_data_root",
                            f"{uri}: links outside the data root; copy the file into raw/ instead")]
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        return [], [_reject(uri, None, "unsupported_file_type",
                            f"{uri}: no reader for '{suffix or path.name}'; supported: {', '.join(sorted(SUPPORTED))}")]
    size = path.stat().st_size
    if size == 0:
        return [], [_reject(uri, None, "empty_file", f"{uri}: zero bytes")]
    if size > settings.sources.max_file_mb * 2**20:
        return [], [_reject(uri, None, "file_too_large",
                            f"{uri}: {size / 2**20:.0f} MiB is over sources.max_file_mb "
                            f"({settings.sources.max_file_mb:g}); split it or raise the limit")]
    try:
        if suffix in files.DOCUMENT_TYPES:
            return _read_document(path, uri, data_dir, settings), []
        if suffix in tabular.TABULAR_TYPES:
            rows, bad = tabular.read_table(path)
            records, empty = tabular.rows_to_records(rows, settings.sources.tabular, uri)
            rejects = [_reject(uri, loc, "malformed_row", f"{uri} {loc}: {why}") for loc, why in bad]
            rejects += [_reject(uri, loc, "empty_text", f"{uri} {loc}: {why}") for loc, why in empty]
            return records, rejects
        if suffix in sql.SQLITE_TYPES:
            return _read_sqlite(path, uri, settings)
    except files.UnreadableDocument as exc:
        return [], [_reject(uri, None, "unreadable_file", f"{uri}: {exc}")]
    except tabular.MissingColumn as exc:
        return [], [_reject(uri, None, "missing_column", f"{uri}: {exc}")]
    except sql.DatabaseUnavailable as exc:
        return [], [_reject(uri, None, "unreadable_database", f"{uri}: {exc}")]
    except Exception as exc:  # a parser failing on bad content must not stop the run
        log.warning("%s: %s while parsing", uri, type(exc).__name__)
        return [], [_reject(uri, None, "unreadable_file",
                            f"{uri}: parser failed ({type(exc).__name__}); check the file opens and re-export it")]
    return [], []


def _read_document(path: Path, uri: str, data_dir: Path, settings: Settings) -> list[dict]:
    elements = files.partition_document(path)
    chunks = files.document_chunks(elements, settings.sources.chunk_max_chars, path.suffix.lower() == ".pdf")
    if not chunks:
        hint = "no text layer (scanned?); OCR it first" if path.suffix.lower() == ".pdf" else "no text found"
        raise files.UnreadableDocument(hint)
    label = _folder_label(path, data_dir, settings)
    return [{
        "text": chunk["text"],
        "locator": chunk["locator"],
        "label": label,
        "label_source": "folder" if label else None,
    } for chunk in chunks]


def _folder_label(path: Path, data_dir: Path, settings: Settings) -> str | None:
    """The parent folder's name, when labels come from folders and the name is a label."""
    if not settings.sources.label_from_folder:
        return None
    parent = path.parent
    if parent == data_dir / "raw":
        return None
    name = parent.name
    if settings.labels and name not in settings.labels:
        return None
    return name


def _read_sqlite(path: Path, uri: str, settings: Settings) -> tuple[list[dict], list[dict]]:
    mapping = settings.sources.tabular
    tables = sql.read_sqlite_tables(path, mapping.text_column)
    if not tables:
        raise tabular.MissingColumn(
            f"no table has a column {mapping.text_column!r}; set sources.tabular.text_column in finetune.yaml"
        )
    records, rejects = [], []
    for table, rows in tables.items():
        recs, bad = tabular.rows_to_records([(f"row {i + 1}", r) for i, r in enumerate(rows)], mapping, uri)
        for rec in recs:
            rec["locator"] = f"table {table}; {rec['locator']}"
        records += recs
        rejects += [_reject(uri, f"table {table}; {loc}", "empty_text", f"{uri} table {table} {loc}: {why}")
                    for loc, why in bad]
    return records, rejects
