"""Human review in Label Studio: import tasks with the model's prediction and score, and a labeling config.

`exports/review/tasks.json` is a Label Studio import file, highest review priority first (the expected value
of a label: labeling/priority.py), and `exports/review/label_config.xml` the labeling interface for the label
set. Each task carries the model's prediction with its confidence (`predictions[].score`), the priority and
its parts as `data` fields (columns the Label Studio data manager can sort and filter by), and in `meta` the
annotators to ask (labeling/routing.py). Label the tasks, export the project as JSON (or CSV
`record_id,annotator,label`) and drop the file into `annotations/`. Conversations have no labels: their
review items are conflicting instructions (labeling/conflicts.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import polars as pl

from finetune_pipeline.atomic import write_text
from finetune_pipeline.labeling import priority as pr
from finetune_pipeline.labeling.routing import Reliability, route
from finetune_pipeline.settings import ReviewSettings

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
    # The expected value of a label (labeling/priority.py) and who to ask (labeling/routing.py); null for conflicts.
    "priority": pl.Float64,
    "uncertainty": pl.Float64,
    "margin": pl.Float64,
    "entropy": pl.Float64,
    "disagreement": pl.Float64,
    "class_need": pl.Float64,
    "annotators_needed": pl.Int64,
    "suggested_annotators": pl.String,  # JSON list
    "not_routed_to": pl.String,  # JSON list: annotators under labeling.review.reliability_floor on this item
}
SCORE_COLUMNS = ("priority", "uncertainty", "margin", "entropy", "disagreement", "class_need")
ROUTING_COLUMNS = (*SCORE_COLUMNS, "annotators_needed", "suggested_annotators", "not_routed_to")


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


def order_review_queue(review: pl.DataFrame, labels: list[str], probabilities: dict[str, np.ndarray],
                       annotations: pl.DataFrame, experts: set[str], counts: dict[str, int], target: int,
                       cfg: ReviewSettings, reliability: Reliability) -> pl.DataFrame:
    """`review` with its priority, the parts of it, the annotators needed and suggested (formula in
    labeling/priority.py), highest priority first. `probabilities`: record_id -> the model's label
    probabilities (in `labels` order); `annotations`: every valid annotation so far; `counts`: labeled
    records per class; `target`: the label target."""
    if review.is_empty() or not labels:
        return review
    votes = {r: v for r, v in annotations.group_by("record_id").agg(pl.col("label")).iter_rows()}
    labeled_by = {r: set(a) for r, a in annotations.group_by("record_id").agg(pl.col("annotator")).iter_rows()}
    need = pr.class_need(counts, labels, target)
    rows, items = [], []
    for row in review.iter_rows(named=True):
        record_votes = list(votes.get(row["record_id"], []))
        if row["record_id"] in probabilities:
            probs = np.asarray(probabilities[row["record_id"]], dtype=float)
        elif len(record_votes) >= 2:
            probs = pr.vote_shares(record_votes, labels)
        else:
            top = labels.index(row["label"]) if row["label"] in labels else 0
            probs = pr.probabilities_from_confidence(row["score"] if row["score"] is not None else 1.0 / len(labels),
                                                     len(labels), top)
        margin, entropy = pr.margin_and_entropy(probs)
        unsure = pr.uncertainty(probs)
        split = pr.disagreement(record_votes, len(labels))
        doubt = pr.doubt(unsure, split)
        class_need = need.get(row["label"], 1.0)
        needed = pr.annotators_needed(doubt, cfg.min_annotators, cfg.max_annotators)
        rows.append({**row, "priority": round(pr.priority(doubt, class_need, cfg.class_need_weight), 6),
                     "uncertainty": round(unsure, 6), "margin": round(margin, 6), "entropy": round(entropy, 6),
                     "disagreement": round(split, 6), "class_need": round(class_need, 6), "annotators_needed": needed})
        items.append((row["record_id"], probs, needed))
    ordered = pl.DataFrame(rows, schema=REVIEW_SCHEMA).sort(["priority", "record_id"], descending=[True, False])
    pool = list(dict.fromkeys([a for a in sorted(annotations["annotator"].unique().to_list()) if a not in experts]
                              + list(cfg.annotators)))
    order = {r: i for i, r in enumerate(ordered["record_id"])}
    routes = route(sorted(items, key=lambda item: order[item[0]]), pool, labeled_by, reliability,
                   cfg.reliability_floor)
    return ordered.with_columns(
        pl.Series("suggested_annotators", [json.dumps(routes[r][0]) for r in ordered["record_id"]], pl.String),
        pl.Series("not_routed_to", [json.dumps(routes[r][1]) for r in ordered["record_id"]], pl.String))


def review_tasks(review: pl.DataFrame) -> list[dict]:
    """Label Studio import tasks, highest priority first (then lowest score), each with the prediction
    pre-selected and its confidence as the prediction's score, the priority and its parts in `data`, the
    annotators to ask in `meta` (conflicts: their choices, no prediction)."""
    tasks = []
    for row in review.sort(["priority", "score", "record_id"], descending=[True, False, False],
                           nulls_last=[True, False, False]).iter_rows(named=True):
        if row["options"] is not None:
            tasks.append({"data": {"text": row["text"], "record_id": row["record_id"], "reason": row["reason"],
                                   "options": json.loads(row["options"]), "source_uri": row["source_uri"],
                                   "locator": row["locator"]}})
            continue
        suggested = json.loads(row["suggested_annotators"]) if row["suggested_annotators"] else []
        scores = {c: row[c] for c in SCORE_COLUMNS if row[c] is not None}
        tasks.append({
            "data": {"text": row["text"], "record_id": row["record_id"], "reason": row["reason"],
                     "source_uri": row["source_uri"], "locator": row["locator"], **scores,
                     **({"annotators_needed": row["annotators_needed"], "suggested_annotators": ", ".join(suggested)}
                        if row["annotators_needed"] is not None else {})},
            "meta": {"scores": scores, "annotators_needed": row["annotators_needed"], "suggested_annotators": suggested,
                     "not_routed_to": json.loads(row["not_routed_to"]) if row["not_routed_to"] else []},
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
    Without labels (conversations) the config is the conflict one. Pending preference pairs (reason
    `pairwise`) go to their own files (`write_pairwise_export`)."""
    config = label_config_xml(labels) if labels else conflict_config_xml()
    pairwise = pl.col("reason").eq_missing(PAIRWISE_REASON)
    return {
        "tasks": write_text(json.dumps(review_tasks(review.filter(~pairwise)), indent=1, ensure_ascii=False),
                            folder / "tasks.json"),
        "label_config": write_text(config, folder / "label_config.xml"),
        **write_pairwise_export(review.filter(pairwise), folder),
    }


