"""Resumable training: a checkpoint folder written after an epoch, read back when a killed run restarts.

`<output>/checkpoint/` holds
- `trainable.safetensors`: the weights being trained (LoRA matrices and head, or every weight);
- `best.safetensors`: the trainable weights of the best validation epoch so far (early stopping);
- `trainer_state.pt`: optimizer and learning-rate schedule state, torch RNG states, the last finished epoch
  and the early-stopping state, a dict of tensors and plain numbers read back with `torch.load(weights_only=True)` (no pickled code).
It is written to a temporary folder and renamed into place, so a kill during the write leaves the previous
checkpoint intact. Training deletes it once it has saved the final model.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoint"
# Settings that may change between a killed run and its resumption without changing what is trained
# (data_parallel: any number of processes trains on the same global batches).
# The speed settings (micro-batches, fast path, attention kernel, activation checkpointing) compute the same
# steps, so a run killed on one machine resumes on another.
_NOT_FINGERPRINTED = {"resume", "checkpoint_every_epochs", "epochs", "early_stopping_patience", "compare",
                      "adapter_name", "data_parallel", "micro_batch_size"}
_NOT_FINGERPRINTED_IN = {"feature": {"batch_size"},  # the same per method section
                         "instruction": {"fast_path", "loss_chunk_tokens", "attention", "activation_checkpointing"}}


@dataclass
class TrainState:
    """Where a training run stands after its last finished epoch; saved in every checkpoint."""

    fingerprint: str  # the data and settings it trains on (`fingerprint`)
    epoch: int = 0  # last finished epoch; 0 before the first
    best_score: float = float("-inf")  # best validation score so far, higher is better
    stale: int = 0  # epochs since `best_score` last improved
    stopped: bool = False  # early stopping ended the run
    history: list[dict] = field(default_factory=list)  # one row per epoch: losses and validation scores

    def record(self, score: float, patience: int) -> bool:
        """Count an epoch's validation `score`; True when it is the best so far. Sets `stopped` after
        `patience` epochs without improvement."""
        if score > self.best_score:
            self.best_score, self.stale = score, 0
            return True
        self.stale += 1
        if self.stale >= patience:
            self.stopped = True
        return False


def fingerprint(approach: str, settings: dict, data) -> str:
    """What a checkpoint was trained on: the approach, the settings that shape training, and the data.
    A checkpoint with another fingerprint is not resumed (the run starts over)."""
    shaping = {k: ({n: x for n, x in v.items() if n not in _NOT_FINGERPRINTED_IN[k]}
                   if k in _NOT_FINGERPRINTED_IN and isinstance(v, dict) else v)
               for k, v in settings.items() if k not in _NOT_FINGERPRINTED}
    payload = json.dumps([approach, shaping, data], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters that get gradients, by name, detached copies on the CPU."""
    return {name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, model, optimizer, scheduler, best: dict[str, torch.Tensor] | None,
                    state: TrainState) -> None:
    """Write `folder` (replacing it) from the model's trainable weights, the best weights, the optimizer,
    the learning-rate schedule, the RNG states and `state`."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    if best is not None:
        save_file(best, tmp / "best.safetensors")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    # Plain tensors, numbers and lists only, so loading needs no unpickling of code (weights_only=True).
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                **asdict(state)}, tmp / "trainer_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def checkpoint_fingerprint(folder: Path) -> str | None:
    """The fingerprint a checkpoint was saved with (None when there is no readable checkpoint)."""
    try:
        return torch.load(folder / "trainer_state.pt", weights_only=True, map_location="cpu").get("fingerprint")
    except Exception:  # missing, half-written or foreign: not resumable
        return None


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[dict[str, torch.Tensor] | None, TrainState]:
    """Restore the model's trainable weights, the optimizer, the learning-rate schedule and the RNG states
    from `folder`; return (best weights or None, the run's state)."""
    device = next(model.parameters()).device
    weights = load_file(folder / "trainable.safetensors", device=str(device))
    missing = set(weights) - {name for name, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"{folder}: checkpoint does not fit this model (e.g. {sorted(missing)[0]}); "
                         "delete the folder to start over")
    model.load_state_dict(weights, strict=False)
    best = load_file(folder / "best.safetensors") if (folder / "best.safetensors").exists() else None
    saved = torch.load(folder / "trainer_state.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return best, TrainState(**{f.name: saved[f.name] for f in fields(TrainState)})


def start_or_resume(output_dir: Path, run_id: str, resume: bool, model, optimizer, scheduler,
                    log=print) -> tuple[dict[str, torch.Tensor] | None, TrainState]:
    """(best weights, state) to start from: the checkpoint under `output_dir` when resuming is on and it
    was written for the same run (`run_id`: data and settings), else a fresh state."""
    checkpoint = Path(output_dir) / CHECKPOINT_DIR
    if resume and checkpoint.exists():
        if checkpoint_fingerprint(checkpoint) == run_id:
            best, state = load_checkpoint(checkpoint, model, optimizer, scheduler)
            log(f"resuming from {checkpoint}: epochs 1-{state.epoch} done")
            return best, state
        log(f"{checkpoint} was written for other data or settings; starting over")
    return None, TrainState(fingerprint=run_id)


def end_epoch(state: TrainState, score: float, best: dict[str, torch.Tensor] | None, model, optimizer, scheduler,
              checkpoint: Path | None, cfg, log=print) -> dict[str, torch.Tensor] | None:
    """After epoch `state.epoch`: keep the trainable weights when `score` (higher is better) is the best yet,
    stop early after `cfg.early_stopping_patience` epochs without improvement, and write the checkpoint every
    `cfg.checkpoint_every_epochs` epochs (never when `checkpoint` is None). Returns the best weights so far."""
    if state.record(score, cfg.early_stopping_patience):
        best = trainable_state(model)
    elif state.stopped:
        log(f"early stopping after epoch {state.epoch}: no validation improvement for {state.stale} epochs")
    if checkpoint is not None and state.epoch % cfg.checkpoint_every_epochs == 0 and state.epoch < cfg.epochs \
            and not state.stopped:
        save_checkpoint(checkpoint, model, optimizer, scheduler, best, state)
    return best


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indices per batch; the order depends only on (seed, epoch), so a resumed run sees the same."""
    order = list(range(n))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
