"""Who is asked: each annotator's reliability per label from the Dawid-Skene confusion matrices, and the
review items routed to reliable annotators.

- Reliability of annotator a on label l: P(a answers l | the true label is l), the diagonal of a's
  Dawid-Skene confusion matrix (crowd-kit, fitted on every non-expert annotation with the expert labels as
  gold, the same prior as the consensus: labeling/consensus.py). Their expected accuracy is the same
  diagonal weighted by the label priors the model fitted.
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


def annotator_reliability(crowd: pl.DataFrame, labels: list[str], gold: dict[str, str] | None = None) -> Reliability:
    """Reliability of each annotator in `crowd` (record_id, annotator, label; non-expert rows, labels from
    the set) from a Dawid-Skene fit; empty when no record has two or more annotators."""
    out = Reliability(labels=list(labels))
    if crowd.is_empty() or crowd.group_by("record_id").len()["len"].max() < 2:
        return out
    model = fit_dawid_skene(crowd, gold)
    errors, priors = model.errors_, model.priors_
    for annotator in sorted(crowd["annotator"].unique().to_list()):
        per_label = {}
        for label in labels:
            if label in errors.columns and (annotator, label) in errors.index:
                per_label[label] = float(errors.loc[(annotator, label), label])
        if not per_label:
            continue
        weights = {label: float(priors.get(label, 0.0)) for label in per_label}
        total = sum(weights.values()) or 1.0
        out.per_label[annotator] = per_label
        out.accuracy[annotator] = sum(weights[label] * per_label[label] for label in per_label) / total
    out.annotations = dict(crowd.group_by("annotator").len().iter_rows())
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
