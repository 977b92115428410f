"""Oversampling: replicate minority-class training records to close each label's gap to its target.
Copies carry `augmented_from` and `augmentation="oversample"`; never outside train."""

from __future__ import annotations

import numpy as np
import polars as pl


def oversample(train: pl.DataFrame, gaps: dict[str, int], seed: int) -> list[dict]:
    """`gaps[label]` copies per label, picked uniformly (seeded) among that label's training records,
    as {"augmented_from", "augmentation"} rows (the caller fills in the rest from the source)."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, need in sorted(gaps.items()):
        if need <= 0:
            continue
        members = train.filter(pl.col("label") == label).sort("record_id")["record_id"].to_list()
        rows += [{"augmented_from": members[i], "augmentation": "oversample"}
                 for i in rng.integers(0, len(members), size=need)]
    return rows
