"""The one training loop of the fine-tuning tasks (classify.py, instruction.py), in plain PyTorch.

`train` reads top to bottom:
1. Launch: when several processes are wanted (`data_parallel`), run the trainer's command again under
   torchrun (distributed.py) and return the metrics rank 0 saved.
2. Set up: join the process group, seed, let the task build its model, tokenizer and data, AdamW on the
   trainable weights with its learning-rate schedule (optimizer.py), and resume from a checkpoint of the
   same run (checkpoint.py).
3. Train epochs: seeded global batches, each process's slice through DDP in micro-batches whose gradients
   accumulate (`micro_batch_size`), clipped (`max_grad_norm`), one optimizer and schedule step per global
   batch; validate, keep the best weights, stop early, checkpoint. Each epoch logs its training tokens/s.
4. Restore the best epoch's weights and evaluate.
5. Save: weights in safetensors, tokenizer, metrics.json and the model card, swapped in whole.

A task supplies only what differs (`TaskTraining`): its model, its loss, its validation and its metrics.
CUDA in bf16 when present, the CPU otherwise; imports no dagster.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training import distributed
from finetune_pipeline.training.results import TrainingResult
from finetune_pipeline.training.base_model import quiet_transformers
from finetune_pipeline.training.checkpoint import (CHECKPOINT_DIR, TrainState, end_epoch, epoch_batches, fingerprint,
                                                   start_or_resume)
from finetune_pipeline.training.evaluate import PeakMemory, run_report
from finetune_pipeline.training.optimizer import adamw, lr_schedule


@dataclass(frozen=True)
class Validation:
    """An epoch's validation result."""

    score: float  # decides early stopping and the best weights; higher is better
    scores: dict[str, float]  # recorded in the history as val_<name>
    summary: str  # for the epoch's log line


class TaskTraining(Protocol):
    """What a task supplies to `train`, built once the seed is set."""

    approach: str  # names the run in the checkpoint fingerprint, the log and metrics.json
    model: torch.nn.Module  # on the device; AdamW trains its parameters that require gradients
    tokenizer: object  # saved beside the model
    learning_rate: float  # the peak; the schedule (settings.lr_schedule) warms up to it and decays
    trained_on: object  # the data the checkpoint fingerprint covers (JSON-serialisable)
    train_rows: int  # how many training rows (examples or packed sequences) the epochs batch over
    batch_size: int  # rows per optimizer step (the global batch, over all processes)
    tokens_seen: int  # input tokens (no padding) `batch_loss` has run forward so far, for tokens/s

    def batch_loss(self, forward, rows: list[int]) -> tuple[torch.Tensor, int]:
        """(loss summed over training `rows` through `forward`, the count a mean divides it by)."""

    def epoch_loss(self, steps: list[tuple[float, int]]) -> float:
        """An epoch's training loss from each step's (loss sum, count) over the global batch."""

    def validate(self, train_loss: float) -> Validation:
        """Score the model as it is now (the training loss stands in when there is no validation data)."""

    def evaluate(self, state: TrainState) -> dict:
        """The task's part of metrics.json, from the model with the best weights."""


@dataclass(frozen=True)
class Command:
    """How torchrun starts the training in each process: `python -m <module> <job> <output_dir> <args>`,
    where `write_job(job)` writes the training data into the folder `job`."""

    module: str
    write_job: Callable[[str], None]
    args: list[str]


