"""Tabular exports (.csv, .jsonl, .parquet): one record per row, columns mapped by `finetune.yaml`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from finetune_pipeline.settings import TabularSource

TABULAR_TYPES = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


class MissingColumn(Exception):
    """The configured text column is not in the file."""


def read_table(path: Path) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
    """Rows of a table as (row locator, mapping), and bad rows as (locator, why)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
        return [(f"row {i + 1}", row) for i, row in enumerate(frame.iter_rows(named=True))], []
    if suffix == ".parquet":
        frame = pl.read_parquet(path)
        return [(f"row {i + 1}", row) for i, row in enumerate(frame.iter_rows(named=True))], []
    if suffix == ".jsonl":
        rows, bad = [], []
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    bad.append((f"line {number}", f"malformed JSON ({exc.msg}); fix or remove the line"))
                    continue
                if not isinstance(value, dict):
                    bad.append((f"line {number}", "a JSON line must be an object with named fields"))
                    continue
                rows.append((f"line {number}", value))
        return rows, bad
    raise ValueError(f"unsupported table type {suffix}")


def rows_to_records(rows: list[tuple[str, dict]], mapping: TabularSource, origin: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Map table rows onto record fields. Raises MissingColumn when the text column is absent."""
    columns = set().union(*(row.keys() for _, row in rows)) if rows else set()
    if rows and mapping.text_column not in columns:
        raise MissingColumn(
            f"no column {mapping.text_column!r} (found: {', '.join(sorted(map(str, columns)))}); "
            f"set sources.tabular.text_column in finetune.yaml"
        )
    records, bad = [], []
    for locator, row in rows:
        text = row.get(mapping.text_column)
        if mapping.id_column and row.get(mapping.id_column) not in (None, ""):
            locator = f"{mapping.id_column}={row[mapping.id_column]}"
        if text is None or not str(text).strip():
            bad.append((locator, f"empty {mapping.text_column!r} value"))
            continue
        label = row.get(mapping.label_column) if mapping.label_column else None
        label = str(label).strip() if label not in (None, "") else None
        records.append({
            "text": str(text),
            "locator": locator,
            "label": label,
            "label_source": "column" if label is not None else None,
        })
    return records, bad
