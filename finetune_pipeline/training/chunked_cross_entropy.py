"""Linear layer + cross-entropy in chunks over tokens: the language-model loss without the full logits.

`F.cross_entropy(hidden @ weight.T, targets)` holds a tokens x vocabulary logit matrix, in fp32 for the
loss, plus its gradient: 2 GiB for 8 x 2048 tokens and a 32k vocabulary, 8 GiB for a 128k one. Here the
logits of `chunk` tokens at a time are computed, turned into their loss sum and, in the same pass, into
the gradients with respect to the hidden states (and the head's weight when it trains); backward only
scales those stored gradients. Memory beyond the inputs: one chunk's logits, plus the gradients (the
size of `hidden`, and of `weight` when it trains). The matmuls run in the inputs' dtype (bf16 on a GPU),
log-softmax and its gradient in fp32, as the plain path under bf16 autocast does.

The project's own, written for memory (Liger-Kernel and cut-cross-entropy do the same with Triton kernels,
CUDA only); `test_lm_fast_path.py` checks it against `torch.nn.functional.cross_entropy`, values and
gradients. Imports no dagster.
"""

from __future__ import annotations

import torch

IGNORE = -100  # target id that carries no loss (cross_entropy's ignore_index)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        grad_hidden = torch.zeros_like(hidden) if hidden.requires_grad else None
        exact = torch.promote_types(weight.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        grad_weight = torch.zeros_like(weight, dtype=exact) if weight.requires_grad else None
        total = torch.zeros((), dtype=exact, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # fp32 where written fp32, under any autocast
            x_all = hidden.to(weight.dtype)
            for start in range(0, hidden.shape[0], chunk):
                x, y = x_all[start:start + chunk], targets[start:start + chunk]
                keep = y != IGNORE
                safe = torch.where(keep, y, 0)
                log_probs = torch.log_softmax((x @ weight.T).to(exact), dim=-1)
                total -= (log_probs.gather(1, safe[:, None]).squeeze(1) * keep).sum()
                if grad_hidden is None and grad_weight is None:
                    continue
                # d(sum of -log p_y)/d logits = softmax - one_hot(y), zero on ignored tokens.
                grad_logits = log_probs.exp_()
                grad_logits[torch.arange(len(y), device=y.device), safe] -= 1
                grad_logits *= keep[:, None]
                if grad_hidden is not None:
                    grad_hidden[start:start + chunk] = grad_logits.to(weight.dtype) @ weight
                if grad_weight is not None:
                    grad_weight += grad_logits.T @ x.to(exact)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output
        hidden = grad_hidden * scale.to(grad_hidden.dtype) if grad_hidden is not None else None
        weight = (grad_weight * scale.to(grad_weight.dtype)).to(ctx.weight_dtype) if grad_weight is not None else None
        return hidden, weight, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 chunk: int) -> torch.Tensor:
    """Sum over tokens of cross_entropy(hidden @ weight.T, targets), ignoring targets of -100, computed
    `chunk` tokens at a time. hidden: (tokens, hidden size); weight: (vocabulary, hidden size)."""
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk)
