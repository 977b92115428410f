r"""LoRA training speed: plain transformers + peft against the project's instruction-tuning step, side by side.

On the GPU (random-weight Llama shapes, nothing downloaded):

  python scripts/bench_lora_speed.py --shape 1.1b --micro-batch 8 --seq 2048
  python scripts/bench_lora_speed.py --shape 7.2b --micro-batch 2 --seq 2048

On a CPU, to check the script itself: python scripts/bench_lora_speed.py --shape tiny --steps 3 --warmup 1

Both paths train the same model shape with the same LoRA (rank 16, alpha 32, no dropout, every linear
layer), AdamW, on the same random token batches, one optimizer step per micro-batch:
- `plain`: `AutoModelForCausalLM.from_config(..., torch_dtype=bfloat16)` (bf16 weights on CUDA), peft
  `get_peft_model`, `model(input_ids, labels=input_ids).loss.backward()`: the usual transformers+peft loop.
- `project`: what `finetune_pipeline.training.instruction` does each step: the model as it loads it
  (default dtype, bf16 autocast on CUDA), `with_lora`, packed position ids, `token_loss` (sum over
  labelled tokens) / token count, backward.

Printed per path: tokens/s (median step after warm-up), model FLOP utilisation, peak memory, and the
ratio to `plain`. FLOP convention: forward FLOPs per token = 2 x parameters (without embeddings) + 4 x
layers x hidden x sequence (attention scores and values, no causal discount); a LoRA step counts 2 x
forward (forward + backward through activations; the frozen weights get no gradient), a full fine-tuning
step 3 x forward. MFU = model FLOP/s / the peak matmul FLOP/s measured in the same run (a bf16 8192^3
matmul on CUDA, fp32 4096^3 on the CPU).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {  # Llama-architecture shapes: TinyLlama-1.1B, Mistral-7B (7.24B), and a CPU-sized one
    "1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000),
    "7.2b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000),
}


def llama(shape: str, seq: int, dtype: torch.dtype | None):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=max(seq, 128), use_cache=False)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, torch_dtype=dtype) if dtype else \
        AutoModelForCausalLM.from_config(config)


def forward_flops_per_token(model, seq: int) -> float:
    cfg = model.config
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lora_" not in n)
    return 2 * params + 4 * cfg.num_hidden_layers * cfg.hidden_size * seq


def peak_matmul_flops(device: torch.device) -> float:
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (4096, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def batches(steps: int, micro_batch: int, seq: int, vocab: int, device: torch.device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(3, vocab, (micro_batch, seq), generator=gen).to(device) for _ in range(steps)]


def plain_step_fn(shape: str, seq: int, device: torch.device):
    from peft import LoraConfig, TaskType, get_peft_model

    dtype = torch.bfloat16 if device.type == "cuda" else None
    model = get_peft_model(llama(shape, seq, dtype), LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(ids: torch.Tensor) -> float:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return model, step


def project_step_fn(shape: str, seq: int, device: torch.device):
    from finetune_pipeline.settings import TrainingSettings
    from finetune_pipeline.training.instruction import token_loss, with_lora

    cfg = TrainingSettings(lora_r=16, lora_alpha=32, lora_dropout=0.0, instruction_target_modules="all-linear",
                           learning_rate=1e-4)
    model = with_lora(llama(shape, seq, None), cfg).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    positions = torch.arange(seq, device=device)

    def step(ids: torch.Tensor) -> float:
        batch = {"input_ids": ids, "labels": ids, "position_ids": positions.expand_as(ids)}
        loss_sum, tokens = token_loss(model, batch, device)
        (loss_sum / tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return (loss_sum / tokens).detach()
    return model, step


def measure(name: str, build, args, device: torch.device, data: list[torch.Tensor]) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, step = build(args.shape, args.seq, device)
    times, losses = [], []
    for i, ids in enumerate(data):
        _sync(device)
        start = time.perf_counter()
        losses.append(float(step(ids)))
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens = args.micro_batch * args.seq
    result = {"path": name, "tokens_per_s": tokens / seconds,
              "model_flops_per_s": 2 * forward_flops_per_token(model, args.seq) * tokens / seconds,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
              "losses": losses}
    del model, step
    gc.collect()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--paths", default="plain,project")
    args = parser.parse_args()
    if args.shape == "tiny":
        args.seq = min(args.seq, 128)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    peak = peak_matmul_flops(device)
    print(f"{name}; torch {torch.__version__}; shape {args.shape}; micro-batch {args.micro_batch} x {args.seq}; "
          f"measured matmul peak {peak / 1e12:.1f} TFLOP/s")
    data = batches(args.steps, args.micro_batch, args.seq, SHAPES[args.shape]["vocab_size"], device)
    builders = {"plain": plain_step_fn, "project": project_step_fn}
    results = [measure(p, builders[p], args, device, data) for p in args.paths.split(",")]
    base = results[0]["tokens_per_s"]
    print("| path | tokens/s | MFU | peak GiB | vs first |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['path']} | {r['tokens_per_s']:,.0f} | {r['model_flops_per_s'] / peak:.1%} | "
              f"{r['peak_gib']:.1f} | {r['tokens_per_s'] / base:.2f}x |")
    for r in results:
        print(f"{r['path']} losses: " + " ".join(f"{x:.4f}" for x in r["losses"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
