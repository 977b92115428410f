"""Sharded datasets: how a corpus stage hands its output to the next without one process holding it.

A dataset is a folder (a local path or any fsspec URL, such as `s3://bucket/run/cleaned_corpus`) with
a manifest and one generation of Parquet shards:

    <location>/manifest.json            rows, schema, content digest, the shard list
    <location>/<generation>/part-00000.parquet
    <location>/<generation>/part-00001.parquet ...

The manifest is the commit point. Writers put their shards into a fresh generation folder (on one
machine, or from many Ray workers at once) and write the manifest last, whole; only then are older
generations removed. A reader goes by the manifest, so it sees the previous complete dataset or the new
complete one, never a partial one, whatever dies mid-write (a worker, the step process, the machine).

Readers get a handle, not rows: `scan()` (a polars LazyFrame), `iter_shards()` (one shard in memory at a
time), `to_ray()` (a Ray Dataset read on the workers), or `collect()` where a stage needs it whole.
This module imports neither dagster nor ray at import time.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

MANIFEST = "manifest.json"
FORMAT = "finetune-pipeline/sharded-parquet/1"
DEFAULT_SHARD_ROWS = 50_000
_POLARS_NATIVE = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "http", "https", "hf"}


class DatasetMissing(FileNotFoundError):
    """No complete dataset at a location (no manifest): the stage that writes it has not finished."""


@dataclass(frozen=True)
class Shard:
    path: str  # relative to the dataset's location
    rows: int
    digest: str  # sha256 of the shard file's bytes
    bytes: int = 0  # the shard file's size (0 in manifests written before it was recorded)


@dataclass(frozen=True)
class Manifest:
    rows: int
    schema: dict[str, str]  # column -> polars dtype, as written
    digest: str  # sha256 over the shards' digests, in order: the same files give the same digest
    shards: list[Shard] = field(default_factory=list)
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest (format: {data.get('format')!r})")
        return cls(rows=data["rows"], schema=data["schema"], digest=data["digest"],
                   shards=[Shard(**s) for s in data["shards"]], format=data["format"])


def _join(location: str, *parts: str) -> str:
    return "/".join([str(location).rstrip("/"), *parts])


def _fs(location: str):
    fs, path = fsspec.core.url_to_fs(str(location))
    return fs, path


def _combined_digest(shards: list[Shard]) -> str:
    return hashlib.sha256("\n".join(s.digest for s in shards).encode()).hexdigest()


def _schema_of(frame: pl.DataFrame | pl.Schema | dict) -> dict[str, str]:
    schema = frame.schema if isinstance(frame, pl.DataFrame) else frame
    return {name: str(dtype) for name, dtype in schema.items()}


def owned(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with buffers of its own. A row selection of a shard (`shard[rows]`, a filter) keeps polars'
    string views into the shard's whole string buffers: holding selections of many shards at once holds
    every one of those shards (dataset_splits' window of 50,000 rows from 20 shards held them all, 1.2 GiB at
    1M records). An Arrow round trip writes the selected strings into new buffers."""
    return pl.from_arrow(frame.to_arrow()).cast(frame.schema)


def is_local(location: str | Path) -> bool:
    """Whether `location` is on this machine's file system (a path or file:// URL), not object storage."""
    return isinstance(_fs(str(location))[0], LocalFileSystem)


def is_dataset(location: str | Path) -> bool:
    fs, path = _fs(str(location))
    return fs.exists(_join(path, MANIFEST))


def make_folder(location: str | Path) -> None:
    fs, path = _fs(str(location))
    fs.makedirs(path, exist_ok=True)


def new_generation(location: str | Path) -> str:
    """A fresh generation folder under `location` for shards about to be written (by this process or by
    workers); nothing reads it until `commit_generation` writes the manifest that names it."""
    return _join(str(location), f"g-{uuid.uuid4().hex[:12]}")


