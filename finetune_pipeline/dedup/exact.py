"""Exact duplicates: identical text after case folding and whitespace collapsing.

Keep rule: the first record in the order given (the stage sorts by `KEEP_ORDER`: earliest
`ingested_at`, then `source_uri`, then `locator`) is kept; each other copy is rejected as
`exact_duplicate` with `duplicate_of` naming the kept record.
"""

from __future__ import annotations

import polars as pl


KEEP_ORDER = ("ingested_at", "source_uri", "locator", "record_id")


def keep_order(corpus: pl.DataFrame) -> pl.DataFrame:
    """Rows in keep order: the first row of a duplicate cluster is the one kept."""
    return corpus.sort(list(KEEP_ORDER), nulls_last=True, maintain_order=True)


def dedup_key(text: pl.Expr) -> pl.Expr:
    """Hash of the case-folded, whitespace-collapsed text."""
    return text.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().hash(seed=0)


def exact_duplicates(corpus: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split `corpus` (sorted by keep order) into (kept, duplicates with `duplicate_of`)."""
    keyed = corpus.with_columns(dedup_key(pl.col("text")).alias("_key"))
    keyed = keyed.with_columns(pl.col("record_id").first().over("_key").alias("duplicate_of"))
    is_dup = pl.col("record_id") != pl.col("duplicate_of")
    kept = keyed.filter(~is_dup).drop("_key", "duplicate_of")
    dups = keyed.filter(is_dup).drop("_key")
    return kept, dups
