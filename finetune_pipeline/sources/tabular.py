"""Tabular exports (.csv, .jsonl, .json, .parquet, Hugging Face `save_to_disk` folders): one record per row,
columns mapped by `finetune.yaml`; for instruction data one conversation per row (see `conversations.py`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl

from finetune_pipeline.settings import TabularSource
from finetune_pipeline.sources import conversations

TABULAR_TYPES = {".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


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
    if suffix == ".json":
        try:
            value = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            return [], [("line " + str(exc.lineno), f"malformed JSON ({exc.msg}); fix the file")]
        if not isinstance(value, list):
            return [], [("file", "a .json source must hold a top-level list of objects; "
                                 "write one object per row (or use .jsonl)")]
        rows, bad = [], []
        for number, item in enumerate(value, start=1):
            if isinstance(item, dict):
                rows.append((f"item {number}", item))
            else:
                bad.append((f"item {number}", "each item of the list must be an object with named fields"))
        return rows, bad
    raise ValueError(f"unsupported table type {suffix}")


# A column is the text column without being named when its values are, on average, at least this many times
# longer than those of every other string column: a clear choice, not a guess between similar columns.
CLEARLY_LONGER = 2.0
MIN_TEXT_CHARS = 10  # and at least this long on average: a column of codes or single words is not the text


def recognised_mapping(rows: list[tuple[str, dict]], mapping: TabularSource, labels: list[str]
                       ) -> tuple[TabularSource, str | None]:
    """The column mapping for a table whose configured text or label column is absent, when the choice is clear:
    the one string column clearly longer than the others (CLEARLY_LONGER, MIN_TEXT_CHARS) for the text; the one
    column whose values all fall in `labels` for the label. A column set explicitly in finetune.yaml is never replaced.
    Returns the mapping and what was recognised (None: nothing); raises MissingColumn, naming the candidates
    and the setting, when the text column is missing and no column is clearly the text."""
    if not rows or mapping.prompt_column is not None:
        return mapping, None
    columns = sorted(set().union(*(row.keys() for _, row in rows)), key=str)
    explicit = mapping.model_fields_set
    if mapping.text_column not in columns and "text_column" in explicit:
        return mapping, None  # the configured text column is missing: rows_to_records rejects the table
    update: dict[str, str] = {}
    chosen: list[str] = []  # "text column 'quote'", ...
    unclear: list[str] = []
    label_set = {str(label) for label in labels}
    in_set: list[str] = []
    if mapping.label_column not in columns and "label_column" not in explicit and label_set:
        in_set = [c for c in columns if c != mapping.text_column and c != mapping.id_column
                  and _values_within(rows, c, label_set)]
        if len(in_set) == 1:
            update["label_column"] = in_set[0]
            chosen.append(f"label column {in_set[0]!r}")
        elif in_set:
            unclear.append(f"no label column: {', '.join(map(repr, in_set))} all hold labels of the set; "
                           "set sources.tabular.label_column to choose")
    if mapping.text_column not in columns and "text_column" not in explicit:
        skip = {mapping.id_column, mapping.label_column, *in_set}  # labels are not the text
        lengths = sorted(((length, c) for c in columns if c not in skip
                          and (length := _mean_string_length(rows, c)) is not None), reverse=True)
        clear = lengths and (len(lengths) == 1 or lengths[0][0] >= CLEARLY_LONGER * lengths[1][0])
        if clear and lengths[0][0] >= MIN_TEXT_CHARS:
            update["text_column"] = lengths[0][1]
            chosen.insert(0, f"text column {lengths[0][1]!r}")
        else:
            found = ", ".join(f"{c} ({length:.0f} chars on average)" for length, c in lengths) or "no string column"
            raise MissingColumn(
                f"no column {mapping.text_column!r} and no column clearly the text (string columns: {found}); "
                "set sources.tabular.text_column in finetune.yaml")
    if chosen:
        chosen = [", ".join(chosen) + " (recognised; set sources.tabular.text_column / label_column to choose)"]
    note = "; ".join(chosen + unclear) or None
    return mapping.model_copy(update=update), note


def _values_within(rows: list[tuple[str, dict]], column: str, allowed: set[str]) -> bool:
    """Every non-empty value of `column` is in `allowed`, and at least one is there."""
    values = [str(row.get(column)).strip() for _, row in rows if row.get(column) not in (None, "")]
    return bool(values) and all(value in allowed for value in values)


def _mean_string_length(rows: list[tuple[str, dict]], column: str) -> float | None:
    """Mean length of the column's non-empty values when they are all strings; None for other columns."""
    values = [row.get(column) for _, row in rows if row.get(column) not in (None, "")]
    if not values or not all(isinstance(value, str) for value in values):
        return None
    return sum(map(len, values)) / len(values)


HF_DATASET_MARKERS = ("dataset_dict.json", "state.json")


def is_hf_dataset_dir(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` (state.json) or `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / marker).is_file() for marker in HF_DATASET_MARKERS)


