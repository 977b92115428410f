"""The label set of a corpus: the configured labels, or those seen in the data and annotations."""

from __future__ import annotations

import polars as pl

from finetune_pipeline.settings import Settings


def label_set(corpus: pl.DataFrame, settings: Settings, annotations: pl.DataFrame | None = None) -> list[str]:
    """The configured labels, or every label seen in the data (and in the annotations) when none are configured."""
    if settings.labels:
        return list(settings.labels)
    seen = set(corpus["label"].drop_nulls().to_list()) if "label" in corpus.columns else set()
    if annotations is not None and annotations.height:
        seen |= set(annotations["label"].to_list())
    return sorted(seen)
