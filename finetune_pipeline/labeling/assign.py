"""What the labeling stage does per kind (`Task.label`): `label_records` gives every labeled text a label
from the label set (the precedence in labeling/stage.py), in named steps; `keep_unlabeled` passes records
of kinds without labels through, with the conflicts people decide. The stage's figures (`LabelingStats`)
and result (`LabelingResult`) are defined here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import polars as pl

from finetune_pipeline.labeling.agreement import agreement_report
from finetune_pipeline.labeling.annotations import empty_annotations
from finetune_pipeline.labeling.conflicts import review_conflicts
from finetune_pipeline.labeling.consensus import resolve_annotations
from finetune_pipeline.labeling.labels import label_set
from finetune_pipeline.labeling.priority import label_target
from finetune_pipeline.labeling.review import REVIEW_SCHEMA, ROUTING_COLUMNS, empty_review, order_review_queue
from finetune_pipeline.labeling.routing import annotator_reliability
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.labeling.zero_shot import Predictions, predict_labels
from finetune_pipeline.records import StageResult, StageStats, reject_rows
from finetune_pipeline.settings import LabelingSettings, Settings

STAGE = "labeled_corpus"
REVIEW_HINT = "label it in Label Studio (exports/review/tasks.json) and drop the export into annotations/"
MAX_PROBLEMS = 100  # listed in the stats; the count is always complete

# (texts, labels, settings, training texts, training labels) -> predictions; training lists empty: zero-shot
Labeler = Callable[[list[str], list[str], LabelingSettings, list[str], list[str]], Predictions]


@dataclass(frozen=True)
class RowLabeler:
    """A labeler that names the records it labels by their row in the dataset they are read from, so their
    texts stay there (the streaming paths: `labeling.rows`): `predict(rows, labels, settings, training texts,
    training labels)` as a `Labeler`, `texts(rows)` the texts of a few rows (the review queue's), `column` the
    corpus column holding each record's row. The corpus's `text` is then null where it was not read."""

    column: str
    predict: Callable[[np.ndarray, list[str], LabelingSettings, list[str], list[str]], Predictions]
    texts: Callable[[np.ndarray], list[str]]


@dataclass
class ModelLabelStats:
    """Labels from the model: which model, how many it predicted, accepted, and sent to review."""

    name: str | None = None
    predicted: int = 0
    accepted: int = 0
    in_review: int = 0
    mean_confidence: float | None = None


@dataclass
class AnnotationStats:
    """Human or crowd annotations read from annotations/, and the problems found in them."""

    rows: int = 0
    files: int = 0
    records_labeled: int = 0
    records_in_review: int = 0
    problems_total: int = 0
    problems: list[dict] = field(default_factory=list)  # the first MAX_PROBLEMS: file, where, reason


@dataclass
class LabelingStats(StageStats):
    labels: list[str] = field(default_factory=list)
    by_label: dict[str, int] = field(default_factory=dict)
    by_label_source: dict[str, int] = field(default_factory=dict)
    model: ModelLabelStats = field(default_factory=ModelLabelStats)
    in_review: dict[str, int] = field(default_factory=dict)  # low_confidence, disagreement
    review_queue: dict[str, int] = field(default_factory=dict)  # review items by reason
    conflicts: dict[str, int] = field(default_factory=dict)  # conversations: in_review, kept_one, dropped_all
    annotations: AnnotationStats = field(default_factory=AnnotationStats)
    agreement: dict = field(default_factory=dict)  # labeling.agreement.agreement_report


@dataclass
class LabelingResult(StageResult):
    """The stage's kept and rejected rows, plus the records waiting for (or sampled for) human review."""

    review_queue: pl.DataFrame = field(default_factory=empty_review)


def audit_sample(record_ids: list[str], share: float, seed: int) -> list[bool]:
    """A stable pseudo-random `share` of the records: a record's pick depends only on its id and the seed,
    so the audit set does not churn between runs."""
    def draw(record_id: str) -> float:
        return int(hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()[:12], 16) / 16 ** 12
    return [draw(r) < share for r in record_ids]


def _annotation_problems(known: pl.DataFrame, unknown: pl.DataFrame, outside: pl.DataFrame) -> list[dict]:
    problems = []
    for file, n in unknown.group_by("source_file").len().sort("source_file").iter_rows():
        problems.append({"file": file, "where": f"{n} row(s)",
                         "reason": "record_id not in the corpus (rejected earlier, or from another data root); ignored"})
    for file, label, n in outside.group_by("source_file", "label").len().sort("source_file", "label").iter_rows():
        problems.append({"file": file, "where": f"{n} row(s)",
                         "reason": f"label '{label}' is not in the label set; ignored (fix the label or `labels`)"})
    return problems


def label_records(corpus: pl.DataFrame, settings: Settings, annotations: pl.DataFrame,
                  annotation_problems: list[dict] | None = None, labeler: Labeler = predict_labels,
                  embedding_cache: EmbeddingCache | None = None) -> LabelingResult:
    """Labeled texts: every record of `corpus` gets a label from the label set (precedence in the module
    docstring); `annotations` are the rows of `annotations.load_annotations`, `annotation_problems` the
    problems it found (reported in the stats)."""
    cfg = settings.labeling
    labels = label_set(corpus, settings, annotations)
    corpus = _with_label_columns(corpus)
    people = _apply_annotations(corpus, annotations, labels, cfg)
    model = _label_the_rest(people.corpus, labels, settings, labeler, embedding_cache)
    rejected = _rejects(people.disputed, model, cfg)
    review, reliability = _review_queue(model, people, labels, settings, labeler)
    people.agreement["reliability"] = reliability.report()
    problems = (annotation_problems or []) + _annotation_problems(people.known, people.unknown, people.outside)
    counts = model.kept.group_by("label").len().sort("label")
    sources = model.kept.group_by("label_source").len().sort("label_source")
    predicted = model.predicted
    stats = LabelingStats(
        labels=labels,
        by_label=dict(zip(counts["label"], counts["len"])),
        by_label_source=dict(zip(sources["label_source"], sources["len"])),
        model=ModelLabelStats(
            name=model.name, predicted=predicted.height, accepted=model.accepted.height, in_review=model.low.height,
            mean_confidence=round(float(predicted["label_confidence"].mean()), 4) if predicted.height else None),
        in_review={"low_confidence": model.low.height, "disagreement": people.disputed.height},
        review_queue=dict(review.group_by("reason").len().sort("reason").iter_rows()),
        annotations=AnnotationStats(rows=annotations.height, files=annotations["source_file"].n_unique(),
                                    records_labeled=people.annotated, records_in_review=people.disputed.height,
                                    problems_total=len(problems), problems=problems[:MAX_PROBLEMS]),
        agreement=people.agreement,
    )
    return LabelingResult(kept=model.kept, rejected=rejected, stats=stats, review_queue=review)


def _with_label_columns(corpus: pl.DataFrame) -> pl.DataFrame:
    """`corpus` with its row number (`_row`, the output order) and the labeling columns: a given label's
    confidence (1 unless the source said otherwise), no model, no agreement yet."""
    return corpus.with_row_index("_row").with_columns(
        pl.when(pl.col("label").is_not_null()).then(pl.coalesce("label_confidence", pl.lit(1.0)))
        .alias("label_confidence"),
        pl.lit(None, pl.String).alias("label_model"),
        pl.lit(None, pl.Float64).alias("label_agreement"),
    )


@dataclass
class _PeopleLabels:
    """Steps 1-2: the corpus with the labels people gave, and what the annotations held."""

    corpus: pl.DataFrame  # every record not in open disagreement, human or crowd labels applied
    disputed: pl.DataFrame  # records whose annotators disagree: held for review
    valid: pl.DataFrame  # annotations of records in the corpus, with a label from the set
    known: pl.DataFrame  # annotations of records in the corpus
    unknown: pl.DataFrame  # annotations of records not in the corpus
    outside: pl.DataFrame  # annotations with a label outside the set
    annotated: int  # records labeled by people
    agreement: dict  # labeling.agreement.agreement_report


def _apply_annotations(corpus: pl.DataFrame, annotations: pl.DataFrame, labels: list[str],
                       cfg: LabelingSettings) -> _PeopleLabels:
    """1-2. Human annotations: expert, consensus or single annotator; a reviewed label replaces the given one."""
    in_corpus = pl.col("record_id").is_in(corpus["record_id"].implode())
    in_set = pl.col("label").is_in(labels)
    known, unknown = annotations.filter(in_corpus), annotations.filter(~in_corpus)
    valid, outside = known.filter(in_set), known.filter(~in_set)
    resolved = resolve_annotations(valid, cfg)
    agreement = agreement_report(valid, resolved, labels)
    ann = resolved.rename({c: f"{c}_ann" for c in resolved.columns if c != "record_id"})
    if not resolved.height:  # no record has a label from people: the corpus as it is (no copy of it)
        return _PeopleLabels(corpus, corpus.clear().join(ann, on="record_id", how="left"), valid, known, unknown,
                             outside, 0, agreement)
    corpus = corpus.join(ann, on="record_id", how="left")
    is_open = pl.col("open_ann").fill_null(False)
    disputed, corpus = corpus.filter(is_open), corpus.filter(~is_open)
    annotated = pl.col("label_ann").is_not_null()
    corpus = corpus.with_columns(
        *[pl.when(annotated).then(pl.col(f"{c}_ann")).otherwise(pl.col(c)).alias(c)
          for c in ("label", "label_source", "label_confidence", "label_agreement")])
    n_annotated = corpus.filter(annotated).height
    corpus = corpus.drop([c for c in corpus.columns if c.endswith("_ann")])
    return _PeopleLabels(corpus, disputed, valid, known, unknown, outside, n_annotated, agreement)


@dataclass
class _ModelLabels:
    """Steps 3-4: the records kept, and what the model did for the records without a label."""

    kept: pl.DataFrame  # records with a label from the set (the model's above review_threshold included)
    outside: pl.DataFrame  # records with a given label outside the set
    unlabeled: pl.DataFrame  # records left without a label (no model ran)
    predicted: pl.DataFrame  # records the model labeled
    low: pl.DataFrame  # of those, under review_threshold: held for review
    accepted: pl.DataFrame  # of those, at or above review_threshold
    name: str | None  # the model
    # the records labeled and their label probabilities (one row each), when the model gives them
    probabilities: tuple[pl.Series, np.ndarray] | None


def _label_the_rest(corpus: pl.DataFrame, labels: list[str], settings: Settings, labeler: Labeler | RowLabeler,
                    cache: EmbeddingCache | None) -> _ModelLabels:
    """3. Given labels; 4. the model for the rest: zero-shot, or a classifier on people's labels once there
    are enough (`min_human_labels_for_classifier`)."""
    cfg = settings.labeling
    outside = corpus.filter(pl.col("label").is_not_null() & ~pl.col("label").is_in(labels))
    unlabeled = corpus.filter(pl.col("label").is_null())
    train = corpus.filter(pl.col("label").is_in(labels)
                          & pl.col("label_source").is_in(list(cfg.classifier_label_sources)))
    use_classifier = train.height >= cfg.min_human_labels_for_classifier and train["label"].n_unique() >= 2
    predicted, model_name, probabilities = unlabeled.clear(), None, None
    if unlabeled.height and labels and (cfg.zero_shot or use_classifier):
        train_texts = train["text"].to_list() if use_classifier else []
        train_labels = train["label"].to_list() if use_classifier else []
        if labeler is predict_labels:  # the built-in labeler embeds on the configured backend
            labeler = partial(predict_labels, execution=settings.execution, cache=cache)
        if isinstance(labeler, RowLabeler):
            preds = labeler.predict(unlabeled[labeler.column].to_numpy(), labels, cfg, train_texts, train_labels)
        else:
            preds = labeler(unlabeled["text"].to_list(), labels, cfg, train_texts, train_labels)
        model_name = preds.model
        if preds.probabilities is not None:
            probabilities = (unlabeled["record_id"], np.asarray(preds.probabilities, dtype=np.float64))
        predicted = unlabeled.with_columns(
            pl.Series("label", preds.labels, pl.String), pl.lit("model").alias("label_source"),
            pl.Series("label_confidence", preds.confidences, pl.Float64), pl.lit(preds.model).alias("label_model"))
        unlabeled = unlabeled.clear()
    low = predicted.filter(pl.col("label_confidence") < cfg.review_threshold)
    accepted = predicted.filter(pl.col("label_confidence") >= cfg.review_threshold)
    return _ModelLabels(_kept_rows(corpus, labels, accepted), outside, unlabeled, predicted, low, accepted,
                        model_name, probabilities)


def _kept_rows(corpus: pl.DataFrame, labels: list[str], accepted: pl.DataFrame) -> pl.DataFrame:
    """The records with a label from the set and those the model labeled (`accepted`, rows of `corpus` with
    their label columns set), in corpus order: one filter of the corpus, the model's labels written into
    their rows (a concat and a sort of every kept record would copy the corpus twice more)."""
    kept = corpus.filter(pl.col("label").is_in(labels) | pl.col("_row").is_in(accepted["_row"].implode()))
    if accepted.height:
        at = np.searchsorted(kept["_row"].to_numpy(), accepted["_row"].to_numpy())
        kept = kept.with_columns(kept[c].scatter(at, accepted[c]) for c in MODEL_COLUMNS)
    return kept.drop("_row")


MODEL_COLUMNS = ("label", "label_source", "label_confidence", "label_model")  # what the model sets on a record


def _rejects(disputed: pl.DataFrame, model: _ModelLabels, cfg: LabelingSettings) -> pl.DataFrame:
    """Held for review (`in_review`), `unlabeled` and `label_not_in_label_set` records, each with the fix."""
    low_detail = pl.format("model label '{}' at confidence {} < review_threshold {}; " + REVIEW_HINT,
                           "label", pl.col("label_confidence").round(3), pl.lit(cfg.review_threshold))
    open_detail = pl.format("open disagreement: agreement {} among {} annotators (agreement_threshold {}, "
                            "or expert annotators split); "
                            + REVIEW_HINT, pl.col("label_agreement_ann").round(3), "annotators_ann",
                            pl.lit(cfg.agreement_threshold))
    return pl.concat([
        reject_rows(disputed, STAGE, "in_review", open_detail),
        reject_rows(model.low, STAGE, "in_review", low_detail),
        reject_rows(model.unlabeled, STAGE, "unlabeled",
                    "no label from a column, folder or annotation, and zero-shot labeling is off "
                    "(labeling.zero_shot); label it (annotations/, label column or folder)"),
        reject_rows(model.outside, STAGE, "label_not_in_label_set",
                    pl.format("label '{}' is not in the label set; fix it or add it to `labels`", "label")),
    ])


def _review_queue(model: _ModelLabels, people: _PeopleLabels, labels: list[str], settings: Settings,
                  labeler: Labeler | RowLabeler):
    """The review queue (low-confidence model labels, open disagreements, the audit sample), highest
    expected value of a label first, with who to ask (labeling/priority.py, labeling/routing.py); and the
    annotators' reliability it was routed by."""
    cfg = settings.labeling
    accepted_model = model.kept.filter(pl.col("label_source") == "model")
    audit = accepted_model.filter(pl.Series(audit_sample(accepted_model["record_id"].to_list(),
                                                         cfg.audit_share, cfg.seed), dtype=pl.Boolean))
    low, audit = _with_texts([model.low, audit], labeler)
    review = pl.concat([
        _review_rows(low, "low_confidence", pl.col("label_confidence")),
        _review_rows(people.disputed.with_columns(pl.col("label_ann").alias("label")), "disagreement",
                     pl.col("label_agreement_ann"), pl.lit(f"crowd consensus ({cfg.consensus})")),
        _review_rows(audit, "audit", pl.col("label_confidence")),
    ])
    valid = people.valid
    experts = set(cfg.expert_annotators)
    expert_votes = valid.filter(pl.col("annotator").is_in(list(experts))).group_by("record_id").agg(pl.col("label").unique())
    gold = {r: v[0] for r, v in expert_votes.iter_rows() if len(v) == 1}
    reliability = annotator_reliability(valid.filter(~pl.col("annotator").is_in(list(experts))), labels, gold)
    counts_now = dict(model.kept.group_by("label").len().iter_rows())
    review = order_review_queue(review, labels, _probabilities_of(review, model.probabilities), valid, experts,
                                counts_now,
                                label_target(counts_now, settings.augmentation.target_count,
                                             settings.augmentation.oversample_ratio), cfg.review, reliability)
    return review, reliability


def _with_texts(frames: list[pl.DataFrame], labeler: Labeler | RowLabeler) -> list[pl.DataFrame]:
    """`frames` (model-labeled records) with their texts: read from the dataset, in one pass, where a
    `RowLabeler` left them there."""
    if not isinstance(labeler, RowLabeler) or not any(frame.height for frame in frames):
        return frames
    texts = iter(labeler.texts(np.concatenate([frame[labeler.column].to_numpy() for frame in frames])))
    return [frame.with_columns(pl.Series("text", [next(texts) for _ in range(frame.height)], dtype=pl.String))
            for frame in frames]


def _probabilities_of(review: pl.DataFrame, probabilities: tuple[pl.Series, np.ndarray] | None) -> dict:
    """record_id -> the model's label probabilities, for the records in `review` (not a dict of every record the
    model labeled: at 1M records that was a list of floats per record)."""
    if probabilities is None:
        return {}
    ids, matrix = probabilities
    at = ids.to_frame("record_id").with_row_index("_at").filter(
        pl.col("record_id").is_in(review["record_id"].implode()))
    return {record_id: matrix[i] for i, record_id in at.iter_rows()}


def keep_unlabeled(corpus: pl.DataFrame, annotations: pl.DataFrame,
                   annotation_problems: list[dict] | None = None) -> LabelingResult:
    """Every record kept as it is, with the labeling columns (null): the kind trains without labels. The
    one human decision left is which answer of a conflicting instruction to keep, where dedup marked one
    (`conflict_id`; labeling/conflicts.py)."""
    conflicts = review_conflicts(corpus, annotations)
    kept = conflicts.kept.with_columns(pl.lit(None, pl.String).alias("label_model"),
                                       pl.lit(None, pl.Float64).alias("label_agreement"))
    unknown = annotations.filter(~pl.col("record_id").is_in(list(conflicts.used_annotations)))
    problems = (annotation_problems or []) + conflicts.problems + _annotation_problems(
        annotations.clear(), unknown, annotations.clear())
    stats = LabelingStats(
        in_review={"conflict": conflicts.records_in_review} if conflicts.records_in_review else {},
        review_queue=dict(conflicts.review.group_by("reason").len().sort("reason").iter_rows()),
        conflicts=conflicts.counts,
        annotations=AnnotationStats(
            rows=annotations.height, files=annotations["source_file"].n_unique(),
            records_labeled=conflicts.counts.get("kept_one", 0) + conflicts.counts.get("dropped_all", 0),
            problems_total=len(problems), problems=problems[:MAX_PROBLEMS]),
        agreement=agreement_report(empty_annotations(), kept.clear(), []))
    return LabelingResult(kept=kept, rejected=conflicts.rejected, stats=stats, review_queue=conflicts.review)


def _review_rows(frame: pl.DataFrame, reason: str, score: pl.Expr, model: pl.Expr | None = None) -> pl.DataFrame:
    return frame.select(
        "record_id", "text", "label", score.cast(pl.Float64).alias("score"), pl.lit(reason).alias("reason"),
        (model if model is not None else pl.col("label_model")).cast(pl.String).alias("label_model"),
        "source_uri", "locator", pl.lit(None, pl.String).alias("options"),
        *[pl.lit(None, REVIEW_SCHEMA[c]).alias(c) for c in ROUTING_COLUMNS],
    ).cast(REVIEW_SCHEMA)
