"""Who is asked: each annotator's reliability per label from the Dawid-Skene confusion matrices, and the
review items routed to reliable annotators.

- Reliability of annotator a on label l: P(a answers l | the true label is l), the diagonal of a's
  Dawid-Skene confusion matrix: the record posteriors of crowd-kit's fit on every non-expert annotation
  (expert labels as gold), counted per annotator with a Dirichlet prior (Dawid-Skene's M-step; every
  annotator starts at 2/3 on each label). Their expected accuracy is that diagonal weighted by
  the label shares of the posteriors.
- Routing: an item with label probabilities p is asked of `annotators_needed` annotators who have not
  labeled it yet, taken from the annotators in annotations/ (experts excluded: they decide, they are not
  routed) plus `labeling.review.annotators`. An annotator's expected accuracy on the item is
  sum_l p(l) x reliability(a, l); one below `labeling.review.reliability_floor` is not asked (listed in
  `not_routed_to`), so the item goes to another. Among the rest the least loaded goes first (items in
  priority order), then the more reliable; an annotator with no estimate yet counts as reliable.

Needs two or more annotators on at least one record; otherwise no one has an estimate. Imports no dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from finetune_pipeline.labeling.consensus import fit_dawid_skene


@dataclass
class Reliability:
    """Per annotator: reliability per label, expected accuracy, and how many labels it rests on."""

    labels: list[str]
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)  # annotator -> label -> P(right | label)
    accuracy: dict[str, float] = field(default_factory=dict)  # annotator -> expected accuracy
    annotations: dict[str, int] = field(default_factory=dict)

    def on_item(self, annotator: str, probs: np.ndarray) -> float | None:
        """Expected accuracy of `annotator` on an item with label probabilities `probs` (in `labels` order);
        None when the annotator has no estimate."""
        if annotator not in self.per_label:
            return None
        rel = self.per_label[annotator]
        fallback = self.accuracy[annotator]
        return float(sum(p * rel.get(label, fallback) for p, label in zip(probs, self.labels)))

    def report(self) -> list[dict]:
        """JSON-ready rows: annotator, annotations, expected accuracy, reliability per label."""
        return [{"annotator": a, "annotations": self.annotations.get(a, 0), "accuracy": round(self.accuracy[a], 4),
                 "per_label": {label: round(v, 4) for label, v in self.per_label[a].items()}}
                for a in sorted(self.per_label)]


def annotator_reliability(crowd: pl.DataFrame, labels: list[str], gold: dict[str, str] | None = None,
                          correct: float = 2.0, wrong: float = 1.0) -> Reliability:
    """Reliability of each annotator in `crowd` (record_id, annotator, label; non-expert rows, labels from
    the set): the diagonal of their confusion matrix, from the record posteriors of a Dawid-Skene fit (gold
    records fixed to their label) plus a Dirichlet prior per true label of `correct` pseudo-answers right and
    `wrong` spread over the other labels, so every annotator starts at 2/3 on every label, whatever the
    number of labels, and a label they were seldom asked about stays near that, not 0 or 1. Empty when no
    record has two or more annotators."""
    out = Reliability(labels=list(labels))
    if crowd.is_empty() or crowd.group_by("record_id").len()["len"].max() < 2:
        return out
    posteriors = fit_dawid_skene(crowd, gold).probas_.reindex(columns=labels).fillna(0.0)
    if gold:
        for record_id, label in gold.items():
            if record_id in posteriors.index and label in labels:
                posteriors.loc[record_id] = [1.0 if lab == label else 0.0 for lab in labels]
    index = {label: i for i, label in enumerate(labels)}
    label_prior = posteriors.mean(axis=0).to_numpy()
    label_prior = label_prior / label_prior.sum() if label_prior.sum() else np.full(len(labels), 1 / len(labels))
    for annotator, rows in crowd.group_by("annotator", maintain_order=True):
        # counts[given, true] = sum over the annotator's records of P(true label | record)
        counts = np.where(np.eye(len(labels), dtype=bool), correct, wrong / max(len(labels) - 1, 1))
        for record_id, given in rows.select("record_id", "label").iter_rows():
            counts[index[given]] += posteriors.loc[record_id].to_numpy()
        confusion = counts / counts.sum(axis=0, keepdims=True)  # P(given | true), columns sum to 1
        diagonal = np.diag(confusion)
        out.per_label[annotator[0]] = {label: float(diagonal[i]) for i, label in enumerate(labels)}
        out.accuracy[annotator[0]] = float((label_prior * diagonal).sum())
        out.annotations[annotator[0]] = rows.height
    return out


def route(items: list[tuple[str, np.ndarray, int]], pool: list[str], labeled_by: dict[str, set[str]],
          reliability: Reliability, floor: float) -> dict[str, tuple[list[str], list[str]]]:
    """For `items` (record_id, label probabilities, annotators needed), in priority order: record_id ->
    (suggested annotators, annotators not asked because their expected accuracy on it is under `floor`)."""
    load = {a: 0 for a in pool}
    out = {}
    for record_id, probs, needed in items:
        done = labeled_by.get(record_id, set())
        eligible, too_unreliable = [], []
        for annotator in pool:
            if annotator in done:
                continue
            expected = reliability.on_item(annotator, probs)
            if expected is not None and expected < floor:
                too_unreliable.append(annotator)
            else:
                eligible.append((load[annotator], -(1.0 if expected is None else expected), annotator))
        chosen = [a for _, _, a in sorted(eligible)[:needed]]
        for annotator in chosen:
            load[annotator] += 1
        out[record_id] = (chosen, too_unreliable)
    return out
