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
- `write_dataset(location)`: the rows as a sharded dataset (`finetune_pipeline.shards`), its manifest
  returned. On Ray the workers write the shards (one Parquet file per write task, named by the task's
  position, so the files' name order is the row order) into a fresh generation and this process writes
  only the manifest; nothing of the corpus passes through it.

Shard to shard (issue 36): `RayFrames.from_dataset(dataset)` reads a `ShardedDataset` on the workers (one
read task per shard, through fsspec as shards.py reads), and `map_batches_to_dataset` /
`map_groups_to_dataset` run a stage from one dataset to the next on either backend. On Ray the step
process holds neither input nor output; a worker that dies mid-stage has its tasks retried elsewhere (Ray
Data's defaults, kept here:
tasks `max_retries=-1` for system failures such as a lost node or worker, actors `max_restarts=-1`,
`max_task_retries=-1`; an exception raised by a batch function is not retried and fails the stage). The
manifest is written only after every shard is, so a failed stage leaves the previous dataset (or none).

`import ray` happens only when the backend is `ray`. Imports no dagster.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from finetune_pipeline import progress, shards
from finetune_pipeline.settings import ExecutionSettings
from finetune_pipeline.shards import Manifest, ShardedDataset

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

    def write_dataset(self, location: str | Path, *, shard_rows: int = shards.DEFAULT_SHARD_ROWS) -> Manifest:
        """The frame as a sharded dataset at `location` (committed: the manifest written last)."""
        return shards.write_dataset(self.frame, location, shard_rows=shard_rows)


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

    @classmethod
    def from_dataset(cls, dataset: ShardedDataset, execution: ExecutionSettings, *, columns: list[str] | None = None,
                     row_index: str | None = None) -> RayFrames:
        """The shards of `dataset`, read by the workers, in the manifest's order: one read task per shard
        (each a block; `map_batches` cuts it into batches), so the shards spread over the workers. (Ray
        2.60's `read_parquet` packs small files into few read tasks, which the map steps fused with the read
        then follow.) `columns`: read only these. `row_index`: add each row's position in the whole dataset
        under this name (polars' index dtype, as `with_row_index`), from the shard offsets in the manifest."""
        import ray.data

        connect(execution)
        source = _shard_source(dataset, columns, row_index)
        return cls(ray.data.read_datasource(source, override_num_blocks=max(1, len(dataset.manifest.shards))),
                   execution)

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

    def sort(self, key: str) -> RayFrames:
        """Rows ordered by `key` across the whole dataset (a distributed sort: range partitions in order)."""
        return RayFrames(self.dataset.sort(key), self.execution)

    def to_polars(self) -> pl.DataFrame:
        import pyarrow as pa

        tables = _tables(self.dataset)
        if not tables:
            return pl.DataFrame()
        return pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))

    def write_dataset(self, location: str | Path, *, schema: pl.Schema | dict | None = None) -> Manifest:
        """The rows as a sharded dataset at `location`, written by the workers: each write task writes its
        blocks as one Parquet file into a fresh generation, named by the task's position (so the name order
        is the row order); the workers then read each file's footer and hash its bytes, and this process
        writes the manifest from those (rows, digests), reading no row. On a failure the generation is
        removed and the previous dataset, if any, stays as it was. `schema`: the dataset's when no row comes
        out (else taken from the first shard)."""
        import ray

        generation = shards.new_generation(location)
        paths, options = _ray_paths(generation, [generation])
        try:
            self.dataset.write_parquet(paths[0], filename_provider=_part_names(), **options)
            fs, gen_path = shards._fs(generation)
            files = [f for f in (fs.ls(gen_path, detail=False) if fs.exists(gen_path) else [])
                     if f.endswith(".parquet")]
            files.sort(key=_part_order)
            name = gen_path.rstrip("/").rsplit("/", 1)[-1]
            described = ray.get([_describe_shard_task().remote(shards._join(generation, f.rsplit("/", 1)[-1]))
                                 for f in files])
            found = [shards.Shard(path=f"{name}/{f.rsplit('/', 1)[-1]}", rows=rows, digest=digest, bytes=size)
                     for f, (rows, digest, size, _) in zip(files, described)]
            if described:
                written_schema = described[0][3]
            elif schema is not None:
                written_schema = {n: str(t) for n, t in dict(schema).items()}
            else:
                written_schema = _schema_of_ray(self.dataset)
            return shards.commit_shards(location, generation, found, written_schema)
        except BaseException:
            fs, gen_path = shards._fs(generation)
            if fs.exists(gen_path):
                fs.rm(gen_path, recursive=True)
            raise


Frames = LocalFrames | RayFrames


def dataset_frames(dataset: ShardedDataset, execution: ExecutionSettings, *, columns: list[str] | None = None,
                   row_index: str | None = None) -> Frames:
    """`dataset` on the configured backend: on Ray read by the workers (`RayFrames.from_dataset`), locally
    collected into this process (`columns` and `row_index` as there)."""
    if execution.backend == "ray":
        return RayFrames.from_dataset(dataset, execution, columns=columns, row_index=row_index)
    frame = dataset.scan().select(columns) if columns else dataset.scan()
    return LocalFrames((frame.with_row_index(row_index) if row_index else frame).collect(), execution)


