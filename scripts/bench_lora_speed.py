r"""LoRA training speed: plain transformers + peft against the project's instruction-tuning step, one run.

On a GPU (random-weight Llama shapes built from configs, nothing downloaded; step counts sized to stay
well under 8 minutes on one H100/H200, an estimate not yet timed there; the total is printed):

  python scripts/bench_lora_speed.py

On a CPU, to check the script end to end in seconds: python scripts/bench_lora_speed.py --tiny

Cases (GPU): TinyLlama-1.1B shape at micro-batch 8 x 2048 (one sequence per row, and 4 packed sequences of
512 per row), Llama-3-8B shape at micro-batch 2 x 2048. Both paths train the same model (same seed, same
random weights) with the same LoRA (rank 16, alpha 32, no dropout, every linear layer), AdamW at a constant
1e-4 without clipping (so both take the same update), on the same random token batches, one optimizer step
per micro-batch:
- `plain`: `AutoModelForCausalLM.from_config(config, dtype=bfloat16)` (bf16 weights on CUDA, default sdpa
  attention, no torch.compile), peft `get_peft_model`, `model(input_ids, position_ids, labels).loss`
  (transformers' loss: full-vocabulary logits upcast to fp32), backward, AdamW: the usual loop.
- `project`: `finetune_pipeline.training` as `instruction.py` runs it, fast path on: the model built with
  `causal_lm.load_options` (bf16 frozen weights on CUDA, attention kernel), `with_lora`, activation
  checkpointing by the settings' rule, `token_loss` with the chunked linear cross-entropy, and the loop's
  `train_step` (fused AdamW on CUDA, schedule step).

Printed per case and path: tokens/s (median step after warm-up), model FLOP utilisation, peak memory,
and the speed ratio project/plain. FLOP convention: forward FLOPs per token = 2 x parameters (without
the input embeddings) + 4 x layers x hidden x sequence (attention scores and values, no causal or packing
discount); a LoRA step counts 2 x forward (forward + backward through activations; the frozen weights
get no gradient). MFU = model FLOP/s / the peak matmul FLOP/s measured in the same run (bf16 8192^3 on
CUDA, fp32 2048^3 on the CPU). Then a loss curve: both paths on the 1.1B shape (tiny with --tiny), the
same 4 batches (tokens drawn from 100 ids, so the loss can fall) cycled, at 1e-3: the per-step losses side
by side and their largest relative difference.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {  # Llama-architecture shapes: TinyLlama-1.1B, Llama-3-8B, and a CPU-sized one
    "1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, rope_theta=10000.0),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000, rope_theta=10000.0),
}
LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.0, instruction_target_modules="all-linear")


@dataclass(frozen=True)
class Case:
    shape: str
    micro_batch: int
    seq: int
    docs_per_row: int  # sequences packed into each row (position ids restart at each)
    steps: int
    warmup: int

    def __str__(self) -> str:
        packed = f", {self.docs_per_row} packed sequences per row" if self.docs_per_row > 1 else ""
        return f"{self.shape}: micro-batch {self.micro_batch} x {self.seq}{packed}"


GPU_CASES = [Case("1.1b", 8, 2048, 1, 16, 4), Case("1.1b", 8, 2048, 4, 12, 4), Case("8b", 2, 2048, 1, 12, 4)]
TINY_CASES = [Case("tiny", 2, 128, 1, 4, 1), Case("tiny", 2, 128, 4, 4, 1)]


def llama(shape: str, seq: int, device: torch.device, **options):
    """A random-weight Llama of `shape`, built directly on `device` from the same seed."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=max(seq, 128), use_cache=False)
    torch.manual_seed(0)
    with device:
        return AutoModelForCausalLM.from_config(config, **options)


def forward_flops_per_token(model, seq: int) -> float:
    cfg = model.config
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lora_" not in n)
    return 2 * params + 4 * cfg.num_hidden_layers * cfg.hidden_size * seq


def peak_matmul_flops(device: torch.device) -> float:
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
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


