"""Conflicting instructions decided by a person (`dedup.conflicts: review`, the default).

Deduplication marks the competing answers of a conflict with one `conflict_id` (dedup/conflicts.py).
Here each conflict is either decided by the annotations in `annotations/` or held for review:

- a Label Studio task per conflict (`exports/review/tasks.json`): the prompt and the numbered answers,
  with the choices "Answer 1" ... "Answer n" and "Drop all" (each choice's alias is the record id, or
  `drop_all`, so the export names the record); the task's `record_id` is the conflict id. A CSV row
  `record_id,annotator,label` with the conflict id and "Answer 2", a record id or `drop_all` works too;
- the choice of most annotators wins (a tie stays open): the chosen answer is kept, the others are
  rejected as `conflicting_instruction` naming the choice; "Drop all" rejects every answer;
- an undecided conflict keeps all its answers out of training as `in_review` rejects, and its task in
  the review queue. The `new_annotations` sensor re-runs labeling when the export is dropped in.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from finetune_pipeline.dedup.exact import keep_order
from finetune_pipeline.dedup.conflicts import DROP_ALL, conflict_choice, context_text
from finetune_pipeline.labeling.review import REVIEW_SCHEMA, empty_review
from finetune_pipeline.records import empty_rejects, reject_rows

STAGE = "labeled_corpus"
REVIEW_HINT = ("pick the answer to keep in Label Studio (exports/review/tasks.json) and drop the export into "
               "annotations/")


@dataclass
class ConflictReview:
    kept: pl.DataFrame  # without the `conflict_id` column
    rejected: pl.DataFrame
    review: pl.DataFrame  # one row per undecided conflict
    counts: dict[str, int] = field(default_factory=dict)  # conflicts: in_review, kept_one, dropped_all
    records_in_review: int = 0
    problems: list[dict] = field(default_factory=list)
    used_annotations: set[str] = field(default_factory=set)  # conflict ids the annotations were for


def _decision(votes: list[str]) -> str | None:
    """The choice of most annotators, or None on a tie or no vote."""
    ranked = Counter(votes).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def review_conflicts(corpus: pl.DataFrame, annotations: pl.DataFrame) -> ConflictReview:
    """Apply the annotators' choices to the conflicts in `corpus`; hold the undecided ones for review."""
    if "conflict_id" not in corpus.columns:
        return ConflictReview(corpus, empty_rejects(), empty_review())
    in_conflict = pl.col("conflict_id").is_not_null()
    members = keep_order(corpus.filter(in_conflict))
    kept = [corpus.filter(~in_conflict)]
    rejected, review, problems = [], [], []
    counts = Counter()
    held = 0
    by_conflict = {cid: rows for (cid,), rows in members.group_by("conflict_id", maintain_order=True)}
    votes_of = {cid: rows for (cid,), rows in annotations.filter(pl.col("record_id").is_in(list(by_conflict)))
                .group_by("record_id", maintain_order=True)}
    for cid, rows in by_conflict.items():
        candidates = rows["record_id"].to_list()
        votes = []
        for ann in (votes_of[cid].iter_rows(named=True) if cid in votes_of else []):
            choice = conflict_choice(ann["label"], candidates)
            if choice is None:
                problems.append({"file": ann["source_file"], "where": f"conflict {cid}", "reason":
                                 f"label '{ann['label']}' names no answer of this conflict; use 'Answer 1'.."
                                 f"'Answer {len(candidates)}', a record id, or drop_all"})
            else:
                votes.append(choice)
        decided = _decision(votes)
        if decided == DROP_ALL:
            counts["dropped_all"] += 1
            rejected.append(reject_rows(rows, STAGE, "conflicting_instruction", pl.format(
                "{}: same prompt, answers disagree; reviewers dropped every answer ({} of {} votes)",
                pl.lit(cid), pl.lit(votes.count(decided)), pl.lit(len(votes)))))
        elif decided is not None:
            counts["kept_one"] += 1
            chosen = pl.col("record_id") == decided
            kept.append(rows.filter(chosen))
            rejected.append(reject_rows(rows.filter(~chosen), STAGE, "conflicting_instruction", pl.format(
                "{}: same prompt, answers disagree; reviewers chose {} ({} of {} votes)", pl.lit(cid),
                pl.lit(decided), pl.lit(votes.count(decided)), pl.lit(len(votes))), duplicate_of=pl.lit(decided)))
        else:
            counts["in_review"] += 1
            held += rows.height
            why = "annotators are split" if votes else "no decision yet"
            rejected.append(reject_rows(rows, STAGE, "in_review", pl.format(
                "{}: same prompt, {} answers that disagree ({}); " + REVIEW_HINT, pl.lit(cid),
                pl.lit(rows.height), pl.lit(why))))
            review.append(_review_row(cid, rows))
    return ConflictReview(
        kept=pl.concat(kept, how="diagonal_relaxed").drop("conflict_id"),
        rejected=pl.concat(rejected) if rejected else empty_rejects(),
        review=pl.DataFrame(review, schema=REVIEW_SCHEMA) if review else empty_review(),
        counts=dict(counts), records_in_review=held, problems=problems, used_annotations=set(votes_of))


def _review_row(cid: str, rows: pl.DataFrame) -> dict:
    """The review item of one conflict: the prompt, the numbered answers, and choices aliased to record ids
    (the texts are already PII-redacted by the cleaning stage)."""
    first = rows.row(0, named=True)
    answers = "\n\n".join(f"Answer {k}:\n{r}" for k, r in enumerate(rows["response"].to_list(), start=1))
    options = [{"value": f"Answer {k}", "alias": rid} for k, rid in enumerate(rows["record_id"].to_list(), start=1)]
    options.append({"value": "Drop all", "alias": DROP_ALL})
    return {"record_id": cid, "text": f"{context_text(first['messages'])}\n\n{answers}", "label": None,
            "score": None, "reason": "conflict", "label_model": None, "source_uri": first["source_uri"],
            "locator": first["locator"], "options": json.dumps(options)}
