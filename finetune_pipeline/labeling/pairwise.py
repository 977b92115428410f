"""Pairwise review ("which answer is better?"): a person picks the better of two answers to one prompt, and
the choice, combined over several annotators, becomes a preference pair.

Which prompts go to review: two candidate answers and no preference yet.
- rated answers tied with the best one (UltraFeedback-style rows: `tasks.preference.pairs_by_rating` makes
  no pair of them): `tie_records`;
- the answers of a conflicting instruction (`dedup.conflicts: review`), every two answers of one conflict:
  `conflict_pending` (`conflict_records` as a corpus frame).
Each becomes a *pending pair* record (`PENDING`: true): a pair record whose `chosen` and `rejected` hold
answer A and answer B in a stable order (the answer with the smaller id is A), so cleaning, the PII policy
and dedup treat its turns like any pair's, and the labeling stage holds it until people decide.

The review files, beside the label review's in exports/review/ (written by `review.write_review_export` from
the review-queue rows with reason `pairwise`): `pairwise_tasks.json` (Label Studio import tasks, `data` =
{record_id, prompt, answer_a, answer_b, answer_a_id, answer_b_id, origin, ...}, in record-id order) and
`pairwise_label_config.xml`: the prompt, the two answers side by side and one single choice "A is better" /
"B is better" / "Tie" (aliases A, B, tie). Label Studio's `<Pairwise>` tag has no tie and exports
`{"selected": "left"}`, which the annotations reader does not read; `<Choices>` is read as it is.

Reading back: the Label Studio JSON export (or CSV `record_id,annotator,label` with A, B or tie) dropped into
annotations/ (labeling/annotations.py; the `new_annotations` sensor re-runs labeling). Per pending pair,
the annotators' choices are combined like crowd labels (labeling/consensus.py: experts first, then
Dawid-Skene or majority over the three choices, `labeling.agreement_threshold`): A or B makes the pair
(winner chosen, loser rejected) with `label_source` (human or crowd), `label_confidence` (the posterior),
`label_agreement` and `review_annotators`; a tie is rejected as `pairwise_tie`; a split or an undecided
pair stays in review (`in_review` reject and its task in pairwise_tasks.json). An annotation for a pending
pair that no longer exists (its source erased or changed) is ignored and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

import polars as pl

from finetune_pipeline.labeling.agreement import agreement_report
from finetune_pipeline.labeling.consensus import resolve_annotations
from finetune_pipeline.labeling.annotations import empty_annotations
from finetune_pipeline.labeling.assign import LabelingResult, LabelingStats, keep_unlabeled
from finetune_pipeline.labeling.review import (PAIRWISE_CONFIG, PAIRWISE_REASON, PAIRWISE_TASKS, REVIEW_SCHEMA,
                                               empty_review)
from finetune_pipeline.records import empty_rejects, reject_rows, sha256_text
from finetune_pipeline.settings import LabelingSettings, Settings

STAGE = "labeled_corpus"
PENDING = "pairwise_review"  # true on a pending pair record: chosen/rejected hold answers A/B, no preference yet
TIE_REASON = "pairwise_tie"
A, B, TIE = "A", "B", "tie"
CHOICES = (A, B, TIE)
# What annotators may write (the config's values and aliases, any case) -> the choice.
_CHOICE_NAMES = {"a": A, "a is better": A, "b": B, "b is better": B, "tie": TIE, "tied": TIE}
REVIEW_HINT = (f"pick the better answer in Label Studio (exports/review/{PAIRWISE_TASKS}, config {PAIRWISE_CONFIG}) and "
               f"drop the export into annotations/")
# The pending record's own columns, beside the pair columns (tasks.preference.PAIR_COLUMNS).
PENDING_COLUMNS: dict[str, pl.DataType] = {PENDING: pl.Boolean, "answer_a_id": pl.String, "answer_b_id": pl.String,
                                           "pairwise_origin": pl.String}


def choice_of(label: str | None) -> str | None:
    """The pairwise choice (A, B or tie) an annotation's label names, or None when it names none."""
    return _CHOICE_NAMES.get(str(label).strip().casefold()) if label is not None else None