def _write_manifest(location: str, manifest: Manifest) -> None:
    fs, path = _fs(location)
    target = _join(path, MANIFEST)
    if isinstance(fs, LocalFileSystem):
        # Local: a temporary sibling renamed over the manifest (rename is atomic on one file system).
        tmp = _join(path, f".{MANIFEST}.{uuid.uuid4().hex[:8]}")
        with fs.open(tmp, "w") as out:
            out.write(manifest.to_json())
        fs.mv(tmp, target)
    else:
        # Object stores: one PUT is atomic; readers see the old object or the new one.
        with fs.open(target, "w") as out:
            out.write(manifest.to_json())


def _remove_other_generations(location: str, keep: str) -> None:
    fs, path = _fs(location)
    keep_name = keep.rstrip("/").rsplit("/", 1)[-1]
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("g-") and name != keep_name:
            fs.rm(entry, recursive=True)


def commit_generation(location: str | Path, generation: str, schema: dict[str, str] | None = None) -> Manifest:
    """Write the manifest naming every Parquet file in `generation` (sorted by name), with row counts from
    the files' footers and digests of their bytes; then remove older generations. `schema` is the
    dataset's when the generation holds no file (an empty result)."""
    location = str(location)
    fs, gen_path = _fs(generation)
    files = sorted(f for f in (fs.ls(gen_path, detail=False) if fs.exists(gen_path) else [])
                   if f.endswith(".parquet"))
    shards, found_schema = [], None
    for file in files:
        data = fs.cat_file(file)
        meta = pq.read_metadata(io.BytesIO(data))
        if found_schema is None:
            found_schema = _schema_of(pl.read_parquet(io.BytesIO(data), n_rows=0))
        relative = f"{gen_path.rstrip('/').rsplit('/', 1)[-1]}/{file.rsplit('/', 1)[-1]}"
        shards.append(Shard(path=relative, rows=meta.num_rows, digest=hashlib.sha256(data).hexdigest(),
                            bytes=len(data)))
    if found_schema is None and schema is None:
        raise ValueError(f"{generation}: no shard written and no schema given; cannot commit an empty dataset")
    return commit_shards(location, generation, shards, found_schema or schema)


def commit_shards(location: str | Path, generation: str, shards: list[Shard], schema: dict[str, str]) -> Manifest:
    """`commit_generation` for shards already described where they were written (rows and digests computed
    by the workers, in row order): the manifest from them, then older generations removed. Reads no shard."""
    manifest = Manifest(rows=sum(s.rows for s in shards), schema=schema, digest=_combined_digest(shards),
                        shards=list(shards))
    _write_manifest(str(location), manifest)
    _remove_other_generations(str(location), generation)
    return manifest


