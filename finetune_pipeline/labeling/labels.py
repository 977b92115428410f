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


GIVEN_LABEL_SOURCES = ("column", "folder", "human", "crowd")


def given_labels(frame: pl.DataFrame) -> set[str]:
    """Labels some record carries from a column, a folder or a person (not from the model)."""
    if "label" not in frame.columns or "label_source" not in frame.columns:
        return set()
    return set(frame.filter(pl.col("label_source").is_in(GIVEN_LABEL_SOURCES))["label"].drop_nulls().to_list())
