"""The domain filter (domain.py) over a sharded dataset: the streaming path's and the Ray path's, with the same
answer as `domain.domain_filter` on the whole frame (`test_domain_sharded.py` compares them), without holding the
corpus's texts or its vectors.

This process holds per record its reference score, its relevance and a few flags, and the in-domain examples'
and the core's vectors (at most `domain.MAX_CORE_SAMPLE`); the texts are read one shard at a time and the
records' vectors go to a spill folder on disk (`tempfile`'s, so `TMPDIR`: 4 x 384 bytes per record with MiniLM,
1.5 GB at 1M records), one .npy file per shard, mapped only while it is read or written:

0. The domain's description and examples embedded (on Ray by a task on a worker, so the model never loads in
   this process).
1. Per shard, the cache keys of its texts (`embeddings.text_key`; a Ray task on the workers on Ray).
2. The embedding cache's file read once, a batch at a time: every vector it has for these keys goes to the
   spill files.
3. Per shard, its texts that no cache had (the first record of each such text: a text met again is copied,
   not embedded twice) embedded: here, or on Ray by a task on the workers (MiniLM loaded once per worker
   process), which reads the shard's texts itself and sends back the vectors. They go to the spill files and,
   as a part of the stage's cache, to disk (`EmbeddingCache.add_part`).
4. Reference scores, then the core (`domain.core_records`) and each record's similarity to it, `domain.BLOCK`
   records at a time, in the same blocks as the in-memory path (the same numbers to the last bit).
5. The verdict (`domain.judge`), the guard (`domain.decide`: the refusal raised before anything is written),
   and the rejects of the off-domain records, their ids read from the shards.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from finetune_pipeline import progress
from finetune_pipeline.domain import (BLOCK, REASON, STAGE, CoreSimilarity, DomainScorer, DomainStats, core_records,
                                      decide, document_ids, judge, record_texts, relevance_z)
from finetune_pipeline.embeddings import EmbeddingCache, default_encoder, embed, model_identity, text_key
from finetune_pipeline.execution import per_shard
from finetune_pipeline.records import empty_rejects, reject_rows
from finetune_pipeline.settings import DomainSettings, ExecutionSettings
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.sources.files import DOCUMENT_TYPES
from finetune_pipeline.tasks import Task


@dataclass
class ShardedDomain:
    """The domain filter's answer on a dataset: per row of the dataset whether it is off-domain (`below`), the
    policy applied (reject: those rows go to `rejected`; flag: they are kept with off_domain in their
    quality flags) and the statistics."""

    below: np.ndarray
    policy: str
    rejected: pl.DataFrame
    stats: DomainStats


def _shard_texts(dataset: ShardedDataset, number: int, task: Task) -> list[str]:
    columns = ["text", *(["prompt"] if "prompt" in dataset.columns else [])]
    return record_texts(dataset.read_shard(number, columns), task)


def _shard_keys(dataset: ShardedDataset, number: int, task: Task, identity: str, max_length: int) -> list[str]:
    """Step 1 for one shard (a Ray task on Ray): its texts' cache keys."""
    return [text_key(text, identity, max_length) for text in _shard_texts(dataset, number, task)]


def _shard_vectors(dataset: ShardedDataset, number: int, task: Task, local: np.ndarray,
                   cfg: DomainSettings) -> np.ndarray:
    """Step 3 for one shard (a Ray task on Ray): the vectors of its texts at rows `local`, in that order."""
    texts = _shard_texts(dataset, number, task)
    return embed([texts[i] for i in local], cfg.model, cfg.batch_size, cfg.max_length)


def _encode_on_worker(texts: list[str], cfg: DomainSettings) -> np.ndarray:
    """The domain's examples embedded (a Ray task on Ray)."""
    return embed(texts, cfg.model, cfg.batch_size, cfg.max_length)