def write_shard(generation: str, name: str, frame: pl.DataFrame) -> Shard:
    """`frame` as the shard file `name` of `generation` (a folder from `new_generation`), described as written
    (rows, sha256, bytes) so a commit reads no shard back. DatasetWriter writes its shards with it, and so
    does a Ray task that writes its own shard of a stage's output (streaming.clean_dataset_on_ray)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    data = buffer.getvalue()
    fs, path = _fs(_join(generation, name))
    with fs.open(path, "wb") as out:
        out.write(data)
    return Shard(path=f"{generation.rstrip('/').rsplit('/', 1)[-1]}/{name}", rows=frame.height,
                 digest=hashlib.sha256(data).hexdigest(), bytes=len(data))


def abort_generation(location: str | Path, generation: str) -> None:
    """Remove an uncommitted `generation` of the dataset at `location`, and the dataset's folder when nothing
    else is in it (no dataset was there before)."""
    fs, path = _fs(generation)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs, folder = _fs(str(location))
    if isinstance(fs, LocalFileSystem) and fs.exists(folder) and not fs.ls(folder, detail=False):
        fs.rmdir(folder)


class DatasetWriter:
    """Write a dataset shard by shard: `write(frame)` as often as needed (frames are cut into shards of
    `shard_rows`), then `commit()`. As a context manager it commits on success and removes its
    generation on an exception, leaving the previous dataset (if any) as it was."""

    def __init__(self, location: str | Path, *, shard_rows: int = DEFAULT_SHARD_ROWS,
                 schema: pl.Schema | dict | None = None):
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be at least 1, not {shard_rows}")
        self.location = str(location)
        self.shard_rows = shard_rows
        self.generation = new_generation(self.location)
        self.schema = _schema_of(schema) if schema is not None else None
        self._polars_schema = pl.Schema(schema) if schema is not None else None
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._written = 0
        self._shards: list[Shard] = []
        self.manifest: Manifest | None = None  # once committed
        make_folder(self.generation)

    def write(self, frame: pl.DataFrame) -> None:
        if self._polars_schema is None:
            self._polars_schema, self.schema = frame.schema, _schema_of(frame)
        elif frame.schema != self._polars_schema:
            frame = frame.select(list(self._polars_schema)).cast(dict(self._polars_schema))
        offset = 0
        while offset < frame.height:
            take = min(self.shard_rows - self._pending_rows, frame.height - offset)
            self._pending.append(frame.slice(offset, take))
            self._pending_rows += take
            offset += take
            if self._pending_rows >= self.shard_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        shard = pl.concat(self._pending, how="vertical") if len(self._pending) > 1 else self._pending[0]
        self._shards.append(write_shard(self.generation, f"part-{self._written:05d}.parquet", shard))
        self._written += 1
        self._pending, self._pending_rows = [], 0

    @property
    def at_shard_end(self) -> bool:
        """No rows pending: the next row starts a shard (where `adopt` may add shards written elsewhere)."""
        return not self._pending_rows

    def shard_name(self, offset: int = 0) -> str:
        """The file name of the shard `offset` places after those written so far."""
        return f"part-{self._written + offset:05d}.parquet"

    def adopt(self, shards: list[Shard], schema: pl.Schema | dict) -> None:
        """Shards that others (Ray tasks: `streaming.write_rows_on_ray`) wrote into this writer's `generation`,
        named by `shard_name`, in row order: they follow the shards this writer wrote, and commit or abort with
        them. The writer must be at a shard's end (no rows pending), so the shards are those `write` makes."""
        if not self.at_shard_end:
            raise ValueError(f"{self.location}: {self._pending_rows} rows pending; shards are adopted at a shard's end")
        if self._polars_schema is None:
            self._polars_schema, self.schema = pl.Schema(schema), _schema_of(schema)
        self._shards.extend(shards)
        self._written += len(shards)

    def commit(self) -> Manifest:
        self._flush()
        if self._written == 0 and self._polars_schema is not None:
            # An empty result is still a dataset with a schema: one empty shard keeps scans typed.
            self._pending = [pl.DataFrame(schema=self._polars_schema)]
            self._flush()
        self.manifest = commit_shards(self.location, self.generation, self._shards, self.schema)
        return self.manifest

    def abort(self) -> None:
        """Remove this writer's generation, and the dataset's folder when nothing else is in it (no dataset
        was there before), so a failed stage leaves what was there and nothing more."""
        abort_generation(self.location, self.generation)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def write_dataset(frames: pl.DataFrame | Iterable[pl.DataFrame], location: str | Path, *,
                  shard_rows: int = DEFAULT_SHARD_ROWS, schema: pl.Schema | dict | None = None) -> Manifest:
    """A frame, or an iterable of frames (streamed: one at a time in memory), as a dataset at `location`."""
    if isinstance(frames, pl.DataFrame):
        schema = frames.schema if schema is None else schema
        frames = [frames]
    with DatasetWriter(location, shard_rows=shard_rows, schema=schema) as writer:
        for frame in frames:
            writer.write(frame)
    return read_manifest(location)


def read_manifest(location: str | Path) -> Manifest:
    fs, path = _fs(str(location))
    target = _join(path, MANIFEST)
    if not fs.exists(target):
        raise DatasetMissing(f"{location}: no {MANIFEST}, so no complete dataset here; materialize the stage "
                             "that writes it")
    with fs.open(target, "r") as src:
        return Manifest.from_json(src.read())


