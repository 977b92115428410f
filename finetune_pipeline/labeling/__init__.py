"""Labeling stage: every record that goes on to training has a label from the label set.

Labels come from a column or the parent folder at collection time (`label_source` says which).
Records without one, or with a label outside the configured set, are rejected with that reason.
"""

from __future__ import annotations

import polars as pl

from finetune_pipeline.records import StageResult, reject_rows
from finetune_pipeline.settings import Settings

STAGE = "labeled_corpus"


def label_set(corpus: pl.DataFrame, settings: Settings) -> list[str]:
    """The configured labels, or every label seen in the data when none are configured."""
    if settings.labels:
        return list(settings.labels)
    return sorted(corpus["label"].drop_nulls().unique().to_list())


def apply_labels(corpus: pl.DataFrame, settings: Settings) -> StageResult:
    labels = label_set(corpus, settings)
    corpus = corpus.with_columns(
        pl.when(pl.col("label").is_not_null()).then(pl.coalesce("label_confidence", pl.lit(1.0)))
        .alias("label_confidence")
    )
    unlabeled = corpus.filter(pl.col("label").is_null())
    outside = corpus.filter(pl.col("label").is_not_null() & ~pl.col("label").is_in(labels))
    kept = corpus.filter(pl.col("label").is_in(labels))
    rejected = pl.concat([
        reject_rows(unlabeled, STAGE, "unlabeled",
                    "no label from a column or folder; add one (annotations/, label column or folder)"),
        reject_rows(outside, STAGE, "label_not_in_label_set",
                    pl.format("label '{}' is not in the label set; fix it or add it to `labels`", "label")),
    ])
    counts = kept.group_by("label").len().sort("label")
    return StageResult(kept=kept, rejected=rejected,
                       stats={"labels": labels, "by_label": dict(zip(counts["label"], counts["len"]))})
