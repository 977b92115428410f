"""Classification metrics used by every training approach."""

from __future__ import annotations

from collections import Counter

from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(y_true: list[int], y_pred: list[int]) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def majority_baseline(train_labels: list[str], test_labels: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of always predicting the most common training label."""
    if not train_labels or not test_labels:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    majority = Counter(train_labels).most_common(1)[0][0]
    vocab = sorted(set(train_labels) | set(test_labels))
    index = {label: i for i, label in enumerate(vocab)}
    return classification_metrics([index[t] for t in test_labels], [index[majority]] * len(test_labels))
