"""What every stage did to one record, and why: `finetune-pipeline explain RECORD_ID`.

Read from what the last run stored (stored.py): each stage's value (.pipeline/assets/<stage>/) and its
rejects (.pipeline/rejects/<stage>/), or the single files an earlier version stored. Never reads or prints `text_raw` (the text before redaction): the one
text shown is the cleaned one, with its placeholders (`<EMAIL>`, `<PERSON>`); redactions are counted by kind
(from the `redactions` audit column where cleaning stores it, else from the placeholders), and the source
file and locator shown are those of the last stage that kept the record (cleaning redacts personal data in
them too).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

import polars as pl

from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import CORPUS_STAGES
from finetune_pipeline.stored import stored_frame, stored_rejects, with_datasets_url

STAGES = (*CORPUS_STAGES, "dataset_splits")
PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*)>")
# The columns read from stored values: never `text_raw`.
READ = ("record_id", "text", "source_uri", "source_type", "locator", "content_sha256", "label", "label_source",
        "label_confidence", "ingested_at", "quality_flags", "group_id", "label_model", "label_agreement",
        "augmented_from", "augmentation", "split", "redactions")


class ExplainError(Exception):
    """The record cannot be explained: no such id, an ambiguous prefix, or nothing stored yet."""


@dataclass
class Stored:
    """One stage's stored value (None: not materialized) and rejects (empty when none)."""

    kept: pl.DataFrame | None
    rejected: pl.DataFrame


def _stored(root: DataRoot, stage: str) -> Stored:
    return Stored(stored_frame(root, stage, columns=READ), stored_rejects(root, stage))


def resolve_id(stored: dict[str, Stored], prefix: str) -> str:
    """The one record id starting with `prefix`, among every stage's records and rejects."""
    if not prefix.strip():
        raise ExplainError("give a record id (or the first characters of one)")
    ids: set[str] = set()
    for value in stored.values():
        for frame in (value.kept, value.rejected):
            if frame is not None and "record_id" in frame.columns:
                ids |= set(frame.filter(pl.col("record_id").str.starts_with(prefix))["record_id"].drop_nulls())
    if not ids:
        raise ExplainError(f"no record id starts with {prefix!r} in the stored stages; ids are in the split export "
                           "(exports/splits/*.jsonl), exports/rejects.parquet and the checks' metadata")
    if len(ids) > 1:
        shown = ", ".join(sorted(ids)[:5])
        raise ExplainError(f"{len(ids)} record ids start with {prefix!r} ({shown}{', ...' if len(ids) > 5 else ''}); "
                           "give more characters")
    return ids.pop()


def explain(data_dir, record: str) -> list[str]:
    """Lines telling what each stage did to `record` (an id or a unique prefix of one) and why."""
    root = data_dir if isinstance(data_dir, DataRoot) else DataRoot.resolve(data_dir)
    root = with_datasets_url(root)
    stored = {stage: _stored(root, stage) for stage in STAGES}
    if all(s.kept is None for s in stored.values()):
        raise ExplainError(f"nothing stored under {root.storage}: run `finetune-pipeline run` first")
    record_id = resolve_id(stored, record)
    lines = [f"record {record_id}"]
    last_text, raw_sha = None, None
    copy = _row(stored["augmented_corpus"].kept, record_id)
    stages = STAGES
    if copy is not None and copy.get("augmented_from"):  # made by augmentation: no earlier stage knows it
        stages = STAGES[STAGES.index("augmented_corpus"):]
    where = _where(stored, stages, record_id)
    for stage in stages:
        value = stored[stage]
        row = _row(value.kept, record_id)
        rejected = _row(value.rejected, record_id)
        if rejected is not None:
            lines.append(f"  {stage}: rejected, {rejected['reason']}: {rejected.get('detail') or ''}".rstrip(": "))
            break
        if value.kept is None:
            lines.append(f"  {stage}: not materialized")
            continue
        if row is None:
            lines.append(f"  {stage}: not in the stored value (the stage ran before this record existed, "
                         "or an earlier stage removed it): run again")
            break
        lines += [f"  {stage}: {line}" for line in _what(stage, {**row, **where}, value, raw_sha)]
        raw_sha = raw_sha or row.get("content_sha256")
        last_text = row.get("text") if stage != "raw_corpus" else last_text
    if last_text is not None:
        lines += ["", "text as the last stage stored it (cleaned and redacted; the original is never shown):",
                  last_text]
    return lines