def map_batches_to_dataset(source: ShardedDataset, fn: BatchFn, location: str | Path, execution: ExecutionSettings,
                           *, batch_size: int | None = None, gpu_actor: bool = False,
                           shard_rows: int = shards.DEFAULT_SHARD_ROWS, **fn_kwargs) -> Manifest:
    """A row-wise stage from one dataset to the next: `fn` over every batch of `source`, the rows that come
    out written as a dataset at `location` in input order (committed last). On Ray the workers read,
    compute and write; locally one shard at a time is in memory. Returns the new manifest."""
    if execution.backend == "ray":
        return (RayFrames.from_dataset(source, execution)
                .map_batches(fn, batch_size=batch_size, gpu_actor=gpu_actor, **fn_kwargs)
                .write_dataset(location))
    with shards.DatasetWriter(location, shard_rows=shard_rows) as writer:
        for shard in source.iter_shards():
            for start in range(0, max(shard.height, 1), batch_size or shard.height or 1):
                writer.write(fn(shard.slice(start, batch_size or shard.height), **fn_kwargs))
    return shards.read_manifest(location)


def map_groups_to_dataset(source: ShardedDataset, keys: list[str], fn: BatchFn, location: str | Path,
                          execution: ExecutionSettings, *, prepare: BatchFn | None = None,
                          row_index: str | None = None, sort_by: str | None = None, parallel: bool = False,
                          shard_rows: int = shards.DEFAULT_SHARD_ROWS, **fn_kwargs) -> Manifest:
    """A stage over whole groups, from one dataset to the next (what `frames(...).map_groups(...)` does
    for a frame): `row_index` (optional) adds each row's position in `source` under that name, `prepare`
    (a row-wise batch function, optional) adds the key columns, `fn` sees every row of a group of `keys`
    together, and the output is written at `location` ordered by `sort_by` (default `row_index`; None and
    no `row_index`: the order is not defined). Returns the committed manifest.

    Ray: read, prepare, shuffle on `keys`, `fn`, sort and write all run on the workers; this process
    writes the manifest only. Local: shard by shard (one shard's rows in memory, `parallel` as in
    `LocalFrames.map_groups`) while no group spans two shards; when one does, the shards written so far
    are dropped and the whole of `source` is done in one piece in this process (correct, not bounded)."""
    sort_by = sort_by or row_index
    if execution.backend == "ray":
        ray_frames = RayFrames.from_dataset(source, execution, row_index=row_index)
        if prepare is not None:
            ray_frames = ray_frames.map_batches(prepare)
        out = ray_frames.map_groups(keys, fn, parallel=parallel, **fn_kwargs)
        return (out.sort(sort_by) if sort_by else out).write_dataset(location)

    def groups_of(frame: pl.DataFrame) -> pl.DataFrame:
        return LocalFrames(frame, execution).map_groups(keys, fn, parallel=parallel, **fn_kwargs).to_polars()

    def prepared(frame: pl.DataFrame, offset: int) -> pl.DataFrame:
        frame = frame.with_row_index(row_index, offset=offset) if row_index else frame
        return prepare(frame) if prepare is not None else frame

    seen: pl.DataFrame | None = None
    writer = shards.DatasetWriter(location, shard_rows=shard_rows)
    try:
        offset = 0
        for shard in source.iter_shards():
            part = prepared(shard, offset)
            offset += shard.height
            part_keys = part.select(keys).unique()
            if seen is not None and part_keys.join(seen, on=keys, how="semi", nulls_equal=True).height:
                writer.abort()
                log.info("%s: a group of %s spans two shards; grouping the whole dataset in this process",
                         source.location, keys)
                whole = groups_of(prepared(source.collect(), 0))
                return shards.write_dataset(whole.sort(sort_by) if sort_by else whole, location,
                                            shard_rows=shard_rows)
            seen = part_keys if seen is None else pl.concat([seen, part_keys])
            out = groups_of(part)
            writer.write(out.sort(sort_by) if sort_by else out)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise

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


def per_shard(fn, calls: Iterable[tuple], execution: ExecutionSettings, gpu: bool = False):
    """`fn(*args)` for each `args` of `calls` (a shard's work; a list, or a generator whose arguments are made
    only as the tasks are sent), yielded as `(index, answer)`: locally one after
    the other in this process; on Ray (`execution.backend`) as Ray tasks on the workers, one CPU each, at most
    two per CPU of the cluster in flight, each answer yielded (and dropped here) as it comes, so this process
    holds one shard's answer at a time. A task whose worker dies is run again (Ray's `max_retries`); a task
    that fails raises here, the tasks still running are cancelled. `gpu`: a model's work (embeddings): one GPU
    per task when the cluster has GPUs (then at most two per GPU in flight)."""
    if execution.backend != "ray":
        for index, args in enumerate(calls):
            yield index, fn(*args)
        return
    import ray

    connect(execution)
    gpus = 1 if gpu and _cluster_gpus() >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=3)(fn)
    window = 2 * (int(_cluster_gpus()) if gpus else _cluster_cpus())
    pending: dict = {}
    waiting = iter(enumerate(calls))  # `calls` may be a generator: its arguments made as the tasks are sent
    try:
        while True:
            for index, args in itertools.islice(waiting, max(0, window - len(pending))):
                pending[task.remote(*args)] = index
            if not pending:  # no call at all, or the last answer already yielded
                break
            finished, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(finished[0])
            yield index, ray.get(finished[0])
    finally:
        for ref in pending:
            ray.cancel(ref)


