"""Data-parallel training with PyTorch DistributedDataParallel (DDP) for the training loop (loop.py);
plain torch.distributed, no framework around it. Imports no dagster.

How a run becomes data-parallel:
- **Launch.** `training.data_parallel` ("auto" by default) says how many processes train: "auto" means
  one per visible CUDA GPU when there are several, else one; a number forces that many (on the CPU they
  talk over gloo; the tests use 2). When more than one is wanted and this process is not already one of
  them, `loop.train` re-runs the trainer module's command line under `torch.distributed.run`
  (torchrun) with `--nproc-per-node N` on 127.0.0.1 and a free port (`launch`), passes rank 0's output to
  `log`, and returns the metrics.json rank 0 wrote. Starting torchrun by hand works the same way:
  `torchrun --nproc-per-node 4 -m finetune_pipeline.training.classify exports/splits out/`.
- **Each process.** `World.from_env` reads RANK, LOCAL_RANK and WORLD_SIZE, which torchrun sets; `start`
  joins the process group (nccl on CUDA, one GPU per process; gloo on the CPU) and returns the device;
  `wrap` puts the model in DDP, which averages the gradients across processes during backward.
- **Data.** Every process builds the same seeded global batch and takes its own contiguous slice
  (`shard`), so the global batch, its order and `batch_size` mean what they mean in one process.
- **Loss normalisation.** The update must equal the one-process update on the global batch: the gradient
  of the mean over the *global* batch (examples, or labelled tokens for instruction tuning). So each
  process backpropagates its slice's loss *sum* divided by the global count, times the world size
  because DDP averages gradients (divides by the world size) instead of summing them. A mean of
  per-process means would over-weight a short last slice.
- **Empty slices.** When a global batch is smaller than the world, a process with nothing to do still runs
  forward and backward, on one example with weight 0: DDP needs every process in every all-reduce.
- **Files and decisions.** Only rank 0 logs and writes (checkpoints, the model, metrics.json). Every
  process evaluates the full validation split, and rank 0's result decides early stopping for all
  (`from_main`), so no process stops alone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.distributed as dist

from finetune_pipeline.training.base_model import pick_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @classmethod
    def from_env(cls) -> "World":
        """From the variables torchrun sets; rank 0 of 1 when they are absent."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def processes_to_launch(data_parallel: Literal["auto"] | int) -> int:
    """How many processes to start under torchrun: 0 when this process trains by itself (one process
    wanted, or it already is one of torchrun's)."""
    if World.from_env().size > 1:
        return 0
    wanted = max(torch.cuda.device_count(), 1) if data_parallel == "auto" else data_parallel
    return wanted if wanted > 1 else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_in_processes(module: str, write_job: Callable[[str], None], args: list[str], output_dir: Path,
                       processes: int, log=print, on_epoch_end=None) -> dict:
    """Write the job (splits) into a temporary folder with `write_job(folder)`, run `python -m <module>
    <folder> <output_dir> <args>` under torchrun in `processes` processes, and return the metrics rank 0
    saved in `output_dir`."""
    if on_epoch_end is not None:
        raise ValueError("on_epoch_end cannot reach torchrun's processes; set training.data_parallel to 1")
    with tempfile.TemporaryDirectory(prefix=f"{module.rsplit('.', 1)[-1]}-job-") as job:
        write_job(job)
        launch(module, [job, str(output_dir), *args], processes, log)
    from finetune_pipeline.training.results import TrainingResult

    return TrainingResult.from_json(Path(output_dir) / "metrics.json")


def launch(module: str, args: list[str], processes: int, log=print) -> None:
    """Run `python -m <module> <args>` in `processes` processes under torchrun on this machine, passing
    their output to `log` line by line. Raises when any process fails."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}", "--nnodes=1",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", module, *args]
    log(f"data-parallel training in {processes} processes: torchrun --nproc-per-node={processes} -m {module}")
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log(line.rstrip())
            lines.append(line)
    if proc.returncode != 0:
        # The processes' own error comes before torchrun's report of it (its traceback says little).
        report = next((i for i, line in enumerate(lines) if "failed (exitcode" in line), len(lines))
        raise RuntimeError(f"data-parallel training ({processes} processes, torchrun -m {module}) failed with "
                           f"exit code {proc.returncode}; the processes' last output:\n{''.join(lines[:report][-30:])}")


def start(world: World) -> torch.device:
    """Join the process group (when there are several processes) and return this process's device."""
    if world.size == 1:
        return pick_device()
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", world.local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return device


def stop(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model, world: World, device: torch.device):
    """The model to run forward/backward through: DDP around it with several processes, else itself.
    Optimizer, checkpoints and saving keep using the unwrapped model (same parameters)."""
    if world.size == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def shard(items: list, world: World) -> list:
    """This process's contiguous slice of a global batch; slice sizes differ by at most one."""
    base, extra = divmod(len(items), world.size)
    first = world.rank * base + min(world.rank, extra)
    return items[first:first + base + (world.rank < extra)]


def all_sum(value: float, world: World, device: torch.device) -> float:
    """`value` summed over all processes (float64)."""
    if world.size == 1:
        return float(value)
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total.item())


def from_main(obj, world: World):
    """Rank 0's `obj` (picklable) in every process."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