# ---- which prompts go to review: pending pair records

def pending_record(prompt_messages: list[dict], first: tuple[str, list[dict]], second: tuple[str, list[dict]],
                   origin: str, locator: str) -> dict:
    """The fields of a pending pair record from two (answer id, answer turns): answer A is the one with the
    smaller id, whatever order they came in."""
    from finetune_pipeline.tasks.pairs import PreferencePair

    (a_id, a_turns), (b_id, b_turns) = sorted([first, second], key=lambda answer: answer[0])
    return {**PreferencePair(prompt_messages, a_turns, b_turns).fields(), "locator": locator, "label": None,
            "label_source": None, PENDING: True, "answer_a_id": a_id, "answer_b_id": b_id, "pairwise_origin": origin}


def tie_records(prompt_messages: list[dict], answers: list, locator: str) -> list[dict]:
    """Pending pair records from one row of rated answers (`tasks.preference.RatedAnswer`): the best-rated answer
    (the first of them) against each answer rated as high, the ties `pairs_by_rating` makes no pair of. An
    answer's id is its position in the row (`answer 02`)."""
    if len(answers) < 2:
        return []
    best = max(answers, key=lambda a: (a.rating, -a.position))
    tied = [a for a in answers if a is not best and a.rating == best.rating]

    def answer(a) -> tuple[str, list[dict]]:
        return f"answer {a.position:02d}", [{"role": "assistant", "content": a.text}]

    records = []
    for other in tied:
        if other.text == best.text:
            continue  # the same text twice: nothing to choose between
        low, high = sorted((best.position, other.position))
        records.append(pending_record(prompt_messages, answer(best), answer(other), "rated_tie",
                                      f"{locator}; answers {low} and {high} tied"))
    return records


def conflict_pending(conversations: pl.DataFrame) -> list[dict]:
    """Pending pair records (fields, as `tie_records`) from conflicting instructions: `conversations` (record_id,
    messages, conflict_id, locator; members of a conflict share a `conflict_id`, dedup/conflicts.py, as under
    `dedup.conflicts: review`). Every two answers of a conflict make one pending pair (conflicts have few answers:
    n answers give n(n-1)/2), the prompt being the turns before the answer of the member with the smaller id;
    an answer's id is its conversation's record id."""
    members = conversations.filter(pl.col("conflict_id").is_not_null()).sort("conflict_id", "record_id")
    records = []
    for (cid,), rows in members.group_by("conflict_id", maintain_order=True):
        for first, second in combinations(rows.to_dicts(), 2):
            turns_a, turns_b = json.loads(first["messages"]), json.loads(second["messages"])
            if turns_a[-1]["content"].strip() == turns_b[-1]["content"].strip():
                continue  # the same answer twice: nothing to choose between
            records.append(pending_record(turns_a[:-1], (first["record_id"], turns_a[-1:]),
                                          (second["record_id"], turns_b[-1:]), "conflict",
                                          f"{cid}: {first['record_id']} or {second['record_id']}"))
    return records


def conflict_records(conversations: pl.DataFrame) -> pl.DataFrame:
    """`conflict_pending` as a corpus frame (record ids from the source_uri of answer A and the locator), the
    pending columns present even when empty."""
    from finetune_pipeline.tasks.pairs import pair_records

    source_of = dict(conversations.select("record_id", "source_uri").iter_rows())
    frames = [pair_records([r], source_of[r["answer_a_id"]] or "", "conflict") for r in conflict_pending(conversations)]
    if not frames:
        return _with_pending_columns(pair_records([], "", "conflict"))
    return _with_pending_columns(pl.concat(frames, how="diagonal_relaxed"))


