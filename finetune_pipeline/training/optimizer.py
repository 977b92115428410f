"""AdamW and its learning-rate schedule, as every approach in the loop (loop.py) uses them.

- AdamW on the weights that train, fused into one kernel on CUDA (`fused=True`, the same update).
- The schedule (`lr_schedule`, `warmup_ratio`): transformers' `get_cosine_schedule_with_warmup`,
  `get_linear_schedule_with_warmup` or `get_constant_schedule_with_warmup` over the run's optimizer steps
  (`epochs` x steps per epoch; early stopping may end the run before the decay does). Stepped once per
  optimizer step; its state is saved in checkpoints with the optimizer's.
Imports no dagster.
"""

from __future__ import annotations

import math

import torch
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

from finetune_pipeline.settings import TrainingSettings


def adamw(model: torch.nn.Module, learning_rate: float, device: torch.device) -> torch.optim.AdamW:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=learning_rate, fused=device.type == "cuda" or None)


def lr_schedule(optimizer, cfg: TrainingSettings, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate over `total_steps` optimizer steps: warm-up over `warmup_ratio` of them (rounded
    up), then `lr_schedule` (cosine or linear decay to 0, or constant)."""
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    if cfg.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    decay = get_cosine_schedule_with_warmup if cfg.lr_schedule == "cosine" else get_linear_schedule_with_warmup
    return decay(optimizer, warmup, total_steps)
