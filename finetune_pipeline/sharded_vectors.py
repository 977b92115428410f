"""Sentence vectors of a sharded dataset's texts, without holding the texts or the vectors: what the domain filter
(`domain_sharded.py`) and semantic dedup (`dedup/semantic_sharded.py`) embed on the streaming path.

`embed_rows` gives every asked-for row's vector in a spill folder (one .npy file per shard, mapped only while it
is read or written), the texts read a shard at a time:
1. per shard, the cache keys of its rows' texts (`embeddings.text_key`; a Ray task on the workers on Ray);
2. the embedding cache's file (and the parts this run wrote already) read once, a batch at a time: every vector
   it has for these keys goes to the spill files;
3. per shard, its texts that no cache had (the first row of each such text: a text met again is copied, not
   embedded twice) embedded here (by the encoder's own process on a large corpus: `encoder_process`), or on Ray by a task on the workers (the model loaded once per worker process,
   on a GPU where the cluster has them), which reads the shard's texts itself and sends back the vectors; they
   go to the spill files and, as a part of the stage's cache, to disk (`EmbeddingCache.add_part`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from finetune_pipeline import progress
from finetune_pipeline.embeddings import (EmbeddingCache, EncoderProcess, embed, model_identity, model_path,
                                         text_key)
from finetune_pipeline.execution import per_shard
from finetune_pipeline.settings import DedupSettings, DomainSettings, ExecutionSettings
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.tasks import Task

DOMAIN = "domain"  # what the domain filter scores: the kind's `domain_texts` (a prompt where there is one)
TEXT = "text"  # what semantic dedup compares: the record's text


@dataclass(frozen=True)
class Encoder:
    """Which model embeds, and how (`embeddings.embed`'s settings)."""

    model: str | None
    batch_size: int
    max_length: int

    @classmethod
    def for_domain(cls, cfg: DomainSettings) -> Encoder:
        return cls(cfg.model, cfg.batch_size, cfg.max_length)

    @classmethod
    def for_semantic(cls, cfg: DedupSettings) -> Encoder:
        return cls(cfg.semantic_model, cfg.semantic_batch_size, cfg.semantic_max_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        return embed(texts, self.model, self.batch_size, self.max_length)

    def identity(self) -> str:
        return model_identity(model_path(self.model))


def shard_texts(dataset: ShardedDataset, number: int, task: Task, what: str,
                local: np.ndarray | None = None) -> list[str]:
    """The texts `what` names of shard `number`'s rows `local` (None: every row), in that order."""
    columns = ["text", *(["prompt"] if what == DOMAIN and "prompt" in dataset.columns else [])]
    frame = dataset.read_shard(number, columns)
    if local is not None:
        frame = frame[local]
    return task.domain_texts(frame) if what == DOMAIN else frame["text"].fill_null("").to_list()


def _shard_keys(dataset: ShardedDataset, number: int, task: Task, what: str, local: np.ndarray, identity: str,
                max_length: int) -> list[str]:
    """Step 1 for one shard (a Ray task on Ray)."""
    return [text_key(text, identity, max_length) for text in shard_texts(dataset, number, task, what, local)]


def _shard_vectors(dataset: ShardedDataset, number: int, task: Task, what: str, local: np.ndarray,
                   encoder: Encoder | EncoderProcess) -> np.ndarray:
    """Step 3 for one shard (a Ray task on Ray): the vectors of its rows `local`, in that order."""
    return encoder.encode(shard_texts(dataset, number, task, what, local))


def encode_on_worker(texts: list[str], encoder: Encoder) -> np.ndarray:
    """A few texts embedded (a Ray task on Ray: the domain's examples)."""
    return encoder.encode(texts)


@contextmanager
def encoder_process(encoder: Encoder, execution: ExecutionSettings, texts: int) -> Iterator[EncoderProcess | None]:
    """Locally, for a pass over `texts` texts, at least `execution.encoder_process_min_texts`: the encoder in a
    process of its own for the block (`embeddings.EncoderProcess`, started at its first request: a pass whose
    vectors are all cached starts none), so that this process never loads the model; else None."""
    minimum = execution.encoder_process_min_texts
    if execution.backend == "ray" or minimum is None or texts < minimum:
        yield None
        return
    with EncoderProcess(model_path(encoder.model), encoder.batch_size, encoder.max_length) as apart:
        yield apart


def remote_encoder(encoder: Encoder, execution: ExecutionSettings, apart: EncoderProcess | None = None):
    """What `embeddings.embed` takes as `encode` so that the model runs elsewhere: on Ray on a worker; locally
    `apart` (`encoder_process`), else None (here)."""
    if execution.backend != "ray":
        return apart

    def encode(texts: list[str]) -> np.ndarray:
        return next(per_shard(encode_on_worker, [(texts, encoder)], execution, gpu=True))[1]

    return encode


class Vectors:
    """The vectors in one .npy file per shard (created at the first write), rows addressed by dataset row. A file
    is mapped only while it is read or written (a mapping's pages count in this process's resident memory as
    long as it stays: kept open, 1M vectors would show as 1.5 GB here)."""

    def __init__(self, folder: Path, bounds: np.ndarray, dim: int | None = None):
        self.folder, self.bounds, self.dim = folder, bounds, None
        self.paths = [folder / f"x-{s}.npy" for s in range(len(bounds) - 1)]
        if dim is not None:
            self._create(dim)

    def _create(self, dim: int) -> None:
        self.dim = dim
        for s, path in enumerate(self.paths):
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                      shape=(int(self.bounds[s + 1] - self.bounds[s]), dim)).flush()

    def _by_shard(self, rows: np.ndarray):
        shard = np.searchsorted(self.bounds, rows, side="right") - 1
        for s in np.unique(shard):
            inside = np.flatnonzero(shard == s)
            yield int(s), inside, rows[inside] - self.bounds[s]

    def put(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        if self.dim is None:
            self._create(vectors.shape[1])
        for s, inside, local in self._by_shard(rows):
            stored = np.load(self.paths[s], mmap_mode="r+")
            stored[local] = vectors[inside]
            stored.flush()
            del stored

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim or 0), dtype=np.float32)
        for s, inside, local in self._by_shard(rows):
            stored = np.load(self.paths[s], mmap_mode="r")
            out[inside] = stored[local]
            del stored
        return out

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows `start .. stop` (across shards when the block spans two)."""
        return self.take(np.arange(start, stop))


def embed_rows(dataset: ShardedDataset, rows: np.ndarray | None, task: Task, what: str, encoder: Encoder,
               execution: ExecutionSettings, cache: EmbeddingCache | None, folder: Path,
               dim: int | None = None, apart: EncoderProcess | None = None) -> Vectors:
    """The vectors of the dataset's rows `rows` (None: every row) in a `Vectors` under `folder` (module docstring).
    `dim`: the vectors' size when known (the files are then made even for no rows). `apart`: locally, the encoder's
    own process (`encoder_process`) that embeds the texts no cache had."""
    bounds = dataset.bounds
    vectors = Vectors(folder, bounds, dim)
    rows = np.arange(int(bounds[-1]), dtype=np.int64) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    shard_of = np.searchsorted(bounds, rows, side="right") - 1
    identity = encoder.identity()
    calls = []
    for s in range(len(bounds) - 1):
        inside = np.flatnonzero(shard_of == s)
        if inside.size:
            calls.append((dataset, s, task, what, rows[inside] - bounds[s], identity, encoder.max_length))
    keys: list[pl.Series | None] = [None] * len(calls)
    for index, found in per_shard(_shard_keys, calls, execution):
        keys[index] = pl.Series("key", found, dtype=pl.String)
    every = pl.concat(keys) if keys else pl.Series("key", [], dtype=pl.String)  # in the order of `rows`
    del keys
    have = np.zeros(len(every), dtype=bool)
    stored = np.zeros(len(every), dtype=bool)  # found in the cache's file: to be written into it again
    if cache is not None:
        for at, found, in_file in cache.find(every):
            vectors.put(rows[at], found)
            have[at] = True
            stored[at] = in_file
        for key, vector in cache.used.items():  # vectors looked up a moment ago (the domain's examples)
            at = np.flatnonzero((every == key).to_numpy() & ~have)
            if at.size:
                vectors.put(rows[at], np.repeat(vector[None, :], at.size, axis=0))
                have[at] = True
    # a text no cache had: its first row embedded, the others copied from it
    table = pl.DataFrame({"key": every, "at": np.arange(len(every), dtype=np.int64)})
    missing = table.filter(pl.Series(~have))
    first = missing.unique("key", keep="first", maintain_order=True)
    copies = missing.join(first.rename({"at": "first"}), on="key").filter(pl.col("at") != pl.col("first"))
    first_at = first["at"].to_numpy()
    calls, wanted = [], []
    for s in np.unique(shard_of[first_at]) if first_at.size else []:
        at = first_at[shard_of[first_at] == s]
        calls.append((dataset, int(s), task, what, rows[at] - bounds[s], apart or encoder))
        wanted.append(at)
    with progress.overall(first.height) as advance:  # one count of texts embedded over the shards
        for index, found in per_shard(_shard_vectors, calls, execution, gpu=True):
            vectors.put(rows[wanted[index]], found)
            if cache is not None:
                cache.add_part(every.gather(wanted[index]).to_list(), found)
            advance(len(found))
            del found
    if copies.height:
        vectors.put(rows[copies["at"].to_numpy()], vectors.take(rows[copies["first"].to_numpy()]))
    if cache is not None:
        cache.computed += first.height
        if have.any():
            cache.reused += table.filter(pl.Series(have))["key"].n_unique()
        if stored.any():  # what the file had is used again: written with this run's vectors (what this run's
            # parts or the examples gave is there already)
            at = table.filter(pl.Series(stored)).unique("key", keep="first", maintain_order=True)["at"].to_numpy()
            for start in range(0, len(at), 65_536):
                part = at[start:start + 65_536]
                cache.add_part(every.gather(part).to_list(), vectors.take(rows[part]))
    return vectors
