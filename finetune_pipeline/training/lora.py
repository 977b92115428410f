"""LoRA fine-tuning of an encoder for sequence classification (the pipeline's product), and loading
the saved adapter back.

The training loop is shared with full fine-tuning in `classify.py`; this module names the LoRA entry
points. The adapter folder holds `adapter_config.json` and `adapter_model.safetensors` (LoRA matrices
plus the classification head as `modules_to_save`, so it reloads intact), the tokenizer, `metrics.json`
and a model card. Imports no dagster.
"""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.base_model import (DEFAULT_BASE_NAME, default_base_model,  # noqa: F401 (API)
                                                   load_sequence_classifier, pick_device, resolve_base_model)
from finetune_pipeline.training.classify import Splits, model_card, save_classifier, train_classifier  # noqa: F401

save_adapter = save_classifier


def train_lora_classifier(splits: Splits, labels: list[str], cfg: TrainingSettings, output_dir: str | Path,
                          data_snapshot: str = "", log=print, on_epoch_end=None) -> dict:
    """Train a LoRA adapter on `splits["train"]`, early-stop on validation, evaluate on test, save.

    Returns the metrics written to `metrics.json`.
    """
    return train_classifier(splits, labels, cfg, output_dir, approach="lora", data_snapshot=data_snapshot,
                            log=log, on_epoch_end=on_epoch_end)


def load_adapter(adapter_dir: str | Path, adapter_name: str = "default"):
    """(model, tokenizer, labels) for an adapter saved by `train_lora_classifier`, ready for inference."""
    adapter_dir = Path(adapter_dir)
    metrics = json.loads((adapter_dir / "metrics.json").read_text())
    labels = metrics["labels"]
    base = resolve_base_model(metrics["settings"].get("base_model"))
    model = PeftModel.from_pretrained(load_sequence_classifier(base, labels), adapter_dir, adapter_name=adapter_name)
    model.eval()
    return model, AutoTokenizer.from_pretrained(adapter_dir), labels
