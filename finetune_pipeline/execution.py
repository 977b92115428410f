"""Where the heavy stages run: in this process (`local`) or on a Ray cluster (`ray`), same code either way.

Each heavy technique is written once as a function over a batch: a polars DataFrame in, a polars
DataFrame out. A stage wraps its input in `frames(frame, settings.execution)` and chains the few
operations below; `LocalFrames` calls the batch function on the whole frame, `RayFrames` runs it through
Ray Data (`map_batches`, a hash shuffle on the group keys, a hash join), so no algorithm exists twice.

- `map_batches(fn)`: `fn` sees any slice of the rows (row-wise techniques).
- `map_groups(keys, fn)`: `fn` sees every row of a group together (whole documents, whole LSH buckets);
  on Ray this is a hash shuffle on `keys`, then `fn` per shuffled block (vectorised over its groups).
  With `parallel=True` (cleaning) and `execution.workers` above 1, `local` spreads the groups of a large
  frame over that many processes (`process_pool_groups`).
- `join(other, on)`: inner join; on Ray a distributed hash join.
- `to_polars()`: collect. Row order is the input's for `map_batches` (order is preserved); after
  `map_groups` and `join` callers sort by a key.

`import ray` happens only when the backend is `ray`. Imports no dagster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import polars as pl

from finetune_pipeline import progress
from finetune_pipeline.settings import ExecutionSettings

log = logging.getLogger(__name__)
BatchFn = Callable[..., pl.DataFrame]
# Passed on to Ray workers so they behave like this process (offline models, no telemetry).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK",
                 "UNSTRUCTURED_DISABLE_NOTICE", "TOKENIZERS_PARALLELISM", "FINETUNE_DATA_DIR")


class LocalFrames:
    """A polars frame; every operation runs in this process."""

    def __init__(self, frame: pl.DataFrame, execution: ExecutionSettings):
        self.frame, self.execution = frame, execution

    def map_batches(self, fn: BatchFn, *, batch_size: int | None = None, gpu_actor: bool = False,
                    **fn_kwargs) -> LocalFrames:
        return LocalFrames(fn(self.frame, **fn_kwargs), self.execution)

    def map_groups(self, keys: list[str], fn: BatchFn, *, parallel: bool = False, **fn_kwargs) -> LocalFrames:
        if parallel and self.frame.height >= POOL_MIN_ROWS and (workers := local_workers(self.execution)) > 1:
            return LocalFrames(process_pool_groups(self.frame, keys, fn, workers, **fn_kwargs), self.execution)
        return LocalFrames(fn(self.frame, **fn_kwargs), self.execution)

    def join(self, other: LocalFrames, on: list[str]) -> LocalFrames:
        return LocalFrames(self.frame.join(other.frame, on=on, how="inner"), self.execution)

    def materialize(self) -> LocalFrames:
        return self

    def count(self) -> int:
        return self.frame.height

    def to_polars(self) -> pl.DataFrame:
        return self.frame


class RayFrames:
    """A Ray Dataset of Arrow blocks; batch functions run on the cluster's workers."""

    def __init__(self, dataset, execution: ExecutionSettings):
        self.dataset, self.execution = dataset, execution

    @classmethod
    def from_polars(cls, frame: pl.DataFrame, execution: ExecutionSettings,
                    batch_size: int | None = None) -> RayFrames:
        import ray.data

        connect(execution)
        # Blocks of about batch_size rows, so the work spreads over the workers from the first step.
        blocks = max(1, min(-(-frame.height // (batch_size or execution.batch_size)), 4 * _cluster_cpus()))
        tables = [part.to_arrow() for part in _slices(frame, blocks)]
        return cls(ray.data.from_arrow(tables), execution)

    def map_batches(self, fn: BatchFn, *, batch_size: int | None = None, gpu_actor: bool = False,
                    **fn_kwargs) -> RayFrames:
        import ray.data

        options: dict[str, Any] = {"batch_format": "pyarrow", "zero_copy_batch": True,
                                   "batch_size": batch_size or self.execution.batch_size}
        if gpu_actor:  # models load once per actor; one GPU each when the cluster has GPUs
            gpus = 1 if _cluster_gpus() >= 1 else 0
            options.update(compute=ray.data.ActorPoolStrategy(size=self.execution.embedding_actors),
                           num_gpus=gpus, fn_constructor_args=(fn, fn_kwargs))
            return RayFrames(self.dataset.map_batches(_PolarsActor, **options), self.execution)
        return RayFrames(self.dataset.map_batches(_polars_batch, fn_args=(fn,), fn_kwargs=fn_kwargs, **options),
                         self.execution)

    def map_groups(self, keys: list[str], fn: BatchFn, *, parallel: bool = False, **fn_kwargs) -> RayFrames:
        # What Dataset.groupby(keys).map_groups does (a hash shuffle on the keys, then whole blocks), but
        # with one vectorised call per block instead of one Python call per group.
        shuffled = self.dataset.repartition(_partitions(), keys=keys, sort=True)
        return RayFrames(shuffled.map_batches(_polars_batch, fn_args=(fn,), fn_kwargs=fn_kwargs, batch_size=None,
                                              batch_format="pyarrow"), self.execution)

    def join(self, other: RayFrames, on: list[str]) -> RayFrames:
        return RayFrames(self.dataset.join(other.dataset, join_type="inner", num_partitions=_partitions(),
                                           on=tuple(on)), self.execution)

    def materialize(self) -> RayFrames:
        return RayFrames(self.dataset.materialize(), self.execution)

    def count(self) -> int:
        return self.dataset.count()

    def to_polars(self) -> pl.DataFrame:
        import pyarrow as pa

        tables = _tables(self.dataset)
        if not tables:
            return pl.DataFrame()
        return pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))


Frames = LocalFrames | RayFrames

# Below this many rows `parallel` map_groups stays in this process: a spawned worker spends about 8 s
# importing Presidio (it imports transformers and torch) and loading spaCy before its first record, and
# that start takes CPU from this process (measured at 14k records on 2 cores: 34 s alone, 25 s with one worker).
POOL_MIN_ROWS = 10_000


def local_workers(execution: ExecutionSettings) -> int:
    """Processes for `parallel` local map_groups: the setting, or with 0 the CPUs this process may use."""
    if execution.workers:
        return execution.workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def process_pool_groups(frame: pl.DataFrame, keys: list[str], fn: BatchFn, workers: int, *,
                        chunks_per_worker: int = 8, **fn_kwargs) -> pl.DataFrame:
    """`fn` over `frame` in `workers` processes: this one and `workers - 1` spawned (not forked: this
    process may hold threads). Every group of `keys` stays whole in one chunk, about `chunks_per_worker`
    chunks per worker balanced by rows; this process works through the chunks in order while each
    spawned worker, once it has started (its imports and models cost seconds), takes the next one, so a
    slow start costs nothing but that worker's share. The chunks' outputs are concatenated (callers sort
    by a key, as after Ray's shuffle); a chunk travels as Arrow IPC bytes."""
    import multiprocessing

    sizes = frame.group_by(keys).len().sort(["len", *keys], descending=[True, *[False] * len(keys)])
    count = max(1, min(sizes.height, workers * chunks_per_worker))
    loads, chunk_of = [0] * count, []
    for size in sizes["len"].to_list():  # largest groups first, each to the lightest chunk
        target = loads.index(min(loads))
        loads[target] += size
        chunk_of.append(target)
    labelled = frame.join(sizes.select(keys).with_columns(pl.Series("_chunk", chunk_of, dtype=pl.Int32)),
                          on=keys, how="left", nulls_equal=True)
    todo = [part.drop("_chunk") for part in labelled.partition_by("_chunk", maintain_order=True)]
    if len(todo) == 1:
        return fn(todo[0], **fn_kwargs)
    outputs: list[pl.DataFrame] = []
    rows_done, rows = [0], {}  # rows of each future's chunk

    def done(output: pl.DataFrame, part_rows: int) -> None:
        outputs.append(output)
        rows_done[0] += part_rows
        progress.report("rows done", rows_done[0], frame.height)

    with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        def submit(part: pl.DataFrame):
            future = pool.submit(_run_part, fn, _ipc(part), fn_kwargs)
            rows[future] = part.height
            return future

        # two chunks queued per worker, so one is ready when it finishes the other
        running = {submit(todo.pop()) for _ in range(min(2 * (workers - 1), len(todo) - 1))}
        while todo:
            part = todo.pop(0)
            done(fn(part, **fn_kwargs), part.height)
            for future in [f for f in running if f.done()]:
                running.remove(future)
                done(pl.read_ipc(future.result()), rows[future])
                if len(todo) > 1:  # hand the worker the next chunk from the end; this process keeps the front
                    running.add(submit(todo.pop()))
        for future in running:
            done(pl.read_ipc(future.result()), rows[future])
    return pl.concat(outputs, how="vertical_relaxed")


def _ipc(frame: pl.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.write_ipc(buffer)
    return buffer.getvalue()


def _run_part(fn: BatchFn, data: bytes, fn_kwargs: dict) -> bytes:
    return _ipc(fn(pl.read_ipc(data), **fn_kwargs))


def frames(frame: pl.DataFrame, execution: ExecutionSettings, batch_size: int | None = None) -> Frames:
    """`frame` on the configured backend (`batch_size`: rows per block on Ray; default the setting)."""
    if execution.backend == "ray":
        return RayFrames.from_polars(frame, execution, batch_size)
    return LocalFrames(frame, execution)


def map_batches(frame: pl.DataFrame, fn: BatchFn, execution: ExecutionSettings, *, batch_size: int | None = None,
                gpu_actor: bool = False, **fn_kwargs) -> pl.DataFrame:
    """`fn` over `frame` on the configured backend, row order kept; the common one-step case."""
    return (frames(frame, execution, batch_size).map_batches(fn, batch_size=batch_size, gpu_actor=gpu_actor,
                                                             **fn_kwargs).to_polars())


def ray_address(execution: ExecutionSettings) -> str | None:
    """The cluster to connect to: the setting, else $RAY_ADDRESS, else None (a local cluster is started)."""
    return execution.ray_address or os.environ.get("RAY_ADDRESS") or None


def ray_init_options() -> dict:
    """Keyword arguments for `ray.init`: ship this package to the workers (they run the driver's code even
    when the cluster's image has another version or none) and forward the offline environment."""
    import finetune_pipeline

    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    return {"runtime_env": {"py_modules": [finetune_pipeline], "env_vars": env},
            "include_dashboard": False, "log_to_driver": True, "configure_logging": False}


def connect(execution: ExecutionSettings):
    """Connect to the cluster once per process; a connection made before (e.g. by the Dagster Ray resource)
    is reused as it is. Returns Ray's context when this call connected, else None."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RuntimeError("execution.backend is 'ray' but Ray is not installed: pip install "
                           "'finetune-pipeline[ray]' (or set execution.backend: local)") from None

    context = None
    if not ray.is_initialized():
        address = ray_address(execution)
        log.info("connecting to Ray at %s", address or "a new local cluster")
        options = ray_init_options()
        if address:  # include_dashboard only applies when ray.init starts the cluster
            options.pop("include_dashboard")
        context = ray.init(address=address, **options)
    data_context = ray.data.DataContext.get_current()
    data_context.execution_options.preserve_order = True  # map_batches output in input order, as locally
    data_context.enable_progress_bars = False
    return context


def cluster_summary() -> dict:
    """Nodes, CPUs and GPUs of the connected cluster (for the run's metadata)."""
    import ray

    resources = ray.cluster_resources()
    return {"nodes": sum(n["Alive"] for n in ray.nodes()), "cpus": int(resources.get("CPU", 0)),
            "gpus": int(resources.get("GPU", 0))}


def _polars_batch(table, fn: BatchFn, **fn_kwargs):
    return fn(pl.from_arrow(table), **fn_kwargs).to_arrow()


class _PolarsActor:
    """A batch function kept in a long-lived worker (its model is loaded once)."""

    def __init__(self, fn: BatchFn, fn_kwargs: dict):
        self.fn, self.fn_kwargs = fn, fn_kwargs

    def __call__(self, table):
        return self.fn(pl.from_arrow(table), **self.fn_kwargs).to_arrow()


def _tables(dataset) -> list:
    import ray

    tables = ray.get(dataset.to_arrow_refs())
    return [t for t in tables if t.num_rows] or tables[:1]  # an empty result keeps its columns


def _slices(frame: pl.DataFrame, parts: int) -> list[pl.DataFrame]:
    size = max(1, -(-frame.height // parts))
    return [frame.slice(start, size) for start in range(0, max(frame.height, 1), size)]


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _cluster_gpus() -> float:
    import ray

    return ray.cluster_resources().get("GPU", 0)


def _partitions() -> int:
    """Shuffle partitions: one per CPU of the cluster (Ray's default of 200 starves a small cluster)."""
    return _cluster_cpus()