def _with_pending_columns(frame: pl.DataFrame) -> pl.DataFrame:
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in PENDING_COLUMNS.items() if name not in frame.columns]
    return frame.with_columns(missing) if missing else frame


def pending_pairs(corpus: pl.DataFrame) -> pl.DataFrame:
    """The pending pair records of `corpus` (none when it has no `pairwise_review` column)."""
    if PENDING not in corpus.columns:
        return _with_pending_columns(corpus.clear())
    return _with_pending_columns(corpus.filter(pl.col(PENDING).fill_null(False)))


# ---- the choices read back, combined, and turned into pairs

@dataclass
class PairwiseStats:
    """What pairwise review did: pending pairs, how many were decided, and the annotations used or ignored."""

    pending: int = 0  # pending pair records in the corpus
    by_origin: dict[str, int] = field(default_factory=dict)  # rated_tie, conflict
    decided: int = 0  # became pairs
    ties: int = 0  # annotators judged the answers equal: kept out
    no_consensus: int = 0  # annotated but split (or experts disagree): still in review
    awaiting: int = 0  # no annotation yet: in review
    annotations: int = 0  # pairwise choices on pending pairs
    annotators: int = 0
    ignored_gone: int = 0  # pairwise choices for a pending pair no longer in the corpus (erased or changed)
    agreement: dict = field(default_factory=dict)  # labeling.agreement.agreement_report over A, B, tie


@dataclass
class PairwiseReview:
    kept: pl.DataFrame  # the pending records decided A or B, as pairs with their provenance
    rejected: pl.DataFrame  # ties (pairwise_tie) and pairs still in review (in_review)
    review: pl.DataFrame  # review-queue rows (REVIEW_SCHEMA, reason `pairwise`) of the pairs still in review
    resolved: pl.DataFrame  # consensus.RESOLVED_SCHEMA over the pending pairs annotated (label: A, B or tie)
    stats: PairwiseStats
    used_annotations: set[str] = field(default_factory=set)  # record ids whose annotations were pairwise choices


def pairwise_choices(annotations: pl.DataFrame) -> pl.DataFrame:
    """The annotations (record_id, annotator, label, source_file) whose label is a pairwise choice, the label
    written as A, B or tie."""
    choice = pl.col("label").map_elements(choice_of, return_dtype=pl.String)
    return annotations.with_columns(choice.alias("label")).filter(pl.col("label").is_not_null())