def ray_address(execution: ExecutionSettings) -> str | None:
    """The cluster to connect to: the setting, else $RAY_ADDRESS, else None (a local cluster is started)."""
    return execution.ray_address or os.environ.get("RAY_ADDRESS") or None


def ray_init_options() -> dict:
    """Keyword arguments for `ray.init`: ship this package to the workers (they run the driver's code even
    when the cluster's image has another version or none) and forward the offline environment. The package
    goes by its folder's path, not as the module object: a `ray://` (Ray Client, e.g. KubeRay's head service)
    connection pickles the runtime environment, and a module object cannot be pickled."""
    import finetune_pipeline

    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    return {"runtime_env": {"py_modules": [str(Path(finetune_pipeline.__file__).parent)], "env_vars": env},
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


def _ray_paths(location: str, urls: list[str]) -> tuple[list[str], dict]:
    """Paths and the `filesystem` option for Ray's Parquet reader and writer: local paths as they are;
    any other fsspec URL through its fsspec file system (the same credentials and endpoint as shards.py)."""
    from fsspec.implementations.local import LocalFileSystem

    fs, _ = shards._fs(location)
    if isinstance(fs, LocalFileSystem):
        return [shards._fs(url)[1] for url in urls], {}
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return [shards._fs(url)[1] for url in urls], {"filesystem": PyFileSystem(FSSpecHandler(fs))}


def _read_shard(url: str, offset: int, columns: list[str] | None, row_index: str | None):
    """One shard as an Arrow table (with its row index), read through fsspec as shards.py reads it (a
    local path or any fsspec URL): the read task of `RayFrames.from_dataset`, run on a worker."""
    fs, path = shards._fs(url)
    with fs.open(path, "rb") as src:
        frame = pl.read_parquet(src, columns=columns)
    return (frame.with_row_index(row_index, offset=offset) if row_index else frame).to_arrow()


def _shard_source(dataset: ShardedDataset, columns: list[str] | None, row_index: str | None):
    """A Ray Datasource with one read task per shard of `dataset` (made here: ray is imported only with
    the ray backend)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    listing = []
    offset = 0
    for url, shard in zip(dataset.shard_urls(), dataset.manifest.shards):
        listing.append((url, offset, shard.rows, shard.bytes))
        offset += shard.rows

    class ShardSource(Datasource):
        def get_name(self) -> str:
            return "Shards"

        def estimate_inmemory_data_size(self) -> int | None:
            return sum(size for *_, size in listing) or None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context=None) -> list:
            def task(url: str, start: int, rows: int, size: int) -> ReadTask:
                return ReadTask(lambda: [_read_shard(url, start, columns, row_index)],
                                BlockMetadata(num_rows=rows, size_bytes=size or None, exec_stats=None,
                                              input_files=[url]))
            return [task(*entry) for entry in listing]

    return ShardSource()


def _part_order(file: str) -> tuple[int, int]:
    """(task, file) of a shard written by `_PartNames`: part-<task>-<write uuid>-<i>.parquet."""
    stem = file.rsplit("/", 1)[-1].removesuffix(".parquet")
    parts = stem.split("-")
    return int(parts[1]), int(parts[-1])


def _part_names():
    """Ray's file names for a write: part-<task index>-<write uuid>-<i>.parquet (Ray adds -<i>)."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):  # made here: ray is imported only with the ray backend
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}-{write_uuid.replace('-', '')}.parquet"

    return PartNames()


def _describe_shard(url: str) -> tuple[int, str, int, dict[str, str]]:
    """(rows, sha256 of the bytes, size, polars schema) of one written shard, computed on a worker."""
    import hashlib
    import io

    import pyarrow.parquet as pq

    fs, path = shards._fs(url)
    data = fs.cat_file(path)
    meta = pq.read_metadata(io.BytesIO(data))
    schema = {n: str(t) for n, t in pl.read_parquet(io.BytesIO(data), n_rows=0).schema.items()}
    return meta.num_rows, hashlib.sha256(data).hexdigest(), len(data), schema


_DESCRIBE = None


def _describe_shard_task():
    global _DESCRIBE
    if _DESCRIBE is None:
        import ray

        _DESCRIBE = ray.remote(num_cpus=1)(_describe_shard)
    return _DESCRIBE


def _schema_of_ray(dataset) -> dict[str, str]:
    schema = dataset.schema()
    if schema is None:
        raise ValueError("the stage produced no rows and no schema; pass schema= to write_dataset")
    empty = pl.from_arrow(schema.base_schema.empty_table()) if hasattr(schema, "base_schema") else None
    return {n: str(t) for n, t in empty.schema.items()} if empty is not None else {}


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