def batches(steps: int, micro_batch: int, seq: int, vocab: int, device: torch.device, docs_per_row: int = 1,
            distinct: int | None = None, token_ids: int | None = None) -> list[dict[str, torch.Tensor]]:
    """`steps` batches of random tokens (from `token_ids` ids when given), labels = inputs, position ids
    restarting `docs_per_row` times per row; `distinct` batches cycled when given."""
    gen = torch.Generator().manual_seed(1)
    high = 3 + token_ids if token_ids else vocab
    made = [torch.randint(3, high, (micro_batch, seq), generator=gen) for _ in range(distinct or steps)]
    positions = torch.arange(seq) % (seq // docs_per_row)
    return [{"input_ids": ids.to(device), "labels": ids.to(device),
             "position_ids": positions.expand(micro_batch, seq).to(device)}
            for ids in (made[i % len(made)] for i in range(steps))]


def plain_step_fn(case: Case, device: torch.device, lr: float):
    from peft import LoraConfig, TaskType, get_peft_model

    options = {"dtype": torch.bfloat16} if device.type == "cuda" else {}
    model = get_peft_model(llama(case.shape, case.seq, device, **options), LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], lora_dropout=0.0,
        target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(batch: dict[str, torch.Tensor]) -> float:
        # transformers shifts the labels itself; -100 (none here) would be ignored
        loss = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                     use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return model, step, "sdpa, bf16 weights" if device.type == "cuda" else "sdpa, fp32"


class _Batch:
    """The loop's view of a benchmark batch: `batch_loss` over some of its rows, as InstructionTraining's
    (under flash_attention_2 the rows end to end in one, as `collate(..., padding_free=True)` lays them)."""

    def __init__(self, device, last_hidden, padding_free: bool):
        from finetune_pipeline.training.instruction import IGNORE, token_loss

        self.device, self.last_hidden, self.padding_free = device, last_hidden, padding_free
        self.token_loss, self.ignore = token_loss, IGNORE
        self.current: dict[str, torch.Tensor] = {}

    def batch_loss(self, forward, rows: list[int]):
        batch = {k: v[rows] for k, v in self.current.items()}
        if self.padding_free:
            labels = batch["labels"].clone()
            labels[:, 0] = self.ignore  # no row's last token predicts the next row's first
            batch = {"input_ids": batch["input_ids"].reshape(1, -1), "labels": labels.reshape(1, -1),
                     "position_ids": batch["position_ids"].reshape(1, -1)}
        return self.token_loss(forward, batch, self.device, self.last_hidden)


def project_step_fn(case: Case, device: torch.device, lr: float):
    from finetune_pipeline.settings import TrainingSettings
    from finetune_pipeline.training import loop
    from finetune_pipeline.training.causal_lm import (LastHiddenState, enable_activation_checkpointing,
                                                      load_options, wants_activation_checkpointing)
    from finetune_pipeline.training.instruction import with_lora
    from finetune_pipeline.training.optimizer import adamw, lr_schedule

    # The plain loop's optimisation (constant LR, no warm-up, no clipping), so both paths take the same steps.
    cfg = TrainingSettings(lora={"r": LORA["lora_r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"],
                                 "learning_rate": lr},
                           instruction={"target_modules": LORA["instruction_target_modules"], "fast_path": "on",
                                        "max_length": case.seq},
                           lr_schedule="constant", warmup_ratio=0.0, max_grad_norm=None, batch_size=case.micro_batch)
    options = load_options(cfg, device)
    model = with_lora(llama(case.shape, case.seq, device, **options), cfg)
    checkpointing = wants_activation_checkpointing(cfg, device, model.config, case.micro_batch * case.seq)
    if checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    task = _Batch(device, LastHiddenState(model, cfg.instruction.loss_chunk_tokens),
                  padding_free=options["attn_implementation"] == "flash_attention_2")
    optimizer = adamw(model, lr, device)
    scheduler = lr_schedule(optimizer, cfg, case.steps)
    world, rows = loop.distributed.World(), list(range(case.micro_batch))

    def step(batch: dict[str, torch.Tensor]) -> float:
        task.current = batch
        total, count = loop.train_step(task, model, optimizer, scheduler, rows, world, device, cfg)
        return total / count
    about = (f"{options['attn_implementation']}, {str(options['dtype']).removeprefix('torch.')} base, chunked loss, "
             f"activation checkpointing {'on' if checkpointing else 'off'}")
    return model, step, about


def measure(name: str, build, case: Case, device: torch.device, data: list[dict], lr: float = 1e-4) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, step, about = build(case, device, lr)
    times, losses = [], []
    for i, batch in enumerate(data):
        _sync(device)
        start = time.perf_counter()
        losses.append(float(step(batch)))
        _sync(device)
        if i >= case.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times) if times else float("nan")
    tokens = case.micro_batch * case.seq
    result = {"path": name, "about": about, "tokens_per_s": tokens / seconds,
              "model_flops_per_s": 2 * forward_flops_per_token(model, case.seq) * tokens / seconds,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
              "losses": losses}
    del model, step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


