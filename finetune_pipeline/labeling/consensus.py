"""One label per record from several annotators: expert labels, then crowd consensus.

- Expert labels (annotators listed in `labeling.expert_annotators`) decide a record; they are also the
  gold labels Dawid-Skene fits the other annotators' confusion matrices on.
- Several other annotators: Dawid-Skene (Dawid & Skene 1979, "Maximum likelihood estimation of observer
  error-rates using the EM algorithm"; crowd-kit's implementation) or majority vote. The record's
  `label_confidence` is the consensus label's posterior (Dawid-Skene) or vote share (majority), and its
  `label_agreement` the share of its annotators who chose the consensus label.
- One annotator: that person's label (`label_source=human`).

A crowd record whose agreement is under `agreement_threshold`, or whose experts disagree, is `open`:
it stays in review and out of training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import polars as pl

from finetune_pipeline.settings import LabelingSettings

if TYPE_CHECKING:
    from crowdkit.aggregation import DawidSkene

RESOLVED_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "label": pl.String,  # the consensus or expert label
    "label_source": pl.String,  # human (an expert, or the only annotator) or crowd
    "label_confidence": pl.Float64,
    "label_agreement": pl.Float64,  # share of the record's annotators who chose `label` (null: one annotator)
    "annotators": pl.Int64,
    "open": pl.Boolean,  # disagreement not settled: stays in review
}


def _crowd_frame(annotations: pl.DataFrame) -> pd.DataFrame:
    return annotations.select(pl.col("record_id").alias("task"), pl.col("annotator").alias("worker"),
                              "label").to_pandas()


def annotator_prior(data: pd.DataFrame, correct: float = 2.0, wrong: float = 0.5) -> pd.DataFrame:
    """Dirichlet pseudo-counts on every annotator's confusion matrix (rows: annotator and given label, columns:
    true label): each annotator starts a little better than chance, so a handful of records cannot push a
    matrix to extremes (plain maximum likelihood turns one gold disagreement into "always wrong")."""
    labels = sorted(data["label"].unique())
    index = pd.MultiIndex.from_product([sorted(data["worker"].unique()), labels], names=["worker", "label"])
    values = [[correct if given == true else wrong for true in labels] for _, given in index]
    return pd.DataFrame(values, index=index, columns=pd.Index(labels, dtype=data["label"].dtype))


def dawid_skene(annotations: pl.DataFrame, gold: dict[str, str] | None = None,
                n_iter: int = 100) -> pd.DataFrame:
    """Posterior label probabilities per record (index record_id, one column per label) by Dawid-Skene EM
    (maximum a posteriori with `annotator_prior`); records in `gold` are fixed to their gold label while the
    annotators' confusion matrices are fitted."""
    return fit_dawid_skene(annotations, gold, n_iter).probas_


def fit_dawid_skene(annotations: pl.DataFrame, gold: dict[str, str] | None = None, n_iter: int = 100) -> DawidSkene:
    """The fitted crowd-kit model: `probas_` (records x labels), `errors_` (each annotator's confusion
    matrix: rows (annotator, given label), columns the true label, P(given | true)) and `priors_`."""
    data = _crowd_frame(annotations)
    true_labels = pd.Series(gold) if gold else None
    if true_labels is not None:
        true_labels = true_labels[true_labels.index.isin(data["task"]) & true_labels.isin(data["label"])]
        true_labels = true_labels if len(true_labels) else None
    from crowdkit.aggregation import DawidSkene  # imported when used: crowd-kit brings NLTK and SciPy (a second)

    model = DawidSkene(n_iter=n_iter, initial_error_strategy="addition")
    model.fit(data, true_labels=true_labels, initial_error=annotator_prior(data))
    return model


def majority_vote(annotations: pl.DataFrame) -> pd.DataFrame:
    """Vote shares per record (index record_id, one column per label)."""
    from crowdkit.aggregation import MajorityVote

    return MajorityVote().fit(_crowd_frame(annotations)).probas_


def consensus_probabilities(annotations: pl.DataFrame, method: str, gold: dict[str, str] | None = None) -> pd.DataFrame:
    if annotations.is_empty():
        return pd.DataFrame()
    return dawid_skene(annotations, gold) if method == "dawid_skene" else majority_vote(annotations)


def _argmax(probas: pd.DataFrame) -> dict[str, tuple[str, float]]:
    """record_id -> (label, probability); ties go to the label first in name order (deterministic)."""
    probas = probas.reindex(sorted(probas.columns), axis=1).fillna(0.0)
    return {task: (str(row.idxmax()), float(row.max())) for task, row in probas.iterrows()}


def resolve_annotations(annotations: pl.DataFrame, cfg: LabelingSettings) -> pl.DataFrame:
    """One row per annotated record (RESOLVED_SCHEMA). `annotations` holds only labels from the label set."""
    if annotations.is_empty():
        return pl.DataFrame(schema=RESOLVED_SCHEMA)
    experts = set(cfg.expert_annotators)
    is_expert = pl.col("annotator").is_in(list(experts))
    expert_rows = annotations.filter(is_expert)
    crowd_rows = annotations.filter(~is_expert)

    # Experts: their majority label; experts who disagree among themselves leave the record open.
    expert_votes = (expert_rows.group_by("record_id", "label").len()
                    .sort(["record_id", "len", "label"], descending=[False, True, False]))
    expert_label: dict[str, tuple[str, float, bool]] = {}
    for record_id, votes in expert_votes.group_by("record_id", maintain_order=True):
        counts = votes["len"].to_list()
        tied = len(counts) > 1 and counts[0] == counts[1]
        expert_label[record_id[0]] = (votes["label"][0], counts[0] / sum(counts), tied)

    # The crowd: consensus over every non-expert annotation, expert labels as gold where given.
    multi = crowd_rows.group_by("record_id").len().filter(pl.col("len") >= 2)["record_id"]
    gold = {r: lab for r, (lab, _, tied) in expert_label.items() if not tied}
    probas = consensus_probabilities(crowd_rows, cfg.consensus, gold) if multi.len() else pd.DataFrame()
    consensus = _argmax(probas) if len(probas) else {}

    votes_per_record = annotations.group_by("record_id").agg(pl.col("label"), pl.len().alias("n"))
    n_crowd = dict(crowd_rows.group_by("record_id").len().iter_rows())
    out = []
    for record_id, labels, n in votes_per_record.sort("record_id").iter_rows():
        if record_id in expert_label:
            label, share, tied = expert_label[record_id]
            source, confidence, is_open = "human", share, tied
        elif n_crowd.get(record_id, 0) >= 2:
            label, confidence = consensus[record_id]
            source, is_open = "crowd", False
        else:
            label, source, confidence, is_open = labels[0], "human", 1.0, False
        agreement = sum(x == label for x in labels) / n if n >= 2 else None
        if source == "crowd" and agreement is not None and agreement < cfg.agreement_threshold:
            is_open = True
        out.append({"record_id": record_id, "label": label, "label_source": source,
                    "label_confidence": round(confidence, 6), "label_agreement": None if agreement is None else round(agreement, 6),
                    "annotators": n, "open": is_open})
    return pl.DataFrame(out, schema=RESOLVED_SCHEMA)
