"""Oversampling: replicate minority-class training records until each class reaches a share of the
largest class. Copies carry `augmented_from` and `augmentation="oversample"`; never outside train."""

from __future__ import annotations

import numpy as np
import polars as pl

from finetune_pipeline.records import make_record_id


def oversample_minority(train: pl.DataFrame, ratio: float, seed: int) -> pl.DataFrame:
    """New rows (copies) that top each label up to `ratio` x the largest label count."""
    counts = train.group_by("label").len()
    if counts.is_empty():
        return train.clear()
    target = int(np.ceil(counts["len"].max() * ratio))
    rng = np.random.default_rng(seed)
    copies = []
    for label, count in sorted(counts.iter_rows()):
        need = target - count
        if need <= 0:
            continue
        members = train.filter(pl.col("label") == label).sort("record_id")
        picks = rng.integers(0, members.height, size=need)
        chosen = members[picks.tolist()]
        copy_no = pl.int_range(pl.len()).over("record_id").cast(pl.String)
        copies.append(chosen.with_columns(
            pl.col("record_id").alias("augmented_from"),
            pl.lit("oversample").alias("augmentation"),
            copy_no.alias("_n"),
        ))
    if not copies:
        return train.clear().with_columns(pl.lit(None, pl.String).alias("augmented_from"),
                                          pl.lit(None, pl.String).alias("augmentation"))
    out = pl.concat(copies)
    ids = [make_record_id(src, f"oversample {n}") for src, n in zip(out["augmented_from"], out["_n"])]
    return out.with_columns(pl.Series("record_id", ids)).drop("_n")