BUILDERS = {"plain": plain_step_fn, "project": project_step_fn}


def speed_table(cases: list[Case], device: torch.device, peak: float) -> None:
    print("| case | path | setup | tokens/s | MFU | peak GiB | project/plain |")
    print("|---|---|---|---:|---:|---:|---:|")
    for case in cases:
        data = batches(case.steps, case.micro_batch, case.seq, SHAPES[case.shape]["vocab_size"], device,
                       case.docs_per_row)
        results = [measure(path, BUILDERS[path], case, device, data) for path in ("plain", "project")]
        for r in results:
            ratio = f"{r['tokens_per_s'] / results[0]['tokens_per_s']:.2f}x" if r["path"] == "project" else ""
            print(f"| {case} | {r['path']} | {r['about']} | {r['tokens_per_s']:,.0f} | "
                  f"{r['model_flops_per_s'] / peak:.1%} | {r['peak_gib']:.1f} | {ratio} |", flush=True)


def loss_curves(case: Case, device: torch.device, steps: int) -> None:
    data = batches(steps, case.micro_batch, case.seq, SHAPES[case.shape]["vocab_size"], device, distinct=4,
                   token_ids=100)
    plain, project = (measure(path, BUILDERS[path], case, device, data, lr=1e-3)["losses"]
                      for path in ("plain", "project"))
    print(f"\nloss curve, {case}, {steps} steps over the same 4 batches, lr 1e-3:")
    print("step  plain    project")
    for i, (a, b) in enumerate(zip(plain, project)):
        print(f"{i:4d}  {a:.4f}  {b:.4f}")
    worst = max(abs(b - a) / abs(a) for a, b in zip(plain, project))
    print(f"largest relative difference: {worst:.2e}; loss {plain[0]:.3f} -> {plain[-1]:.3f} (plain), "
          f"{project[0]:.3f} -> {project[-1]:.3f} (project)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama on the CPU: checks the script, not speed")
    parser.add_argument("--shapes", default=None, help="comma-separated shapes to keep (default: all of the mode's)")
    parser.add_argument("--curve-steps", type=int, default=None, help="loss-curve steps (default 30; 8 with --tiny)")
    args = parser.parse_args()
    started = time.perf_counter()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.tiny:
        parser.error("no CUDA device: the full benchmark needs a GPU (use --tiny to check the script on the CPU)")
    cases = TINY_CASES if args.tiny else GPU_CASES
    if args.shapes:
        cases = [c for c in cases if c.shape in args.shapes.split(",")]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak = peak_matmul_flops(device)
    import peft
    import transformers

    print(f"{name}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"measured matmul peak {peak / 1e12:.2f} TFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'})\n")
    speed_table(cases, device, peak)
    steps = args.curve_steps or (8 if args.tiny else 30)
    loss_curves(Case(cases[0].shape, cases[0].micro_batch, cases[0].seq, 1, steps, 0), device, steps)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
