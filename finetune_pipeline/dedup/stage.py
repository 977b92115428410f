"""The deduplication stage runner: first, when a domain is configured, the domain relevance filter (domain.py), then
exact duplicates, near duplicates (MinHash + LSH) and optionally semantic duplicates (sentence embeddings).

Keep rule: the record seen first wins: earliest `ingested_at`, then `source_uri`, then `locator`. Each
run deduplicates the whole corpus with this rule, so as long as a source keeps its `ingested_at`, a
record arriving later (another source, a later run) is compared against everything already kept and
never displaces it; it is the one rejected.

Every reject names in `duplicate_of` the kept record it duplicates (through chains: a copy of a record
that was itself removed as a near duplicate names the record finally kept). Every kept record gets
`group_id`: its cluster's id, which is its own `record_id` (one record is kept per cluster), so later
stages can keep a cluster inside one split. The kind says what near and semantic dedup compare
(`Task.near_duplicate_texts`) and finds its own duplicates and groups after them (`Task.duplicate_groups`):
conversations get the exact pass on the whole text, then near and semantic duplicates on their prompts,
where the answers are compared: an agreeing answer is a duplicate, a diverging one a conflict
(dedup/conflicts.py); their `group_id` is the prompt cluster's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from finetune_pipeline.dedup.conflicts import ConflictStats
from finetune_pipeline.dedup.exact import exact_duplicates, keep_order
from finetune_pipeline.dedup.minhash import NearDuplicates, near_duplicate_clusters, similarity_histogram
from finetune_pipeline.domain import DomainStats, domain_filter
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.records import StageResult, StageStats, reject_rows
from finetune_pipeline.settings import DedupSettings, Settings
from finetune_pipeline.tasks import task_for, task_named

STAGE = "deduplicated_corpus"


@dataclass
class ClusterSummary:
    """One of the largest duplicate clusters: the kept record, its size, removals by kind, a text preview."""

    group_id: str
    size: int
    exact_duplicate: int
    near_duplicate: int
    semantic_duplicate: int
    preview: str


@dataclass
class DedupStats(StageStats):
    exact_duplicates: int = 0
    near_duplicates: int = 0
    semantic_duplicates: int = 0
    near_candidate_pairs: int = 0  # LSH candidate pairs checked against the threshold
    near_kept_apart: int = 0  # short texts at or above the threshold not linked: they name different things
    near_similarity_histogram: dict[str, int] = field(default_factory=dict)  # candidates by estimated Jaccard
    semantic_nearest_histogram: dict[str, int] = field(default_factory=dict)  # records by nearest cosine
    clusters_with_duplicates: int = 0
    cluster_sizes: dict[str, int] = field(default_factory=dict)  # clusters by size bucket ("2", "4-5", ...)
    largest_clusters: list[ClusterSummary] = field(default_factory=list)
    prompts: ConflictStats | None = None  # conversations: duplicate prompts and conflicting answers
    domain: DomainStats | None = None  # the domain relevance filter, when a domain is configured
PREVIEW_CHARS = 120
LARGEST_CLUSTERS = 5
_REASONS = ("exact_duplicate", "near_duplicate", "semantic_duplicate")


def _split_clusters(kept: pl.DataFrame, root: np.ndarray, similarity: np.ndarray
                    ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(cluster roots, the other members with `duplicate_of` and `_similarity`)."""
    marked = kept.with_columns(
        kept["record_id"].gather(root).alias("duplicate_of"),
        pl.Series("_similarity", similarity, dtype=pl.Float64),
    )
    is_root = pl.col("duplicate_of") == pl.col("record_id")
    return marked.filter(is_root).drop("duplicate_of", "_similarity"), marked.filter(~is_root)


