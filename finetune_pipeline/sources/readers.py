"""The readers a kind of data picks from (`Task.read_rows`): labeled texts (documents, table rows, SQLite
tables, Hugging Face datasets) and conversations (one per row; documents refused). Each returns records
and rejects ({locator, reason, detail}) and raises the source's own errors (`collect` makes them rejects).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from finetune_pipeline.settings import Settings
from finetune_pipeline.sources import files, sql, tabular

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


def source_type_of(path: Path) -> str:
    if path.is_dir():
        return HF_DATASET
    return SUPPORTED.get(path.suffix.lower(), path.suffix.lower().lstrip(".") or "unknown")


def bad(locator: str | None, reason: str, detail: str) -> dict:
    """A reject of one source's content; `collect` adds where it came from."""
    return {"locator": locator, "reason": reason, "detail": detail}


def read_texts(path: Path, source_type: str, settings: Settings, notes: list[str]) -> tuple[list[dict], list[dict]]:
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
            rejects += [bad(prefix + loc, "empty_text", why) for loc, why in empty]
        return records, rejects
    if suffix in files.DOCUMENT_TYPES:
        return read_document(path, settings), []
    if suffix in tabular.TABULAR_TYPES:
        rows, malformed = tabular.read_table(path)
        records, empty = tabular.rows_to_records(rows, mapping_for(rows), "")
        return records, ([bad(loc, "malformed_row", why) for loc, why in malformed]
                         + [bad(loc, "empty_text", why) for loc, why in empty])
    if suffix in sql.SQLITE_TYPES:
        return read_sqlite(path, settings)
    return [], []


def read_conversations(path: Path, source_type: str, settings: Settings) -> tuple[list[dict], list[dict]]:
    """One conversation per row; documents are refused."""
    mapping = settings.sources.tabular
    suffix = path.suffix.lower()
    if source_type == HF_DATASET:
        records, rejects = [], []
        for split, rows in tabular.read_hf_dataset(path).items():
            prefix = f"split {split}; " if split else ""
            split_records, malformed = tabular.rows_to_conversations(rows, mapping)
            records += [{**r, "locator": prefix + r["locator"]} for r in split_records]
            rejects += [bad(prefix + loc, "malformed_conversation", why) for loc, why in malformed]
        return records, rejects
    if suffix in files.DOCUMENT_TYPES:
        return [], [bad(None, "not_a_conversation", NOT_A_CONVERSATION)]
    if suffix in tabular.TABULAR_TYPES:
        rows, malformed_rows = tabular.read_table(path)
        records, malformed = tabular.rows_to_conversations(rows, mapping)
        return records, ([bad(loc, "malformed_row", why) for loc, why in malformed_rows]
                         + [bad(loc, "malformed_conversation", why) for loc, why in malformed])
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
            rejects += [bad(f"table {table}; {loc}", "malformed_conversation", why) for loc, why in malformed]
        return records, rejects
    return [], []


def read_document(path: Path, settings: Settings) -> list[dict]:
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


def read_sqlite(path: Path, settings: Settings) -> tuple[list[dict], list[dict]]:
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


def text_query_rows(rows: list[tuple[str, dict]], source, uri: str) -> tuple[list[dict], list[dict]]:
    """Records and rejects from the (locator, row) pairs of a configured SQL query of labeled texts."""
    records, empty = tabular.rows_to_records(rows, source, uri)
    return records, [bad(loc, "empty_text", why) for loc, why in empty]


def conversation_query_rows(rows: list[tuple[str, dict]], source) -> tuple[list[dict], list[dict]]:
    """Records and rejects from the (locator, row) pairs of a configured SQL query of conversations."""
    records, malformed = tabular.rows_to_conversations(rows, source)
    return records, [bad(loc, "malformed_conversation", why) for loc, why in malformed]