class _Vectors:
    """The records' vectors in one .npy file per shard, rows addressed by dataset row. A file is mapped only
    while it is read or written (a mapping's pages count in this process's resident memory as long as it
    stays: kept open, 1M vectors would show as 1.5 GB here)."""

    def __init__(self, folder: Path, bounds: np.ndarray, dim: int):
        self.bounds, self.dim = bounds, dim
        self.paths = [folder / f"x-{s}.npy" for s in range(len(bounds) - 1)]
        for s, path in enumerate(self.paths):
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                      shape=(int(bounds[s + 1] - bounds[s]), dim)).flush()

    def _by_shard(self, rows: np.ndarray):
        shard = np.searchsorted(self.bounds, rows, side="right") - 1
        for s in np.unique(shard):
            inside = np.flatnonzero(shard == s)
            yield int(s), inside, rows[inside] - self.bounds[s]

    def put(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        for s, inside, local in self._by_shard(rows):
            stored = np.load(self.paths[s], mmap_mode="r+")
            stored[local] = vectors[inside]
            stored.flush()
            del stored

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for s, inside, local in self._by_shard(rows):
            stored = np.load(self.paths[s], mmap_mode="r")
            out[inside] = stored[local]
            del stored
        return out

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows `start .. stop` (across shards when the block spans two)."""
        return self.take(np.arange(start, stop))


def domain_filter_sharded(dataset: ShardedDataset, cfg: DomainSettings, task: Task,
                          execution: ExecutionSettings | None = None, cache: EmbeddingCache | None = None,
                          spill_dir: str | Path | None = None) -> ShardedDomain:
    """`domain.domain_filter` of `dataset` (module docstring). Raises `DomainFilterRefused` as it does.
    `cache`: the stage's embedding cache (vectors looked up by key, this run's written part by part)."""
    execution = execution or ExecutionSettings()
    encode = None
    if execution.backend == "ray":  # the examples too are embedded on a worker: the model never loads here
        def encode(texts: list[str]) -> np.ndarray:
            return next(per_shard(_encode_on_worker, [(texts, cfg)], execution, gpu=True))[1]
    scorer = DomainScorer.from_settings(cfg, cache=cache, encode=encode)
    folder = Path(tempfile.mkdtemp(prefix="finetune-domain-", dir=spill_dir))
    try:
        vectors = _embed_dataset(dataset, cfg, task, execution, cache, scorer.in_domain.shape[1], folder)
        return _judge_dataset(dataset, vectors, scorer, cfg)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _embed_dataset(dataset: ShardedDataset, cfg: DomainSettings, task: Task, execution: ExecutionSettings,
                   cache: EmbeddingCache | None, dim: int, folder: Path) -> _Vectors:
    """Steps 1 to 3: every record's vector in the spill folder."""
    bounds = dataset.bounds
    vectors = _Vectors(folder, bounds, dim)
    name = str(default_encoder()) if cfg.model is None else cfg.model
    identity = model_identity(name)
    shards = range(len(bounds) - 1)
    keys: list[pl.Series | None] = [None] * len(shards)
    for number, found in per_shard(_shard_keys, [(dataset, s, task, identity, cfg.max_length) for s in shards],
                                   execution):
        keys[number] = pl.Series("key", found, dtype=pl.String)
    every = pl.concat(keys) if keys else pl.Series("key", [], dtype=pl.String)
    del keys
    have = np.zeros(len(every), dtype=bool)
    if cache is not None:
        for rows, found in cache.find(every):
            vectors.put(rows, found)
            have[rows] = True
        for key, vector in cache.used.items():  # the examples' vectors, looked up a moment ago
            at = np.flatnonzero((every == key).to_numpy() & ~have)
            if at.size:
                vectors.put(at, np.repeat(vector[None, :], at.size, axis=0))
                have[at] = True
    # a text no cache had: its first record embedded, the others copied from it
    table = pl.DataFrame({"key": every, "row": np.arange(len(every), dtype=np.int64)})
    missing = table.filter(pl.Series(~have))
    first = missing.unique("key", keep="first", maintain_order=True)
    copies = missing.join(first.rename({"row": "first"}), on="key").filter(pl.col("row") != pl.col("first"))
    first_rows = first["row"].to_numpy()
    shard_of = np.searchsorted(bounds, first_rows, side="right") - 1
    calls, wanted = [], []
    for s in shards:
        rows = first_rows[shard_of == s]
        if rows.size:
            calls.append((dataset, s, task, rows - bounds[s], cfg))
            wanted.append(rows)
    with progress.overall(first.height) as advance:  # one count of texts embedded over the shards
        for index, found in per_shard(_shard_vectors, calls, execution, gpu=True):
            vectors.put(wanted[index], found)
            if cache is not None:
                cache.add_part(every.gather(wanted[index]).to_list(), found)
            advance(len(found))
            del found
    if copies.height:
        at = copies["row"].to_numpy()
        vectors.put(at, vectors.take(copies["first"].to_numpy()))
    if cache is not None:
        cache.computed += first.height
        cache.reused += int(table.filter(pl.Series(have))["key"].n_unique()) if have.any() else 0
        if have.any():  # what was found is used again: written with this run's vectors
            found_rows = np.flatnonzero(have)
            found_first = table[found_rows].unique("key", keep="first", maintain_order=True)
            rows = found_first["row"].to_numpy()
            for start in range(0, len(rows), 65_536):
                part = rows[start:start + 65_536]
                cache.add_part(every.gather(part).to_list(), vectors.take(part))
    return vectors