def _where(stored: dict[str, Stored], stages: tuple[str, ...], record_id: str) -> dict:
    """source_uri and locator as the last stage that kept or rejected the record stored them."""
    where = {}
    for stage in stages:
        for frame in (stored[stage].kept, stored[stage].rejected):
            row = _row(frame, record_id)
            if row is not None and row.get("source_uri") is not None:
                where = {"source_uri": row["source_uri"], "locator": row.get("locator")}
    return where


def _redactions(row: dict) -> str:
    """Redactions by kind (and the field, when not the text), never the values."""
    if row.get("redactions"):
        spans = json.loads(row["redactions"])
        kinds = Counter(s["kind"] + (f" in {s['field']}" if s.get("field") not in (None, "text") else "")
                        for s in spans)
    else:
        kinds = Counter(kind.lower() for kind in PLACEHOLDER.findall(row.get("text") or ""))
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"


def _row(frame: pl.DataFrame | None, record_id: str) -> dict | None:
    if frame is None or "record_id" not in frame.columns:
        return None
    rows = frame.filter(pl.col("record_id") == record_id).head(1).to_dicts()
    return rows[0] if rows else None


def _what(stage: str, row: dict, value: Stored, raw_sha: str | None) -> list[str]:
    """What `stage` did to a record it kept."""
    if stage == "raw_corpus":
        label = f"; label {row['label']!r} from the {row['label_source']}" if row.get("label") else "; no label"
        return [f"collected from {row['source_uri']} ({row.get('locator') or 'whole file'}, "
                f"{row.get('source_type')}) at {row.get('ingested_at')}{label}"]
    if stage == "cleaned_corpus":
        redacted = _redactions(row)
        changed = "changed" if raw_sha and row.get("content_sha256") != raw_sha else "unchanged"
        flags = ", ".join(row.get("quality_flags") or []) or "none"
        return [f"kept; text {changed}; redactions by kind: {redacted}; quality flags: {flags}"]
    if stage == "deduplicated_corpus":
        copies = value.rejected.filter(pl.col("duplicate_of") == row["record_id"]) \
            if "duplicate_of" in value.rejected.columns else value.rejected.head(0)
        listed = " (first 10)" if copies.height > 10 else ""
        removed = f"; {copies.height} duplicate(s) of it removed{listed}: " + ", ".join(
            f"{r} ({reason})" for r, reason in copies.select("record_id", "reason").head(10).iter_rows()) \
            if copies.height else "; no duplicate of it found"
        return [f"kept (group {row.get('group_id')}){removed}"]
    if stage == "labeled_corpus":
        if row.get("label") is None:
            return ["no label"]
        confidence = f", confidence {row['label_confidence']:.2f}" if row.get("label_confidence") is not None else ""
        model = f", model said {row['label_model']!r}" if row.get("label_model") not in (None, row["label"]) else ""
        return [f"label {row['label']!r} from the {row.get('label_source')}{confidence}{model}"]
    if stage == "augmented_corpus":
        if row.get("augmented_from"):
            return [f"an augmented copy ({row.get('augmentation')}) of {row['augmented_from']} "
                    "(explain that id for the original's history)"]
        copies = value.kept.filter(pl.col("augmented_from") == row["record_id"]) \
            if "augmented_from" in value.kept.columns else value.kept.head(0)
        if not copies.height:
            return ["kept; no augmented copies"]
        kinds = Counter(copies["augmentation"].to_list()) if "augmentation" in copies.columns else {}
        return [f"kept; {copies.height} augmented copies ("
                + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=str)) + ")"]
    if stage == "dataset_splits":
        return [f"in {row.get('split')} (group {row.get('group_id')})"]
    return ["kept"]