def _resolve_to_kept(removed: pl.DataFrame) -> pl.DataFrame:
    """Follow `duplicate_of` through removed records until it names a kept record (`kept_id`)."""
    parent = removed.select(pl.col("record_id").alias("duplicate_of"), pl.col("duplicate_of").alias("_next"))
    resolved = removed.with_columns(pl.col("duplicate_of").alias("kept_id"))
    for _ in range(len(_REASONS)):  # chains are at most one link per stage
        step = resolved.join(parent.rename({"duplicate_of": "kept_id"}), on="kept_id", how="left")
        if step["_next"].null_count() == step.height:
            break
        resolved = step.with_columns(pl.coalesce("_next", "kept_id").alias("kept_id")).drop("_next")
    return resolved


def _cluster_stats(kept: pl.DataFrame, removed: pl.DataFrame, stats: DedupStats,
                   texts_of: Callable[[list[str]], pl.Series] | None = None) -> None:
    """`texts_of`: the texts of some kept record ids (in their order), where `kept` has no `text` column."""
    sizes = removed.group_by("kept_id").agg(
        pl.len().alias("removed"), *[(pl.col("reason") == r).sum().alias(r) for r in _REASONS])
    sizes = sizes.with_columns((pl.col("removed") + 1).alias("size")).sort(["size", "kept_id"], descending=[True, False])
    buckets = {"2": (2, 2), "3": (3, 3), "4-5": (4, 5), "6-10": (6, 10), "11-100": (11, 100), ">100": (101, None)}
    size_counts = {}
    for label, (low, high) in buckets.items():
        inside = pl.col("size") >= low if high is None else pl.col("size").is_between(low, high)
        size_counts[label] = sizes.filter(inside).height
    top = sizes.head(LARGEST_CLUSTERS)
    texts = kept.select(pl.col("record_id").alias("kept_id"), "text") if "text" in kept.columns else \
        pl.DataFrame({"kept_id": top["kept_id"], "text": texts_of(top["kept_id"].to_list())},
                     schema={"kept_id": pl.String, "text": pl.String})
    top = top.join(texts, on="kept_id", how="left", maintain_order="left")
    stats.clusters_with_duplicates, stats.cluster_sizes = sizes.height, size_counts
    stats.largest_clusters = [
        ClusterSummary(group_id=row["kept_id"], size=row["size"], **{r: row[r] for r in _REASONS},
                       preview=" ".join((row["text"] or "").split())[:PREVIEW_CHARS])
        for row in top.iter_rows(named=True)]


def deduplicate(corpus: pl.DataFrame, settings: Settings | DedupSettings,
                embedding_cache: EmbeddingCache | None = None) -> StageResult:
    """Remove exact, near and (when switched on) semantic duplicates; keep the record seen first.
    `embedding_cache`: sentence vectors of the domain filter and of semantic dedup are looked up there first."""
    cfg = settings.dedup if isinstance(settings, Settings) else settings
    task = task_for(settings) if isinstance(settings, Settings) else task_named(None)
    # Off-domain records go first: a duplicate must never name a record this stage then rejects as kept.
    domain = domain_filter(corpus, settings.domain, cache=embedding_cache) \
        if isinstance(settings, Settings) and settings.domain.enabled else None
    corpus = domain.kept if domain else corpus
    kept, exact = exact_duplicates(keep_order(corpus))
    removed = [exact_rejects(exact)]
    stats = DedupStats(exact_duplicates=exact.height, domain=domain.stats if domain else None)

    # What near and semantic dedup compare is the kind's (instruction data: nothing here, its prompts are
    # compared with their answers in `duplicate_groups`).
    texts = task.near_duplicate_texts(kept)
    if cfg.near_duplicates and kept.height and texts is not None:
        near = near_duplicate_clusters(texts, cfg, execution=settings.execution if isinstance(settings, Settings) else None)
        kept, dups = near_rejects(kept, near, stats)
        removed.append(dups)

    if cfg.semantic and kept.height > 1 and texts is not None:
        from finetune_pipeline.dedup.semantic import semantic_clusters  # torch only when asked for

        sem = semantic_clusters(task.near_duplicate_texts(kept).to_list(), cfg, embedding_cache,
                                execution=settings.execution if isinstance(settings, Settings) else None)
        kept, dups = semantic_rejects(kept, sem, stats)
        removed.append(dups)

    result = settle(kept, removed, stats, cfg, task)
    if domain:
        result.rejected = pl.concat([domain.rejected, result.rejected])
    return result


