"""Human labels coming back from review: the files dropped into `annotations/`.

Two formats are read:
- Label Studio JSON export (`*.json`): a list of tasks, each with `data.record_id` and `annotations[]`,
  whose `result[]` holds `{"type": "choices", "value": {"choices": [label]}}` and whose `completed_by`
  is a user id (int) or a user object with an `email`. Cancelled (skipped) annotations are ignored.
  Label Studio's JSON-MIN export (flat `{"record_id", "label", "annotator"}` objects) is read too.
- CSV (`*.csv`) with the header `record_id,annotator,label`.

A bad file or row never stops the run: it is listed as a problem with the file and the reason.
An annotator who labeled the same record twice counts once, with the label read last (files in name order).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

ANNOTATIONS_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "annotator": pl.String,
    "label": pl.String,
    "source_file": pl.String,  # relative to the annotations folder
}
ANNOTATION_SUFFIXES = (".json", ".csv")
CSV_COLUMNS = ("record_id", "annotator", "label")


def empty_annotations() -> pl.DataFrame:
    return pl.DataFrame(schema=ANNOTATIONS_SCHEMA)


def annotation_files(folder: Path) -> list[Path]:
    """The annotation files under `folder` (any depth), hidden files skipped, in name order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def load_annotations(folder: Path) -> tuple[pl.DataFrame, list[dict]]:
    """All annotations under `folder` as (record_id, annotator, label, source_file) rows, and the problems
    found, each `{"file", "where", "reason"}`."""
    rows: list[dict] = []
    problems: list[dict] = []
    for path in annotation_files(folder):
        name = path.relative_to(folder).as_posix()
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(_problem(name, "", f"unreadable ({type(exc).__name__}); save it as UTF-8"))
            continue
        parse = parse_label_studio if path.suffix.lower() == ".json" else parse_csv
        found, bad = parse(text)
        rows += [{**r, "source_file": name} for r in found]
        problems += [_problem(name, where, reason) for where, reason in bad]
    if not rows:
        return empty_annotations(), problems
    frame = pl.DataFrame(rows, schema=ANNOTATIONS_SCHEMA)
    # One vote per annotator and record: the last one read wins (a corrected export replaces an older one).
    frame = frame.unique(subset=["record_id", "annotator"], keep="last", maintain_order=True)
    return frame, problems


def _problem(file: str, where: str, reason: str) -> dict:
    return {"file": file, "where": where, "reason": reason}


def _annotator(completed_by) -> str | None:
    """Label Studio writes `completed_by` as a user id, or as a user object in some exports."""
    if isinstance(completed_by, dict):
        value = completed_by.get("email") or completed_by.get("id")
        return None if value is None else str(value)
    if isinstance(completed_by, (int, str)) and not isinstance(completed_by, bool) and str(completed_by).strip():
        return str(completed_by).strip()
    return None


def _choice(result: list) -> tuple[str | None, str | None]:
    """The single chosen label of one annotation's `result`, or (None, why)."""
    choices = [c for item in result if isinstance(item, dict) and item.get("type") == "choices"
               for c in (item.get("value") or {}).get("choices") or []]
    if not choices:
        return None, "no choice selected"
    if len(set(choices)) > 1:
        return None, f"{len(set(choices))} different choices; one label per record is expected"
    return str(choices[0]), None


def parse_label_studio(text: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows and (where, reason) problems from a Label Studio JSON (or JSON-MIN) export."""
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [("", f"not valid JSON (line {exc.lineno}); export it again from Label Studio")]
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        return [], [("", "expected a list of tasks (Label Studio JSON export)")]
    rows, bad = [], []
    for n, task in enumerate(tasks):
        where = f"task {n}"
        if not isinstance(task, dict):
            bad.append((where, "not a JSON object"))
            continue
        data = task.get("data") if isinstance(task.get("data"), dict) else task
        record_id = data.get("record_id")
        if not record_id:
            bad.append((where, "no data.record_id; import the tasks from exports/review/tasks.json"))
            continue
        where = f"task {n} (record {record_id})"
        if "annotations" not in task:  # JSON-MIN: one flat object per annotation
            label, annotator = task.get("label"), _annotator(task.get("annotator") or task.get("completed_by"))
            if isinstance(label, dict):
                label = (label.get("choices") or [None])[0]
            if not label or not annotator:
                bad.append((where, "no annotations, or a JSON-MIN row without label and annotator"))
                continue
            rows.append({"record_id": str(record_id), "annotator": annotator, "label": str(label)})
            continue
        for m, annotation in enumerate(task.get("annotations") or []):
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            annotator = _annotator(annotation.get("completed_by"))
            label, why = _choice(annotation.get("result") or [])
            if annotator is None:
                bad.append((f"{where}, annotation {m}", "no completed_by (annotator)"))
            elif label is None:
                bad.append((f"{where}, annotation {m}", why))
            else:
                rows.append({"record_id": str(record_id), "annotator": annotator, "label": label})
    return rows, bad


def parse_csv(text: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows and (where, reason) problems from a CSV with the columns record_id, annotator, label."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        return [], [("header", f"missing column(s) {', '.join(missing)}; expected record_id,annotator,label")]
    rows, bad = [], []
    for n, raw in enumerate(reader, start=2):  # line 1 is the header
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in raw.items()}
        empty = [c for c in CSV_COLUMNS if not row.get(c)]
        if empty:
            bad.append((f"line {n}", f"empty {', '.join(empty)}"))
            continue
        rows.append({c: row[c] for c in CSV_COLUMNS})
    return rows, bad