def read_hf_dataset(path: Path) -> dict[str | None, list[tuple[str, dict]]]:
    """Rows of a saved Dataset (key None) or of each split of a DatasetDict, as (row locator, mapping).
    Arrow files, memory-mapped; nothing is unpickled."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    return {split: [(f"row {i + 1}", row) for i, row in enumerate(dataset.to_polars().iter_rows(named=True))]
            for split, dataset in parts}


def rows_to_records(rows: list[tuple[str, dict]], mapping: TabularSource, origin: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Map table rows onto record fields. Raises MissingColumn when a configured text column is absent.

    With prompt/response columns the record carries `prompt` and `response`, and `text` is both joined
    by a blank line, so cleaning and deduplication see the whole example."""
    instruction = mapping.prompt_column is not None
    needed = [mapping.prompt_column, mapping.response_column] if instruction else [mapping.text_column]
    columns = set().union(*(row.keys() for _, row in rows)) if rows else set()
    for column in needed:
        if rows and column not in columns:
            field = "prompt_column/response_column" if instruction else "text_column"
            raise MissingColumn(
                f"no column {column!r} (found: {', '.join(sorted(map(str, columns)))}); "
                f"set sources.tabular.{field} in finetune.yaml"
            )
    records, bad = [], []
    for locator, row in _named_rows(rows, mapping):
        values = [row.get(column) for column in needed]
        empty = [column for column, value in zip(needed, values) if value is None or not str(value).strip()]
        if empty:
            bad.append((locator, f"empty {', '.join(map(repr, empty))} value"))
            continue
        label = row.get(mapping.label_column) if mapping.label_column else None
        label = str(label).strip() if label not in (None, "") else None
        record = {
            "text": "\n\n".join(str(v) for v in values),
            "locator": locator,
            "label": label,
            "label_source": "column" if label is not None else None,
        }
        if instruction:
            record["prompt"], record["response"] = str(values[0]), str(values[1])
        records.append(record)
    return records, bad


def _named_rows(rows: list[tuple[str, dict]], mapping: TabularSource) -> list[tuple[str, dict]]:
    """Rows with their locator: the id column's value names the row; an id used twice in one source keeps
    the row number too."""
    ids = [row.get(mapping.id_column) for _, row in rows] if mapping.id_column else []
    repeated = {value for value, count in Counter(ids).items() if count > 1}
    named = []
    for locator, row in rows:
        key = row.get(mapping.id_column) if mapping.id_column else None
        if key not in (None, ""):
            locator = f"{mapping.id_column}={key}" + (f"; {locator}" if key in repeated else "")
        named.append((locator, row))
    return named


def conversation_columns(mapping: TabularSource) -> list[str]:
    """Every column that marks a conversation format, in the order they are recognised."""
    return [mapping.messages_column, mapping.conversations_column, mapping.instruction_column,
            mapping.prompt_column or "prompt"]


def conversation_format(columns: set[str], mapping: TabularSource) -> str:
    """Which conversation format a table's columns hold; MissingColumn when none."""
    prompt, response = mapping.prompt_column or "prompt", mapping.response_column or "response"
    for name, needed in (("messages", [mapping.messages_column]), ("sharegpt", [mapping.conversations_column]),
                         ("alpaca", [mapping.instruction_column, mapping.output_column]),
                         ("prompt_response", [prompt, response])):
        if all(c in columns for c in needed):
            return name
    raise MissingColumn(
        f"no conversation columns (found: {', '.join(sorted(map(str, columns)))}); instruction data needs "
        f"{mapping.messages_column!r}, {mapping.conversations_column!r}, {mapping.instruction_column!r} + "
        f"{mapping.output_column!r}, or {prompt!r} + {response!r}; set sources.tabular.messages_column (or "
        f"conversations_column, instruction_column/output_column, prompt_column/response_column) in finetune.yaml"
    )


def rows_to_conversations(rows: list[tuple[str, dict]], mapping: TabularSource
                          ) -> tuple[list[dict], list[tuple[str, str]]]:
    """One instruction record per row, in whichever format the columns hold; a row whose conversation is
    malformed comes back as (locator, what is wrong and what to do). Raises MissingColumn when no format fits."""
    if not rows:
        return [], []
    columns = set().union(*(row.keys() for _, row in rows))
    kind = conversation_format(columns, mapping)
    records, bad = [], []
    for locator, row in _named_rows(rows, mapping):
        try:
            if kind == "messages":
                turns = conversations.openai_turns(row.get(mapping.messages_column), mapping.messages_column)
            elif kind == "sharegpt":
                turns = conversations.sharegpt_turns(row.get(mapping.conversations_column),
                                                     mapping.conversations_column)
            elif kind == "alpaca":
                turns = conversations.alpaca_turns(
                    row.get(mapping.instruction_column), row.get(mapping.input_column),
                    row.get(mapping.output_column),
                    (mapping.instruction_column, mapping.input_column, mapping.output_column))
            else:
                prompt, response = mapping.prompt_column or "prompt", mapping.response_column or "response"
                turns = conversations.prompt_response_turns(row.get(prompt), row.get(response), (prompt, response))
        except conversations.MalformedConversation as exc:
            bad.append((locator, str(exc)))
            continue
        category = row.get(mapping.category_column) if mapping.category_column else None
        category = str(category).strip() if category not in (None, "") and str(category).strip() else None
        records.append({**conversations.conversation_fields(turns), "locator": locator, "label": None,
                        "label_source": None, "category": category})
    return records, bad
