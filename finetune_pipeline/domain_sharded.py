"""The domain filter (domain.py) over a sharded dataset: the streaming path's and the Ray path's, with the same
answer as `domain.domain_filter` on the whole frame (`test_domain_sharded.py` compares them), without holding the
corpus's texts or its vectors.

This process holds per record its reference score, its relevance and a few flags, and the in-domain examples'
and the core's vectors (at most `domain.MAX_CORE_SAMPLE`); the texts are read one shard at a time and the
records' vectors go to a spill folder on disk (`tempfile`'s, so `TMPDIR`: 4 x 384 bytes per record with MiniLM,
1.5 GB at 1M records), one .npy file per shard, mapped only while it is read or written:

0. The domain's description and examples embedded (on Ray by a task on a worker, so the model never loads in
   this process).
1.-3. Every record's vector in the spill folder (`sharded_vectors.embed_rows`: the cache keys per shard, the cache
   read by key, the texts no cache had embedded per shard; Ray tasks on the workers on Ray).
4. Reference scores, then the core and each record's similarity to it (`domain.reference_scores`,
   `domain.relevance_of`), `domain.BLOCK` records at a time: the in-memory path's code on the same blocks (the same
   numbers to the last bit).
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

from finetune_pipeline.domain import (REASON, STAGE, DomainScorer, DomainStats, decide, judge, reference_scores,
                                      relevance_of)
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.records import empty_rejects, reject_rows
from finetune_pipeline.settings import DomainSettings, ExecutionSettings
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.sharded_vectors import DOMAIN, Encoder, Vectors, embed_rows, encoder_process, remote_encoder
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


def domain_filter_sharded(dataset: ShardedDataset, cfg: DomainSettings, task: Task,
                          execution: ExecutionSettings | None = None, cache: EmbeddingCache | None = None,
                          spill_dir: str | Path | None = None) -> ShardedDomain:
    """`domain.domain_filter` of `dataset` (module docstring). Raises `DomainFilterRefused` as it does.
    `cache`: the stage's embedding cache (vectors looked up by key, this run's written part by part)."""
    execution = execution or ExecutionSettings()
    encoder = Encoder.for_domain(cfg)
    folder = Path(tempfile.mkdtemp(prefix="finetune-domain-", dir=spill_dir))
    try:
        # on Ray the examples too are embedded on a worker, locally on a large corpus by the encoder's own
        # process: the model never loads here
        with encoder_process(encoder, execution, dataset.rows) as apart:
            scorer = DomainScorer.from_settings(cfg, cache=cache, encode=remote_encoder(encoder, execution, apart))
            vectors = embed_rows(dataset, None, task, DOMAIN, encoder, execution, cache, folder,
                                 dim=scorer.in_domain.shape[1], apart=apart)
        return _judge_dataset(dataset, vectors, scorer, cfg)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _record_columns(dataset: ShardedDataset, columns: list[str]) -> pl.DataFrame:
    present = [c for c in columns if c in dataset.columns]
    return pl.concat([dataset.read_shard(s, present) for s in range(len(dataset.bounds) - 1)]) \
        if len(dataset.bounds) > 1 else pl.DataFrame()


def _judge_dataset(dataset: ShardedDataset, vectors: Vectors, scorer: DomainScorer,
                   cfg: DomainSettings) -> ShardedDomain:
    """Steps 4 and 5."""
    n = int(dataset.bounds[-1])
    reference = reference_scores(scorer, vectors.block, n)
    meta = _record_columns(dataset, ["source_uri", "source_type"])
    sources = meta["source_uri"] if "source_uri" in meta.columns else None
    documents = None
    if {"source_uri", "source_type"} <= set(meta.columns):
        documents = meta.select(pl.when(pl.col("source_type").is_in(list(DOCUMENT_TYPES.values())))
                                .then(pl.col("source_uri"))).to_series().to_list()
    del meta

    verdict = judge(n, reference, scorer, cfg,
                    lambda: relevance_of(vectors.block, vectors.take, n, reference, cfg.neighbours, documents),
                    sources, documents)
    policy, stats = decide(verdict, scorer, cfg, lambda: pl.DataFrame({"source_uri": sources}) if sources is not None
                           else pl.DataFrame())
    rejected = empty_rejects()
    below = np.flatnonzero(verdict.below)
    if policy == "reject" and below.size:
        rows = dataset.take(below, ["record_id", "source_uri", "locator"])
        rows = rows.with_columns(pl.Series("_detail", [verdict.detail[i] for i in below], dtype=pl.String))
        rejected = reject_rows(rows, STAGE, REASON, pl.col("_detail"))
    return ShardedDomain(below=verdict.below, policy=policy, rejected=rejected, stats=stats)