def review_pairwise(pending: pl.DataFrame, annotations: pl.DataFrame, cfg: LabelingSettings) -> PairwiseReview:
    """Decide the pending pair records in `pending` from the pairwise choices in `annotations` (rows of
    `annotations.load_annotations`); the consensus rules are the label review's (`labeling` settings)."""
    stats = PairwiseStats(pending=pending.height,
                          by_origin=dict(Counter(pending["pairwise_origin"].to_list())) if pending.height else {})
    choices = pairwise_choices(annotations)
    ids = set(pending["record_id"].to_list())
    gone = choices.filter(~pl.col("record_id").is_in(list(ids)))
    choices = choices.filter(pl.col("record_id").is_in(list(ids)))
    stats.ignored_gone, stats.annotations = gone.height, choices.height
    stats.annotators = choices["annotator"].n_unique() if choices.height else 0

    resolved = resolve_annotations(choices.drop("source_file"), cfg)
    stats.agreement = agreement_report(choices, resolved, list(CHOICES))
    decision = {row["record_id"]: row for row in resolved.iter_rows(named=True)}
    kept, ties, held, review = [], [], [], []
    for record in pending.iter_rows(named=True):
        verdict = decision.get(record["record_id"])
        if verdict is None:
            stats.awaiting += 1
            held.append((record, "no choice yet"))
        elif verdict["open"]:
            stats.no_consensus += 1
            held.append((record, _split_reason(verdict, cfg)))
        elif verdict["label"] == TIE:
            stats.ties += 1
            ties.append({**record, "_detail": f"{verdict['annotators']} annotator(s) judged the two answers equal "
                                              f"(agreement {_share(verdict['label_agreement'])}): no preference"})
        else:
            stats.decided += 1
            kept.append(decided_pair(record, verdict))
    for record, why in held:
        verdict = decision.get(record["record_id"])
        review.append(_review_row(record, verdict))
    rejected = []
    if ties:
        frame = pl.DataFrame(ties, schema_overrides=pending.schema)
        rejected.append(reject_rows(frame, STAGE, TIE_REASON, pl.col("_detail")))
    if held:
        frame = pl.DataFrame([{**r, "_detail": f"two answers to one prompt, no preference yet ({why}); {REVIEW_HINT}"}
                              for r, why in held], schema_overrides=pending.schema)
        rejected.append(reject_rows(frame, STAGE, "in_review", pl.col("_detail")))
    kept_frame = pl.DataFrame(kept, schema_overrides={**pending.schema, **_PROVENANCE}) if kept else \
        pending.clear().drop(PENDING, "answer_a_id", "answer_b_id").with_columns(
            [pl.lit(None, d).alias(n) for n, d in _PROVENANCE.items() if n not in pending.columns])
    return PairwiseReview(
        kept=kept_frame, rejected=pl.concat(rejected) if rejected else empty_rejects(),
        review=pl.DataFrame(review, schema=REVIEW_SCHEMA) if review else empty_review(),
        resolved=resolved, stats=stats, used_annotations=set(choices["record_id"].to_list()) | set(gone["record_id"]))


_PROVENANCE: dict[str, pl.DataType] = {"label_source": pl.String, "label_confidence": pl.Float64,
                                       "label_agreement": pl.Float64, "review_annotators": pl.Int64,
                                       "chosen_record_id": pl.String, "rejected_record_id": pl.String}


def decided_pair(record: dict, verdict: dict) -> dict:
    """The pair record a decided pending pair becomes: the chosen answer (A or B) as `chosen`, the other as
    `rejected`, the text and hash rebuilt, and the consensus's provenance."""
    from finetune_pipeline.tasks.pairs import PreferencePair

    pending = PreferencePair.from_record(record)
    a_wins = verdict["label"] == A
    pair = PreferencePair(pending.prompt_messages, pending.chosen if a_wins else pending.rejected,
                          pending.rejected if a_wins else pending.chosen)
    fields = pair.fields()
    out = {k: v for k, v in record.items() if k not in (PENDING, "answer_a_id", "answer_b_id")}
    return {**out, **fields, "content_sha256": sha256_text(fields["text"]),
            "label_source": verdict["label_source"], "label_confidence": verdict["label_confidence"],
            "label_agreement": verdict["label_agreement"], "review_annotators": verdict["annotators"],
            "chosen_record_id": record["answer_a_id"] if a_wins else record["answer_b_id"],
            "rejected_record_id": record["answer_b_id"] if a_wins else record["answer_a_id"]}


def _share(value: float | None) -> str:
    return "one annotator" if value is None else f"{value:.0%}"


def _split_reason(verdict: dict, cfg: LabelingSettings) -> str:
    if verdict["label_source"] == "human" and verdict["annotators"] >= 2:
        return "expert annotators disagree"
    return (f"annotators split: {_share(verdict['label_agreement'])} chose {verdict['label']}, under "
            f"labeling.agreement_threshold={cfg.agreement_threshold:g}")


