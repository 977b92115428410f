"""Review priority: which items a person's label is worth most on, and how many people to ask.

Each review item gets, from its label probabilities p (the model's softmax or classifier probabilities; for
an item people already labeled, their vote shares), over K labels:

- margin = p(1) - p(2), the gap between the two most likely labels (0: a coin toss between two labels);
- entropy = -sum p log p / log K, in [0, 1] (1: every label equally likely);
- uncertainty = (1 - margin) / 2 + entropy / 2, in [0, 1]: both say how likely the current label is wrong,
  the margin about the top two labels, the entropy about all of them (the top score alone says neither);
- disagreement = (1 - a) / (1 - 1/K), in [0, 1], where a is the share of the item's annotators who gave its
  most common label (0 with fewer than two annotators, 1 when the votes spread evenly over all K labels);
- class_need = max(0, T - n_c) / T, in [0, 1], the shortfall of the item's predicted class c: n_c records
  of c are labeled, T is the label target (`augmentation.target_count`, else `augmentation.oversample_ratio`
  x the largest class: the count augmentation tops every class up to), so the smallest class needs most;
- doubt = 1 - (1 - uncertainty) x (1 - disagreement): the chance, read loosely, that the label is wrong on
  either evidence;
- priority = doubt x (1 + w x class_need), w = `labeling.review.class_need_weight` (1.0): the expected value
  of asking, a label that is likely to change, of a class that is short, first;
- annotators_needed = min + floor(doubt x (max - min + 1)), capped at max (`labeling.review.min_annotators`
  1, `max_annotators` 3: doubt under 1/3 -> 1 annotator, under 2/3 -> 2, else 3).

Items with only a confidence (no probability vector) spread the rest, 1 - confidence, evenly over the other
labels. Plain numpy; imports no dagster.
"""

from __future__ import annotations

import math

import numpy as np


def probabilities_from_confidence(confidence: float, n_labels: int, top: int) -> np.ndarray:
    """A probability vector with `confidence` on label index `top` and the rest spread evenly."""
    if n_labels <= 1:
        return np.ones(max(n_labels, 1))
    rest = (1.0 - confidence) / (n_labels - 1)
    probs = np.full(n_labels, rest)
    probs[top] = confidence
    return probs


def vote_shares(votes: list[str], labels: list[str]) -> np.ndarray:
    """The share of `votes` for each label of `labels`."""
    counts = np.array([votes.count(label) for label in labels], dtype=float)
    return counts / counts.sum() if counts.sum() else np.full(len(labels), 1.0 / max(len(labels), 1))


def margin_and_entropy(probs: np.ndarray) -> tuple[float, float]:
    """(top-two margin, entropy normalized to [0, 1]) of one probability vector."""
    p = np.clip(np.asarray(probs, dtype=float), 0.0, None)
    p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
    top = np.sort(p)[::-1]
    margin = float(top[0] - (top[1] if len(top) > 1 else 0.0))
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(len(p))) if len(p) > 1 else 0.0
    return margin, min(max(entropy, 0.0), 1.0)


def uncertainty(probs: np.ndarray) -> float:
    """(1 - margin) / 2 + normalized entropy / 2, in [0, 1]."""
    margin, entropy = margin_and_entropy(probs)
    return 0.5 * (1.0 - margin) + 0.5 * entropy


def disagreement(votes: list[str], n_labels: int) -> float:
    """(1 - share of the most common vote) / (1 - 1/K); 0 with fewer than two votes."""
    if len(votes) < 2 or n_labels < 2:
        return 0.0
    top = max(votes.count(v) for v in set(votes)) / len(votes)
    return min(1.0, (1.0 - top) / (1.0 - 1.0 / n_labels))


def label_target(counts: dict[str, int], target_count: int | None, oversample_ratio: float) -> int:
    """The records each class should reach: `target_count`, else the largest class x `oversample_ratio`
    (the rule augmentation tops classes up by)."""
    if target_count:
        return target_count
    return math.ceil(max(counts.values(), default=0) * oversample_ratio)


def class_need(counts: dict[str, int], labels: list[str], target: int) -> dict[str, float]:
    """label -> max(0, target - count) / target, in [0, 1]; with no target yet (nothing labeled) every
    class is fully needed."""
    if target <= 0:
        return {label: 1.0 for label in labels}
    return {label: max(0.0, target - counts.get(label, 0)) / target for label in labels}


def doubt(uncertainty_score: float, disagreement_score: float) -> float:
    return 1.0 - (1.0 - uncertainty_score) * (1.0 - disagreement_score)


def priority(doubt_score: float, need: float, class_need_weight: float) -> float:
    """doubt x (1 + class_need_weight x class_need)."""
    return doubt_score * (1.0 + class_need_weight * need)


def annotators_needed(doubt_score: float, min_annotators: int, max_annotators: int) -> int:
    """min + floor(doubt x (max - min + 1)), capped at max."""
    steps = max_annotators - min_annotators + 1
    return min(max_annotators, min_annotators + int(math.floor(doubt_score * steps)))
