"""Deduplication stage: exact duplicates, then near duplicates (MinHash + LSH).

Every kept record gets `group_id`: the id of its near-duplicate cluster's kept record, so later stages
can keep a cluster inside one split.
"""

from __future__ import annotations

import polars as pl

from finetune_pipeline.dedup.exact import exact_duplicates
from finetune_pipeline.dedup.minhash import near_duplicate_clusters
from finetune_pipeline.records import StageResult, reject_rows
from finetune_pipeline.settings import Settings

STAGE = "deduplicated_corpus"


def deduplicate(corpus: pl.DataFrame, settings: Settings) -> StageResult:
    """Remove exact then near duplicates, keeping the first record in (source_uri, locator) order."""
    ordered = corpus.sort("source_uri", "locator")
    kept, exact = exact_duplicates(ordered)
    rejects = [reject_rows(exact, STAGE, "exact_duplicate", pl.format("exact duplicate of {}", "duplicate_of"),
                           duplicate_of=pl.col("duplicate_of"))]
    stats = {"exact_duplicates": exact.height, "near_duplicates": 0, "clusters_with_duplicates": 0}

    if settings.dedup.near_duplicates and kept.height:
        cfg = settings.dedup
        roots, similarity = near_duplicate_clusters(kept["text"].to_list(), cfg.ngram, cfg.num_perm, cfg.bands,
                                                    cfg.threshold)
        ids = kept["record_id"]
        kept = kept.with_columns(
            pl.Series("group_id", ids.gather(roots).to_list(), dtype=pl.String),
            pl.Series("_similarity", similarity),
        )
        near = kept.filter(pl.col("group_id") != pl.col("record_id"))
        rejects.append(reject_rows(
            near, STAGE, "near_duplicate",
            pl.format("near duplicate of {} (estimated Jaccard {})", "group_id", pl.col("_similarity").round(2)),
            duplicate_of=pl.col("group_id"),
        ))
        stats["near_duplicates"] = near.height
        stats["clusters_with_duplicates"] = near["group_id"].n_unique()
        kept = kept.filter(pl.col("group_id") == pl.col("record_id")).drop("_similarity")
    else:
        kept = kept.with_columns(pl.col("record_id").alias("group_id"))
    return StageResult(kept=kept, rejected=pl.concat(rejects), stats=stats)