def _review_row(record: dict, verdict: dict | None) -> dict:
    """The review-queue row of a pending pair: the prompt as text, the answers and ids in `options` (a JSON
    object here, read by `pairwise_tasks`)."""
    from finetune_pipeline.sources.conversations import render_text
    from finetune_pipeline.tasks.pairs import PreferencePair

    pair = PreferencePair.from_record(record)
    item = {"answer_a": render_text(pair.chosen) if len(pair.chosen) > 1 else pair.chosen_text,
            "answer_b": render_text(pair.rejected) if len(pair.rejected) > 1 else pair.rejected_text,
            "answer_a_id": record["answer_a_id"], "answer_b_id": record["answer_b_id"],
            "origin": record["pairwise_origin"], "annotations": verdict["annotators"] if verdict else 0}
    prompt = pair.prompt if len(pair.prompt_messages) == 1 else render_text(pair.prompt_messages)
    return {"record_id": record["record_id"], "text": prompt, "label": verdict["label"] if verdict else None,
            "score": verdict["label_agreement"] if verdict else None, "reason": PAIRWISE_REASON, "label_model": None,
            "source_uri": record["source_uri"], "locator": record["locator"], "options": json.dumps(item, ensure_ascii=False)}


# ---- the preference kind's labeling stage

@dataclass
class PreferenceLabelingStats(LabelingStats):
    pairwise: PairwiseStats = field(default_factory=PairwiseStats)


def label_with_pairwise_review(corpus: pl.DataFrame, settings: Settings, annotations: pl.DataFrame | None = None,
                               annotation_problems: list[dict] | None = None) -> LabelingResult:
    """The labeling stage of preference pairs (`PreferenceTask.label`): pairs go on as they are; pending pairs
    (`pairwise_review`) are decided by the pairwise choices in `annotations` (`review_pairwise`) and join as
    pairs, or stay out (ties, still in review); conflicting instructions, where dedup marked some, as the
    other unlabeled kinds (`assign.keep_unlabeled`). The review queue holds both kinds of review item."""
    annotations = annotations if annotations is not None else empty_annotations()
    pending = pending_pairs(corpus)
    rest = corpus.filter(~pl.col(PENDING).fill_null(False)) if PENDING in corpus.columns else corpus
    rest = rest.drop([c for c in PENDING_COLUMNS if c in rest.columns])
    pairwise = review_pairwise(pending, annotations, settings.labeling)
    gone = [{"file": file, "where": f"{n} row(s)", "reason": "pairwise choice for a pair no longer in the corpus "
             "(its source erased or changed); ignored"}
            for file, n in pairwise_choices(annotations).filter(
                ~pl.col("record_id").is_in(list(pending["record_id"]))).group_by("source_file").len()
            .sort("source_file").iter_rows()]
    others = annotations.filter(~pl.col("record_id").is_in(list(pairwise.used_annotations)))
    base = keep_unlabeled(rest, others, (annotation_problems or []) + gone)
    kept = pl.concat([base.kept, pairwise.kept], how="diagonal_relaxed") if pairwise.kept.height else base.kept
    review = pl.concat([base.review_queue, pairwise.review]) if pairwise.review.height else base.review_queue
    in_review = dict(base.stats.in_review)
    if pairwise.stats.awaiting + pairwise.stats.no_consensus:
        in_review[PAIRWISE_REASON] = pairwise.stats.awaiting + pairwise.stats.no_consensus
    annotation_stats = base.stats.annotations
    annotation_stats.rows = annotations.height
    annotation_stats.files = annotations["source_file"].n_unique()
    annotation_stats.records_labeled += pairwise.stats.decided + pairwise.stats.ties
    annotation_stats.records_in_review += pairwise.stats.no_consensus
    stats = PreferenceLabelingStats(
        **{name: getattr(base.stats, name) for name in LabelingStats.__dataclass_fields__},
        pairwise=pairwise.stats)
    stats.in_review = in_review
    stats.review_queue = dict(review.group_by("reason").len().sort("reason").iter_rows())
    stats.agreement = pairwise.stats.agreement
    return LabelingResult(kept=kept, rejected=pl.concat([base.rejected, pairwise.rejected]), stats=stats,
                          review_queue=review)