def _record_columns(dataset: ShardedDataset, columns: list[str]) -> pl.DataFrame:
    present = [c for c in columns if c in dataset.columns]
    return pl.concat([dataset.read_shard(s, present) for s in range(len(dataset.bounds) - 1)]) \
        if len(dataset.bounds) > 1 else pl.DataFrame()


def _judge_dataset(dataset: ShardedDataset, vectors: _Vectors, scorer: DomainScorer,
                   cfg: DomainSettings) -> ShardedDomain:
    """Steps 4 and 5."""
    n = int(dataset.bounds[-1])
    reference = np.concatenate([scorer.score_embeddings(vectors.block(start, min(start + BLOCK, n)))
                                for start in range(0, n, BLOCK)]) if n else np.zeros(0)
    meta = _record_columns(dataset, ["source_uri", "source_type"])
    sources = meta["source_uri"] if "source_uri" in meta.columns else None
    documents = None
    if {"source_uri", "source_type"} <= set(meta.columns):
        documents = meta.select(pl.when(pl.col("source_type").is_in(list(DOCUMENT_TYPES.values())))
                                .then(pl.col("source_uri"))).to_series().to_list()
    del meta

    def relevance() -> np.ndarray:
        core = core_records(reference)
        similarity = CoreSimilarity(core, vectors.take(core), n, cfg.neighbours, document_ids(documents))
        parts = [similarity.block(start, vectors.block(start, min(start + BLOCK, n))) for start in range(0, n, BLOCK)]
        return relevance_z(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    verdict = judge(n, reference, scorer, cfg, relevance, sources, documents)
    policy, stats = decide(verdict, scorer, cfg, lambda: pl.DataFrame({"source_uri": sources}) if sources is not None
                           else pl.DataFrame())
    rejected = empty_rejects()
    below = np.flatnonzero(verdict.below)
    if policy == "reject" and below.size:
        rows = _rows_of(dataset, below, ["record_id", "source_uri", "locator"])
        rows = rows.with_columns(pl.Series("_detail", [verdict.detail[i] for i in below], dtype=pl.String))
        rejected = reject_rows(rows, STAGE, REASON, pl.col("_detail"))
    return ShardedDomain(below=verdict.below, policy=policy, rejected=rejected, stats=stats)


def _rows_of(dataset: ShardedDataset, rows: np.ndarray, columns: list[str]) -> pl.DataFrame:
    """`columns` of the dataset's rows `rows` (ascending), shard by shard."""
    bounds = dataset.bounds
    shard = np.searchsorted(bounds, rows, side="right") - 1
    parts = [dataset.read_shard(int(s), columns)[rows[shard == s] - bounds[s]] for s in np.unique(shard)]
    return pl.concat(parts)
