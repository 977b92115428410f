"""Human review in Label Studio: import tasks with the model's prediction and score, and a labeling config.

`exports/review/tasks.json` is a Label Studio import file (lowest score first), and
`exports/review/label_config.xml` the labeling interface for the label set. Label the tasks, export the
project as JSON (or CSV `record_id,annotator,label`) and drop the file into `annotations/`. Conversations
have no labels: their review items are conflicting instructions (labeling/conflicts.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import polars as pl

from finetune_pipeline.atomic import write_text

FROM_NAME, TO_NAME = "label", "text"  # the names in the labeling config, echoed in every prediction

REVIEW_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "text": pl.String,  # already PII-redacted by the cleaning stage
    "label": pl.String,  # the prediction (model label or crowd consensus)
    "score": pl.Float64,  # model confidence, or annotator agreement for a disagreement
    "reason": pl.String,  # low_confidence | disagreement | audit
    "label_model": pl.String,  # what predicted it
    "source_uri": pl.String,
    "locator": pl.String,
    "options": pl.String,  # conflicts: the choices as a JSON list of {value, alias}; null for label review
}


def empty_review() -> pl.DataFrame:
    return pl.DataFrame(schema=REVIEW_SCHEMA)


def label_config_xml(labels: list[str]) -> str:
    """A Label Studio labeling config: the text and one single-choice question over the label set."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View>\n  <Text name="{TO_NAME}" value="$text"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="false">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def conflict_config_xml() -> str:
    """A Label Studio labeling config for conflicting instructions: the prompt and its numbered answers,
    and one single choice among the task's own options (Answer 1..n, Drop all)."""
    return (f'<View>\n  <Text name="{TO_NAME}" value="$text"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" value="$options"/>\n</View>\n')


def review_tasks(review: pl.DataFrame) -> list[dict]:
    """Label Studio import tasks, lowest score first, each with the prediction pre-selected (conflicts:
    their choices, no prediction)."""
    tasks = []
    for row in review.sort(["score", "record_id"], nulls_last=False).iter_rows(named=True):
        if row["options"] is not None:
            tasks.append({"data": {"text": row["text"], "record_id": row["record_id"], "reason": row["reason"],
                                   "options": json.loads(row["options"]), "source_uri": row["source_uri"],
                                   "locator": row["locator"]}})
            continue
        tasks.append({
            "data": {"text": row["text"], "record_id": row["record_id"], "reason": row["reason"],
                     "source_uri": row["source_uri"], "locator": row["locator"]},
            "predictions": [{
                "model_version": row["label_model"] or "",
                "score": row["score"],
                "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                            "value": {"choices": [row["label"]]}}],
            }],
        })
    return tasks


def write_review_export(review: pl.DataFrame, labels: list[str], folder: Path) -> dict[str, Path]:
    """Write `tasks.json` and `label_config.xml` under `folder` (replaced whole, so a reader never sees half).
    Without labels (conversations) the config is the conflict one."""
    config = label_config_xml(labels) if labels else conflict_config_xml()
    return {
        "tasks": write_text(json.dumps(review_tasks(review), indent=1, ensure_ascii=False), folder / "tasks.json"),
        "label_config": write_text(config, folder / "label_config.xml"),
    }
