"""Fine-tuning an encoder for sequence classification: LoRA (PEFT) or full fine-tuning.

The base model gets a classification head for the label set; `lora` wraps it with LoRA (the head trains
too and is saved with the adapter as `modules_to_save`), `full` trains every weight at the smaller
`training.full.learning_rate`. This module supplies the task's part of the shared loop (loop.py): the model, the
cross-entropy of a batch, validation macro-F1 (early stopping), and test accuracy and macro-F1 against
the majority-class baseline. The loop trains, resumes a killed run, runs data-parallel under torchrun
when asked, and saves the PEFT adapter (lora) or the whole model (full) in safetensors. Imports no dagster.

    python -m finetune_pipeline.training.classify --help
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from peft import TaskType, get_peft_model
from transformers import AutoTokenizer

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training import distributed, loop
from finetune_pipeline.training.base_model import (autocast, base_model_name, load_sequence_classifier,
                                                   resolve_base_model)
from finetune_pipeline.training.checkpoint import TrainState
from finetune_pipeline.training.evaluate import classification_metrics, majority_baseline, predict, predict_proba
from finetune_pipeline.training.results import TrainingResult
from finetune_pipeline.training.lora import lora_config

Splits = dict[str, tuple[list[str], list[str]]]  # split name -> (texts, labels)


def build_classifier(approach: Literal["lora", "full"], base: str, labels: list[str], cfg: TrainingSettings):
    """The base encoder with a fresh head: wrapped for LoRA, or with every weight trainable."""
    model = load_sequence_classifier(base, labels)
    if approach == "full":
        return model
    return get_peft_model(model, lora_config(cfg, TaskType.SEQ_CLS, list(cfg.lora.target_modules)))


def train_classifier(splits: Splits, labels: list[str], cfg: TrainingSettings, output_dir: str | Path,
                     approach: Literal["lora", "full"] = "lora", data_snapshot: str = "", log=print,
                     on_epoch_end: Callable[[int], None] | None = None) -> TrainingResult:
    """Train on `splits["train"]`, early-stop on validation, evaluate on test, save to `output_dir`; returns
    the metrics written to `metrics.json`. `on_epoch_end`: see `loop.train`."""
    command = loop.Command("finetune_pipeline.training.classify", lambda job: write_splits(splits, job),
                           ["--approach", approach, "--labels", json.dumps(labels), "--settings",
                            cfg.model_dump_json(), "--data-snapshot", data_snapshot])
    return loop.train(partial(ClassifierTraining, splits, labels, cfg, approach), cfg, output_dir, command,
                      data_snapshot, log, on_epoch_end)


class ClassifierTraining:
    """Sequence classification's part of the training loop: one example, one label, cross-entropy."""

    def __init__(self, splits: Splits, labels: list[str], cfg: TrainingSettings, approach: Literal["lora", "full"],
                 device: torch.device, log=print):
        self.splits, self.labels, self.cfg, self.approach, self.device = splits, labels, cfg, approach, device
        self.trained_on = [splits, labels]
        self.label_id = {label: i for i, label in enumerate(labels)}
        base = resolve_base_model(cfg.base_model)
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.model = build_classifier(approach, base, labels, cfg).to(device)
        self.learning_rate = cfg.lora.learning_rate if approach == "lora" else cfg.full.learning_rate
        texts, targets = splits["train"]
        self.train_rows, self.batch_size, self.tokens_seen = len(texts), cfg.batch_size, 0
        self.targets = torch.tensor(self.ids(targets))
        self.encodings = self.tokenizer(texts, truncation=True, max_length=cfg.max_length)  # padded per batch

    def ids(self, labels: list[str]) -> list[int]:
        return [self.label_id[label] for label in labels]

    def batch_loss(self, forward, rows: list[int]) -> tuple[torch.Tensor, int]:
        batch = self.tokenizer.pad({k: [v[i] for i in rows] for k, v in self.encodings.items()},
                                   return_tensors="pt").to(self.device)
        self.tokens_seen += int(batch["attention_mask"].sum())
        with autocast(self.device):
            logits = forward(**batch).logits
        targets = self.targets[rows].to(self.device)
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"), len(rows)

    def epoch_loss(self, steps: list[tuple[float, int]]) -> float:
        """The mean of the steps' mean losses."""
        return float(np.mean([total / max(count, 1) for total, count in steps]))

    def validate(self, train_loss: float) -> loop.Validation:
        texts, labels = self.splits.get("validation", ([], []))
        if labels:
            scores = classification_metrics(self.ids(labels), self.predict(texts))
        else:  # no validation split: the training loss decides (lower is better)
            scores = {"macro_f1": -train_loss}
        return loop.Validation(scores["macro_f1"], scores, f"validation macro-F1 {scores['macro_f1']:.3f}")

    def evaluate(self, state: TrainState) -> dict:
        (train_texts, train_labels), (test_texts, test_labels) = self.splits["train"], self.splits["test"]
        val_texts = self.splits.get("validation", ([], []))[0]
        return {
            "approach": self.approach,
            "task": "classification",
            "base_model": base_model_name(self.cfg.base_model),
            "labels": self.labels,
            "test": self.test_metrics(test_texts, test_labels),
            "majority_baseline": majority_baseline(list(train_labels), list(test_labels)),
            "validation_best_macro_f1": state.best_score,
            "split_sizes": {"train": len(train_texts), "validation": len(val_texts), "test": len(test_texts)},
        }

    def test_metrics(self, texts: list[str], labels: list[str]) -> dict:
        proba = predict_proba(self.model, self.tokenizer, texts, self.cfg.max_length)
        return classification_metrics(self.ids(labels), proba.argmax(-1).tolist(), proba)

    def predict(self, texts: list[str]) -> list[int]:
        return predict(self.model, self.tokenizer, texts, self.cfg.max_length)


