"""Metrics used by every training approach: classification scores, the majority-class baseline,
predictions, peak memory, and what the training loop reports about its run."""

from __future__ import annotations

import math
import resource
import threading
import time
from collections import Counter

import torch

from finetune_pipeline.training.base_model import autocast
from finetune_pipeline.training.checkpoint import TrainState


def classification_metrics(y_true: list[int], y_pred: list[int], proba=None) -> dict[str, float]:
    """Accuracy and macro-F1; with `proba` ((n, labels) predicted probabilities, columns in label-id order)
    also `log_loss`, the mean cross-entropy of the true labels in nats (probabilities clipped at 1e-15). The
    log loss tells settings apart where macro-F1 ties (every fold at 1.0): the LoRA search breaks ties on it."""
    from sklearn.metrics import accuracy_score, f1_score  # here: language-model training needs no sklearn

    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if proba is not None and len(y_true):
        import numpy as np

        p = np.clip(np.asarray(proba, dtype=np.float64)[np.arange(len(y_true)), np.asarray(y_true)], 1e-15, 1.0)
        scores["log_loss"] = float(-np.log(p).mean())
    return scores


def majority_baseline(train_labels: list[str], test_labels: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of always predicting the most common training label."""
    if not train_labels or not test_labels:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    majority = Counter(train_labels).most_common(1)[0][0]
    vocab = sorted(set(train_labels) | set(test_labels))
    index = {label: i for i, label in enumerate(vocab)}
    return classification_metrics([index[t] for t in test_labels], [index[majority]] * len(test_labels))


def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> list[int]:
    """Predicted class ids for `texts` from a sequence-classification model."""
    return predict_proba(model, tokenizer, texts, max_length, batch_size).argmax(-1).tolist()


@torch.no_grad()
def predict_proba(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64):
    """(len(texts), labels) float32 softmax probabilities from a sequence-classification model."""
    import numpy as np

    model.eval()
    device = next(model.parameters()).device
    preds: list = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt").to(device)
        with autocast(device):
            logits = model(**enc).logits
        preds.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(preds) if preds else np.zeros((0, model.config.num_labels), dtype=np.float32)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:  # not Linux: the process's peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory while the block runs, in MiB: on CUDA the peak allocated by torch; on the CPU the
    process's resident set size sampled every `interval_s` (so it includes what was loaded before)."""

    def __init__(self, device: torch.device, interval_s: float = 0.05):
        self.device, self.interval_s, self.peak_mb = device, interval_s, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_mb = _rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, _rss_mb())
        self.peak_mb = round(self.peak_mb, 1)


def run_report(model, state: TrainState, first_epoch: int, learning_rate: float, device: torch.device, processes: int,
               started: float, peak_memory_mb: float, data_snapshot: str, cfg) -> dict:
    """The part of metrics.json about the run itself, the same for every task: parameter counts,
    epochs (and where a resumed run started), the loss history, device, wall time (s) and peak memory."""
    history = state.history
    return {
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "learning_rate": learning_rate,
        "epochs_run": len(history),
        "resumed_from_epoch": first_epoch - 1 if first_epoch > 1 else None,
        "history": history,
        "nan_loss": any(math.isnan(h["train_loss"]) for h in history),
        "device": device.type,
        "processes": processes,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "peak_memory_mb": peak_memory_mb,
        "data_snapshot": data_snapshot,
        "settings": cfg.model_dump(),
    }