def exact_rejects(exact: pl.DataFrame) -> pl.DataFrame:
    """`exact_duplicates`' duplicates (with `duplicate_of`) as removed rows with their reason and detail."""
    return exact.with_columns(pl.lit("exact_duplicate").alias("reason"),
                              pl.format("exact duplicate (same text after case and whitespace folding) of {}",
                                        "duplicate_of").alias("_detail"))


def near_rejects(kept: pl.DataFrame, near: NearDuplicates, stats: DedupStats) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the kept records, the near duplicates as removed rows) of `near_duplicate_clusters`' answer on
    `kept`'s texts; fills the near-duplicate statistics."""
    kept, dups = _split_clusters(kept, near.root, near.similarity)
    stats.near_duplicates, stats.near_candidate_pairs = dups.height, near.candidate_pairs
    stats.near_similarity_histogram = near.candidate_histogram
    stats.near_kept_apart = near.kept_apart
    return kept, dups.with_columns(pl.lit("near_duplicate").alias("reason"), pl.format(
        "near duplicate of {} (estimated Jaccard {})", "duplicate_of", pl.col("_similarity").round(2)).alias("_detail"))


def semantic_rejects(kept: pl.DataFrame, sem, stats: DedupStats) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the kept records, the semantic duplicates as removed rows) of a `semantic.SemanticDuplicates` on
    `kept`'s texts; fills the semantic statistics."""
    kept, dups = _split_clusters(kept, sem.root, sem.similarity)
    stats.semantic_duplicates = dups.height
    stats.semantic_nearest_histogram = similarity_histogram(np.clip(sem.nearest, 0.0, 1.0))
    return kept, dups.with_columns(pl.lit("semantic_duplicate").alias("reason"), pl.format(
        "semantic duplicate of {} (cosine {})", "duplicate_of", pl.col("_similarity").round(2)).alias("_detail"))


def settle(kept: pl.DataFrame, removed: list[pl.DataFrame], stats: DedupStats, cfg: DedupSettings, task,
           texts_of: Callable[[list[str]], pl.Series] | None = None) -> StageResult:
    """The stage's answer from the kept records and the removed ones (`record_id`, `source_uri`, `locator`,
    `duplicate_of`, `reason`, `_detail`): chains resolved to the kept record, cluster statistics, rejects, then
    the kind's own duplicates and `group_id`. `texts_of`: see `_cluster_stats` (when `kept` has no text)."""
    columns = ["record_id", "source_uri", "locator", "duplicate_of", "reason", "_detail"]
    removed = _resolve_to_kept(pl.concat([frame.select(columns) for frame in removed]))
    _cluster_stats(kept, removed, stats, texts_of)
    rejected = pl.concat([
        reject_rows(removed.filter(pl.col("reason") == reason), STAGE, reason,
                    pl.when(pl.col("kept_id") == pl.col("duplicate_of")).then(pl.col("_detail"))
                    .otherwise(pl.format("{}; kept record {}", "_detail", "kept_id")),
                    duplicate_of=pl.col("kept_id"))
        for reason in _REASONS
    ])
    # The kind's own duplicates and `group_id` (instruction: duplicate prompts, conflicting answers, prompt groups)
    grouped = task.duplicate_groups(kept, cfg)
    kept, stats.prompts = grouped.kept, grouped.stats
    return StageResult(kept=kept, rejected=pl.concat([rejected, grouped.rejected]), stats=stats)