def write_splits(splits: Splits, splits_dir: str | Path) -> None:
    """The `<split>.jsonl` files `read_splits` reads (an absent split is written empty)."""
    for name in ("train", "validation", "test"):
        texts, labels = splits.get(name, ([], []))
        lines = [json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)]
        (Path(splits_dir) / f"{name}.jsonl").write_text("".join(lines))


def read_splits(splits_dir: str | Path) -> tuple[Splits, list[str]]:
    """(texts, labels) per split from the exported `<split>.jsonl` files, and the sorted label set."""
    splits: Splits = {}
    for name in ("train", "validation", "test"):
        rows = [json.loads(line) for line in (Path(splits_dir) / f"{name}.jsonl").read_text().splitlines() if line]
        splits[name] = ([r["text"] for r in rows], [r["label"] for r in rows])
    return splits, sorted(set(splits["train"][1]))


def main(argv: list[str] | None = None) -> None:
    """Train from exported splits without dagster, e.g. on a GPU machine."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m finetune_pipeline.training.classify", description=main.__doc__)
    parser.add_argument("splits_dir", help="exports/splits/ (train/validation/test.jsonl)")
    parser.add_argument("output_dir")
    parser.add_argument("--approach", choices=["lora", "full"], default="lora")
    parser.add_argument("--settings", help="JSON of TrainingSettings fields, e.g. '{\"epochs\": 3}'")
    parser.add_argument("--labels", help="JSON list of the label set (default: the train split's, sorted)")
    parser.add_argument("--data-snapshot", default="", help="recorded in metrics.json and the model card")
    args = parser.parse_args(argv)
    cfg = TrainingSettings.model_validate(json.loads(args.settings or "{}"))
    splits, labels = read_splits(args.splits_dir)
    labels = json.loads(args.labels) if args.labels else labels
    metrics = train_classifier(splits, labels, cfg, args.output_dir, approach=args.approach,
                               data_snapshot=args.data_snapshot)
    if not distributed.World.from_env().main:
        return
    print(json.dumps({"test": metrics.test, "majority_baseline": metrics.majority_baseline,
                      "epochs_run": metrics.epochs_run, "wall_time_s": metrics.wall_time_s}, indent=2))


if __name__ == "__main__":
    main()
