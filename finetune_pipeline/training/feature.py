"""Feature-based classification: frozen encoder embeddings + a linear classifier.

The encoder is never trained: each text becomes its mean-pooled, L2-normalised sentence embedding
(`finetune_pipeline.embeddings`, the shipped all-MiniLM-L6-v2 by default), and a multinomial logistic
regression (scikit-learn) is fitted on the train split. Its inverse regularisation strength C is picked
on validation macro-F1. Trainable parameters are the linear layer's: (labels x dim) weights + biases.
Saved as `classifier.safetensors` (weight, bias) with `metrics.json` and a model card. Imports no dagster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression

from finetune_pipeline.atomic import atomic_path
from finetune_pipeline.embeddings import embed
from finetune_pipeline.reporting import model_card
from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.base_model import base_model_name, pick_device, resolve_base_model
from finetune_pipeline.training.evaluate import PeakMemory, classification_metrics, majority_baseline
from finetune_pipeline.training.results import TrainingResult

C_GRID = (0.1, 1.0, 10.0, 100.0)  # embeddings are unit length, so strong C values are needed to fit


def train_feature_classifier(splits: dict[str, tuple[list[str], list[str]]], labels: list[str],
                             cfg: TrainingSettings, output_dir: str | Path, data_snapshot: str = "",
                             log=print) -> TrainingResult:
    """Embed every split with the frozen encoder, fit the linear classifier, evaluate on test, save."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    base = resolve_base_model(cfg.base_model)
    label_id = {label: i for i, label in enumerate(labels)}
    with PeakMemory(pick_device()) as memory:
        x = {name: embed(texts, base, cfg.feature.batch_size, cfg.max_length) for name, (texts, _) in splits.items()}
        y = {name: np.array([label_id[v] for v in values]) for name, (_, values) in splits.items()}
        history = []
        for c in C_GRID:
            clf = LogisticRegression(C=c, max_iter=2000, random_state=cfg.seed).fit(x["train"], y["train"])
            score = classification_metrics(y["validation"].tolist(), clf.predict(x["validation"]).tolist()) \
                if len(y.get("validation", [])) else {"macro_f1": clf.score(x["train"], y["train"])}
            history.append({"C": c, **{f"val_{k}": v for k, v in score.items()}})
            log(f"feature C={c}: validation macro-F1 {score['macro_f1']:.3f}")
        best = max(history, key=lambda h: h["val_macro_f1"])  # first of equals: the strongest regularisation
        clf = LogisticRegression(C=best["C"], max_iter=2000, random_state=cfg.seed).fit(x["train"], y["train"])
        test_pred = clf.predict(x["test"]).tolist()
        test_proba = np.zeros((len(test_pred), len(labels)))  # columns by label id; a class absent from train: 0
        if len(test_pred):
            test_proba[:, clf.classes_] = clf.predict_proba(x["test"])

    weight, bias = _full_rank(clf, len(labels))
    dim = x["train"].shape[1]
    metrics = {
        "approach": "feature",
        "task": "classification",
        "base_model": base_model_name(cfg.base_model),
        "labels": labels,
        "test": classification_metrics(y["test"].tolist(), test_pred, test_proba),
        "majority_baseline": majority_baseline(list(splits["train"][1]), list(splits["test"][1])),
        "validation_best_macro_f1": best["val_macro_f1"],
        "C": best["C"],
        "split_sizes": {name: len(texts) for name, (texts, _) in splits.items()},
        "trainable_parameters": int(weight.numel() + bias.numel()),
        "total_parameters": int(weight.numel() + bias.numel()) + _encoder_parameters(base),
        "embedding_dim": dim,
        "history": history,
        "nan_loss": bool(np.isnan(clf.coef_).any()),
        "device": pick_device().type,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "peak_memory_mb": memory.peak_mb,
        "data_snapshot": data_snapshot,
        "settings": cfg.model_dump(),
    }
    result = TrainingResult.from_dict(metrics)
    with atomic_path(output_dir) as folder:  # swapped in whole: a reader never sees a half-saved model
        folder.mkdir(parents=True)
        save_file({"weight": weight, "bias": bias}, folder / "classifier.safetensors",
                  metadata={"labels": json.dumps(labels), "encoder": metrics["base_model"]})
        (folder / "metrics.json").write_text(result.to_json())
        (folder / "README.md").write_text(model_card(result))
    return result


def _full_rank(clf: LogisticRegression, n_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels x dim) weights and biases, one row per label even when a label was absent from train
    (its row stays at -inf bias) or there are two classes (scikit-learn keeps one row)."""
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2 and coef.shape[0] == 1:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((n_labels, coef.shape[1]), dtype=np.float32)
    bias = np.full(n_labels, -np.inf, dtype=np.float32)
    weight[clf.classes_], bias[clf.classes_] = coef, intercept
    return torch.from_numpy(weight), torch.from_numpy(bias)


def _encoder_parameters(base: str) -> int:
    from finetune_pipeline.embeddings import _load

    return sum(p.numel() for p in _load(base)[1].parameters())