class ShardedDataset:
    """A handle on a committed dataset: the manifest is read once, at open, so the handle keeps reading
    the generation it opened even if a newer one is committed meanwhile (until that removes it)."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.manifest = read_manifest(self.location)

    def __repr__(self) -> str:
        return f"ShardedDataset({self.location!r}, rows={self.rows}, shards={len(self.manifest.shards)})"

    @property
    def rows(self) -> int:
        return self.manifest.rows

    @property
    def height(self) -> int:  # the name a polars frame uses, for code that takes either
        return self.manifest.rows

    @property
    def bounds(self) -> np.ndarray:
        """The first row of each shard, then the row count: shard k holds rows bounds[k]:bounds[k + 1]."""
        return np.cumsum([0] + [s.rows for s in self.manifest.shards], dtype=np.int64)

    @property
    def schema(self) -> pl.Schema:
        return self.scan().collect_schema()

    @property
    def columns(self) -> list[str]:
        return list(self.manifest.schema)

    def shard_urls(self) -> list[str]:
        return [_join(self.location, s.path) for s in self.manifest.shards]

    def scan(self) -> pl.LazyFrame:
        """A LazyFrame over the shards: polars reads local paths and its own cloud URLs (s3, gs, az, http)
        lazily; other fsspec file systems are read shard by shard through fsspec."""
        fs, _ = _fs(self.location)
        protocols = set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        if protocols & (_POLARS_NATIVE | {"file", "local"}):
            return pl.scan_parquet(self.shard_urls())
        return pl.concat([shard.lazy() for shard in self.iter_shards()], how="vertical")

    def collect(self) -> pl.DataFrame:
        return self.scan().collect()

    def iter_shards(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        for number in range(len(self.manifest.shards)):
            yield self.read_shard(number, columns)

    def read_shard(self, number: int, columns: list[str] | None = None) -> pl.DataFrame:
        """Shard `number` (in the manifest's order), only `columns` when given."""
        fs, path = _fs(self.shard_urls()[number])
        with fs.open(path, "rb") as src:
            return pl.read_parquet(src, columns=columns)

    def read_rows(self, start: int, stop: int) -> pl.DataFrame:
        """Rows `start` to `stop` (exclusive) in dataset order, reading only the shards they lie in (the
        manifest's row counts say which): a worker's share of a stage, read where the worker runs."""
        parts, offset = [], 0
        for url, shard in zip(self.shard_urls(), self.manifest.shards):
            if offset < stop and start < offset + shard.rows:
                fs, path = _fs(url)
                with fs.open(path, "rb") as src:
                    frame = pl.read_parquet(src)
                parts.append(frame.slice(max(start - offset, 0), min(stop, offset + shard.rows) - max(start, offset)))
            offset += shard.rows
        if not parts:
            return self.scan().head(0).collect()
        return pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]

    def take(self, rows: np.ndarray, columns: list[str]) -> pl.DataFrame:
        """`columns` of the dataset's rows `rows` (any order, repeats allowed), in that order: only the shards
        holding them are read, one at a time, and the rows kept in buffers of their own (`owned`), so a few
        rows of every shard never hold every shard."""
        rows = np.asarray(rows, dtype=np.int64)
        bounds = self.bounds
        if rows.size and (rows.min() < 0 or rows.max() >= bounds[-1]):
            raise IndexError(f"{self.location}: rows outside 0..{int(bounds[-1]) - 1}")
        shard = np.searchsorted(bounds, rows, side="right") - 1
        parts, order = [], []
        for s in np.unique(shard):
            at = np.flatnonzero(shard == s)
            parts.append(owned(self.read_shard(int(s), columns)[rows[at] - bounds[s]]))
            order.append(at)
        if not parts:
            return self.scan().select(columns).head(0).collect()
        taken = pl.concat(parts, how="vertical")
        return taken[np.argsort(np.concatenate(order), kind="stable")]

    def iter_batches(self, rows: int) -> Iterator[pl.DataFrame]:
        """Frames of at most `rows` rows, in order, reading one shard at a time."""
        for shard in self.iter_shards():
            for offset in range(0, shard.height, rows):
                yield shard.slice(offset, rows)

    def to_ray(self, **read_options):
        """A Ray Dataset over the shards, read by the workers (the caller's process reads none)."""
        import ray.data

        return ray.data.read_parquet(self.shard_urls(), **read_options)


def open_dataset(location: str | Path) -> ShardedDataset:
    return ShardedDataset(location)
