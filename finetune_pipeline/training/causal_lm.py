"""A causal LM set up for LoRA training, plain on the CPU and fast on a GPU (instruction.py uses it).

What each setting decides (defaults and rules in settings.py, `TrainingSettings`):
- `base_dtype`: the frozen base weights in bf16 on CUDA (half the memory, no per-step casts), float32 on
  the CPU. PEFT keeps the LoRA weights float32 (`autocast_adapter_dtype`), so AdamW's state is float32 too.
- `attention`: flash_attention_2 (varlen kernels) when the fast path is on, CUDA is used and flash-attn
  is installed, else sdpa. Packed sequences carry position ids that restart per example; transformers
  turns them into a block-diagonal mask (sdpa, eager) or into cumulative sequence lengths (flash). The
  latter only for a batch of one row (`_is_packed_sequence`), so under flash_attention_2 every batch is
  padding-free: its sequences end to end in one row (`collate(..., padding_free=True)`, in instruction.py).
- `fast_path`: the loss is `chunked_linear_cross_entropy` on the decoder's last hidden states, so the
  full-vocabulary logits never exist (`LastHiddenState` catches them with a forward hook; the model
  itself computes logits for one position only, `logits_to_keep=1`). The forward still goes through the
  model (or its DDP wrapper), so DDP's gradient hooks run as usual.
- `activation_checkpointing`: transformers' gradient checkpointing (non-reentrant) per decoder layer.
Imports no dagster.
"""

from __future__ import annotations

import importlib.util

import torch

from finetune_pipeline.settings import TrainingSettings

# Bytes of stored activations per token, per unit of hidden size, per layer, in 16-bit training without
# the attention score matrix (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
# Transformer Models": s*b*h*(34 + 5*a*s/h), the second term gone with flash/SDPA attention).
ACTIVATION_BYTES_PER_TOKEN_HIDDEN_LAYER = 34


def fast_path_on(cfg: TrainingSettings, device: torch.device) -> bool:
    return cfg.instruction.fast_path == "on" or (cfg.instruction.fast_path == "auto" and device.type == "cuda")


def base_dtype(cfg: TrainingSettings, device: torch.device) -> torch.dtype:
    if cfg.instruction.base_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.instruction.base_dtype)


def attention_implementation(cfg: TrainingSettings, device: torch.device) -> str:
    if cfg.instruction.attention != "auto":
        return cfg.instruction.attention
    if fast_path_on(cfg, device) and device.type == "cuda" and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def load_options(cfg: TrainingSettings, device: torch.device) -> dict:
    """Keyword arguments for `AutoModelForCausalLM.from_pretrained`/`from_config` (never trust_remote_code)."""
    return {"dtype": base_dtype(cfg, device), "attn_implementation": attention_implementation(cfg, device)}


def activation_bytes(config, tokens: int) -> int:
    """Estimated activation memory (bytes) a forward over `tokens` tokens stores for backward."""
    return ACTIVATION_BYTES_PER_TOKEN_HIDDEN_LAYER * tokens * config.hidden_size * config.num_hidden_layers


def wants_activation_checkpointing(cfg: TrainingSettings, device: torch.device, config, tokens: int) -> bool:
    """The `activation_checkpointing` rule: on/off as set; auto = on with CUDA when a micro-batch of
    `tokens` tokens would store more than half of the GPU's memory in activations."""
    if cfg.instruction.activation_checkpointing != "auto":
        return cfg.instruction.activation_checkpointing == "on"
    if device.type != "cuda":
        return False
    return activation_bytes(config, tokens) > torch.cuda.get_device_properties(device).total_memory / 2


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer in backward (non-reentrant: works with frozen inputs and PEFT)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


class LastHiddenState:
    """Catches the decoder's output (the final-norm hidden states) on every forward of `model`, so the
    chunked loss (`chunk` tokens at a time) can use them instead of the logits."""

    def __init__(self, model, chunk: int):
        self.chunk = chunk
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config
        self.head = base.get_output_embeddings()
        if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) \
                or not isinstance(self.head, torch.nn.Linear) or self.head.bias is not None:
            raise ValueError(f"{type(base).__name__}: its logits are not a plain linear head of the hidden states "
                             "(soft-capping, scaling, a bias or LoRA on the head); set training.instruction.fast_path: off")
        self.value: torch.Tensor | None = None
        base.get_decoder().register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.value = output[0]  # last_hidden_state, whether a ModelOutput or a tuple

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        return value