def train(set_up: Callable[[torch.device, Callable], TaskTraining], cfg: TrainingSettings, output_dir: str | Path,
          command: Command, data_snapshot: str = "", log=print,
          on_epoch_end: Callable[[int], None] | None = None) -> TrainingResult:
    """Train the model `set_up(device, log)` builds, save it to `output_dir`, and return its result.

    `on_epoch_end(epoch)` is called after each epoch's checkpoint (tests raise from it to simulate a kill)."""
    output_dir = Path(output_dir)
    processes = distributed.processes_to_launch(cfg.data_parallel)
    if processes:
        return distributed.train_in_processes(command.module, command.write_job, command.args, output_dir,
                                              processes, log, on_epoch_end)

    started = time.perf_counter()
    world = distributed.World.from_env()
    device = distributed.start(world)
    if not world.main:
        log = lambda message: None  # noqa: E731 (rank 0 speaks for all)
    torch.manual_seed(cfg.seed)  # the initial values of the new weights (LoRA matrices, classification head)
    task = set_up(device, log)
    model = task.model
    optimizer = adamw(model, task.learning_rate, device)
    steps_per_epoch = len(epoch_batches(task.train_rows, task.batch_size, cfg.seed, 1))
    scheduler = lr_schedule(optimizer, cfg, cfg.epochs * steps_per_epoch)
    run_id = fingerprint(task.approach, cfg.model_dump(), task.trained_on)
    best, state = start_or_resume(output_dir, run_id, cfg.resume, model, optimizer, scheduler, log)
    first_epoch = state.epoch + 1
    checkpoint = output_dir / CHECKPOINT_DIR if world.main else None  # rank 0 writes for every process
    forward = distributed.wrap(model, world, device)  # DDP: gradients averaged across processes in backward

    speed = []  # training tokens/s of each epoch this process ran (not in the history: it is not reproducible)
    with PeakMemory(device) as memory:
        for epoch in range(first_epoch, cfg.epochs + 1):
            if state.stopped:
                break
            model.train()
            tokens_before, epoch_started = task.tokens_seen, time.perf_counter()
            steps = [train_step(task, forward, optimizer, scheduler, global_batch, world, device, cfg)
                     for global_batch in epoch_batches(task.train_rows, task.batch_size, cfg.seed, epoch)]
            tokens = distributed.all_sum(task.tokens_seen - tokens_before, world, device)
            tokens_per_s = tokens / max(time.perf_counter() - epoch_started, 1e-9)
            speed.append(round(tokens_per_s, 1))
            train_loss = task.epoch_loss(steps)
            val = distributed.from_main(task.validate(train_loss), world)  # one early-stopping decision for all
            state.epoch = epoch
            state.history.append({"epoch": epoch, "train_loss": train_loss,
                                  "train_step_losses": [total / max(count, 1) for total, count in steps],
                                  "learning_rate_at_end": scheduler.get_last_lr()[0],
                                  **{f"val_{name}": value for name, value in val.scores.items()}})
            log(f"{task.approach} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, {val.summary}, "
                f"{tokens_per_s:,.0f} training tokens/s")
            best = end_epoch(state, val.score, best, model, optimizer, scheduler, checkpoint, cfg, log)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
        if best is not None:
            model.load_state_dict({k: v.to(device) for k, v in best.items()}, strict=False)
        metrics = task.evaluate(state)

    metrics.update(run_report(model, state, first_epoch, task.learning_rate, device, world.size, started,
                              memory.peak_mb, data_snapshot, cfg))
    metrics["train_tokens_per_s"] = speed
    result = TrainingResult.from_dict(metrics)
    if world.main:
        save(model, task.tokenizer, result, output_dir)
    distributed.stop(world)
    return result


def train_step(task: TaskTraining, forward, optimizer, scheduler, global_batch: list[int], world: distributed.World,
               device: torch.device, cfg: TrainingSettings) -> tuple[float, int]:
    """One optimizer step on a global batch; returns its (loss sum, count) over every process.

    The update is that of the global batch's mean loss: this process's loss sum over the global count,
    times the world size that DDP's gradient averaging divides by (a mean of per-process means would
    over-weight a short slice). Micro-batches backpropagate their loss sums, the gradients accumulate, and
    are scaled once the global count is known; so k micro-batches give the gradient of one pass over
    them all."""
    rows, share = distributed.shard(global_batch, world), 1.0
    if not rows:  # fewer rows than processes: take part in DDP's all-reduce with weight 0
        rows, share = global_batch[:1], 0.0
    optimizer.zero_grad(set_to_none=True)
    loss_sum, count = accumulate_gradients(task, forward, rows, share, cfg.micro_batch_size)
    global_count = int(distributed.all_sum(count * share, world, device))
    trainable = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    for p in trainable:
        p.grad.mul_(world.size / max(global_count, 1))
    if cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return distributed.all_sum(loss_sum if share else 0.0, world, device), global_count


def accumulate_gradients(task: TaskTraining, forward, rows: list[int], share: float,
                         micro_batch_size: int | None) -> tuple[float, int]:
    """Backpropagate `share` x the loss sum of `rows`, `micro_batch_size` rows at a time (all at once when
    None), adding into the gradients; returns (loss sum, count). Under DDP only the last micro-batch's
    backward all-reduces (the others run under `no_sync`), so the sum is reduced once."""
    size = micro_batch_size or len(rows)
    micro = [rows[i:i + size] for i in range(0, len(rows), size)]
    total, count = 0.0, 0
    for i, part in enumerate(micro):
        last = i == len(micro) - 1
        with forward.no_sync() if hasattr(forward, "no_sync") and not last else nullcontext():
            loss_sum, n = task.batch_loss(forward, part)
            (loss_sum * share).backward()
        total, count = total + loss_sum.item(), count + n
    return total, count


def save(model, tokenizer, result: TrainingResult, output_dir: Path) -> None:
    """safetensors weights (a PEFT adapter, or the whole model), tokenizer, metrics.json and README.md (the
    model card). Written beside `output_dir` and swapped in whole, so a reader never loads a half-saved
    model; the swap also removes the finished run's checkpoint."""
    # Imported here: they pull in polars, which the training steps (and a GPU benchmark) do not need.
    from finetune_pipeline.atomic import atomic_path
    from finetune_pipeline.reporting import model_card

    with atomic_path(output_dir) as folder, quiet_transformers():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(result.to_json())
        (folder / "README.md").write_text(model_card(result))
