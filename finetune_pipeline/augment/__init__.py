"""Augmentation stage: balance the training data without touching validation or test.

The split of the original records is decided first (the same deterministic function that
`dataset_splits` uses), and only training records are augmented.
"""

from __future__ import annotations

import polars as pl

from finetune_pipeline.augment.oversample import oversample_minority
from finetune_pipeline.records import StageResult
from finetune_pipeline.settings import Settings
from finetune_pipeline.splits import stratified_group_split

STAGE = "augmented_corpus"


def augment_corpus(corpus: pl.DataFrame, settings: Settings) -> StageResult:
    """Originals plus augmented training rows; originals have null `augmented_from`."""
    originals = corpus.with_columns(pl.lit(None, pl.String).alias("augmented_from"),
                                    pl.lit(None, pl.String).alias("augmentation"))
    stats = {"augmented_rows": 0, "by_label": {}}
    if not settings.augmentation.oversample or corpus.is_empty():
        return StageResult(kept=originals, stats=stats)
    split = stratified_group_split(corpus, settings.splits)
    train = corpus.join(split.filter(pl.col("split") == "train").select("record_id"), on="record_id")
    extra = oversample_minority(train, settings.augmentation.oversample_ratio, settings.splits.seed)
    counts = extra.group_by("label").len().sort("label")
    stats = {"augmented_rows": extra.height, "by_label": dict(zip(counts["label"], counts["len"]))}
    return StageResult(kept=pl.concat([originals, extra.select(originals.columns)]), stats=stats)