# ---- pairwise review ("which answer is better?", labeling/pairwise.py): its own tasks and config

PAIRWISE_REASON = "pairwise"  # the review-queue reason of a pending preference pair
PAIRWISE_TASKS, PAIRWISE_CONFIG = "pairwise_tasks.json", "pairwise_label_config.xml"
PAIRWISE_CHOICES = (("A is better", "A"), ("B is better", "B"), ("Tie", "tie"))  # (value shown, alias exported)


def pairwise_config_xml() -> str:
    """A Label Studio labeling config: the prompt, answers A and B side by side, and one single choice whose
    alias (A, B or tie) is what the export holds. (Label Studio's `<Pairwise>` tag has no tie, and exports
    `{"selected": "left"}`, which labeling/annotations.py does not read.)"""
    choices = "\n".join(f"    <Choice value={quoteattr(value)} alias={quoteattr(alias)}/>"
                        for value, alias in PAIRWISE_CHOICES)
    return ('<View>\n  <Header value="Which answer is better?"/>\n  <Text name="prompt" value="$prompt"/>\n'
            '  <View style="display: grid; grid-template-columns: 1fr 1fr; column-gap: 1em">\n'
            '    <View>\n      <Header value="A"/>\n      <Text name="answer_a" value="$answer_a"/>\n    </View>\n'
            '    <View>\n      <Header value="B"/>\n      <Text name="answer_b" value="$answer_b"/>\n    </View>\n'
            '  </View>\n'
            '  <Choices name="preference" toName="prompt" choice="single" required="true" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def pairwise_tasks(review: pl.DataFrame) -> list[dict]:
    """Label Studio import tasks of the pending pairs in `review` (rows with reason `pairwise`, their answers
    and ids in `options` as a JSON object), in record-id order; the texts are already PII-redacted."""
    tasks = []
    for row in review.filter(pl.col("reason") == PAIRWISE_REASON).sort("record_id").iter_rows(named=True):
        item = json.loads(row["options"])
        tasks.append({"data": {"record_id": row["record_id"], "prompt": row["text"], "answer_a": item["answer_a"],
                               "answer_b": item["answer_b"], "answer_a_id": item["answer_a_id"],
                               "answer_b_id": item["answer_b_id"], "origin": item["origin"],
                               "source_uri": row["source_uri"], "locator": row["locator"]},
                      "meta": {"annotations_so_far": item["annotations"], "agreement": row["score"]}})
    return tasks


def write_pairwise_export(review: pl.DataFrame, folder: Path) -> dict[str, Path]:
    """Write `pairwise_tasks.json` and `pairwise_label_config.xml` under `folder` when `review` holds pending
    pairs, or when a task file of an earlier run is there (it is then emptied); otherwise nothing (the kinds
    without pairs keep their exports as they were)."""
    tasks = pairwise_tasks(review)
    if not tasks and not (folder / PAIRWISE_TASKS).exists():
        return {}
    return {"pairwise_tasks": write_text(json.dumps(tasks, indent=1, ensure_ascii=False), folder / PAIRWISE_TASKS),
            "pairwise_label_config": write_text(pairwise_config_xml(), folder / PAIRWISE_CONFIG)}
