"""LoRA (PEFT) for both tasks: the one place the `LoraConfig` is built from the settings, and loading a
saved classification adapter back.

A classification adapter folder holds `adapter_config.json` and `adapter_model.safetensors` (the LoRA
matrices plus the classification head as `modules_to_save`, so it reloads intact), the tokenizer,
`metrics.json` and a model card. Training is in classify.py (approach "lora") and instruction.py.
Imports no dagster.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType
from transformers import AutoTokenizer

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.base_model import load_sequence_classifier, resolve_base_model
from finetune_pipeline.training.results import TrainingResult


def lora_config(cfg: TrainingSettings, task_type: TaskType, target_modules: list[str] | str) -> LoraConfig:
    """The LoRA of `cfg` (rank, alpha, dropout) on `target_modules` (names, or "all-linear"), for
    `peft.get_peft_model`; with SEQ_CLS the new classification head trains and saves with the adapter."""
    return LoraConfig(task_type=task_type, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=target_modules)


def load_adapter(adapter_dir: str | Path, adapter_name: str = "default"):
    """(model, tokenizer, labels) for a classification adapter saved by `train_classifier`, ready for inference."""
    adapter_dir = Path(adapter_dir)
    result = TrainingResult.from_json(adapter_dir / "metrics.json")
    labels = result.labels
    base = resolve_base_model(result.settings.get("base_model"))
    model = PeftModel.from_pretrained(load_sequence_classifier(base, labels), adapter_dir, adapter_name=adapter_name)
    model.eval()
    return model, AutoTokenizer.from_pretrained(adapter_dir), labels
