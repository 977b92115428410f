"""The record schema shared by every corpus stage, stable ids, hashing, and the rejects table.

Every stage takes a corpus frame and returns a `StageResult`: the rows it kept and the rows it
rejected, each reject with the stage and a reason, so that `rows_in = rows_out + rows_rejected`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from finetune_pipeline.split_files import SPLITS  # noqa: F401  (defined where the trainers can read it without polars)

DATASET_ROW = "_dataset_row"  # a column a stage carries through its decision: the record's row in the input dataset

if typing.TYPE_CHECKING:  # shards imports fsspec and pyarrow: only a stage that streams needs them
    from finetune_pipeline.shards import ShardedDataset

# Columns every corpus row carries.
CORPUS_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "text": pl.String,
    "source_uri": pl.String,
    "source_type": pl.String,
    "locator": pl.String,
    "content_sha256": pl.String,
    "label": pl.String,
    "label_source": pl.String,
    "label_confidence": pl.Float64,
    "ingested_at": pl.String,
}

REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,  # null when the input never became a record (unreadable file)
    "stage": pl.String,
    "reason": pl.String,
    "detail": pl.String,  # what happened and what to do; never the text itself
    "source_uri": pl.String,
    "locator": pl.String,
    "duplicate_of": pl.String,
}


# The stages whose assets are corpus frames with rejects, in pipeline order.
CORPUS_STAGES = ("raw_corpus", "cleaned_corpus", "deduplicated_corpus", "labeled_corpus", "augmented_corpus")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_record_id(source_uri: str, locator: str) -> str:
    """Stable id from where the record came from: the same input gives the same id on every run."""
    return hashlib.sha256(f"{source_uri}\x1f{locator}".encode("utf-8")).hexdigest()[:20]


def empty_corpus(extra: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    return pl.DataFrame(schema={**CORPUS_SCHEMA, **(extra or {})})


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECTS_SCHEMA)


def corpus_frame(rows: list[dict]) -> pl.DataFrame:
    """Build a corpus frame with the standard columns (missing ones null) in the standard order."""
    if not rows:
        return empty_corpus()
    frame = pl.DataFrame(rows, schema_overrides=CORPUS_SCHEMA, infer_schema_length=None)
    for name, dtype in CORPUS_SCHEMA.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
    extras = [c for c in frame.columns if c not in CORPUS_SCHEMA]
    return frame.select([*CORPUS_SCHEMA, *extras])


def rejects_frame(rows: list[dict]) -> pl.DataFrame:
    if not rows:
        return empty_rejects()
    full = [{k: r.get(k) for k in REJECTS_SCHEMA} for r in rows]
    return pl.DataFrame(full, schema=REJECTS_SCHEMA)


def reject_rows(frame: pl.DataFrame, stage: str, reason: str, detail: str | pl.Expr = "",
                duplicate_of: pl.Expr | None = None) -> pl.DataFrame:
    """Turn corpus rows into rejects rows for `stage` with one `reason`."""
    detail_expr = detail if isinstance(detail, pl.Expr) else pl.lit(detail)
    return frame.select(
        pl.col("record_id"),
        pl.lit(stage).alias("stage"),
        pl.lit(reason).alias("reason"),
        detail_expr.cast(pl.String).alias("detail"),
        pl.col("source_uri"),
        pl.col("locator"),
        (duplicate_of if duplicate_of is not None else pl.lit(None)).cast(pl.String).alias("duplicate_of"),
    )


@dataclass
class StageStats:
    """Figures a stage reports beside its rows; each stage subclasses it with its own typed fields.
    Stored as JSON (`to_dict`) and read back typed (`from_dict`)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """The stats from `to_dict`'s output; keys that are not fields (e.g. row counts added beside them)
        are ignored, missing fields take their defaults."""
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _typed(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def _typed(hint, value):
    """`value` (from JSON) as `hint`: nested stats dataclasses, and lists or dicts of them, rebuilt."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint.from_dict(value) if issubclass(hint, StageStats) else hint(**value)
    if origin is list and args:
        return [_typed(args[0], v) for v in value]
    if origin is dict and len(args) == 2:
        return {k: _typed(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _typed(inner[0], value) if len(inner) == 1 else value
    return value


@dataclass
class StageResult:
    """What one stage produced: kept rows, rejected rows, and figures for the run summary. A streaming stage
    gives its rows as a `shards.ShardedDataset` it committed where the IO manager stores them (defs/io.py)."""

    kept: pl.DataFrame | ShardedDataset
    rejected: pl.DataFrame | ShardedDataset = field(default_factory=empty_rejects)
    stats: StageStats = field(default_factory=StageStats)

    def reasons(self) -> dict[str, int]:
        if self.rejected.height == 0:
            return {}
        rejected = self.rejected if isinstance(self.rejected, pl.DataFrame) else self.rejected.scan()
        counts = rejected.group_by("reason").len().sort("len", descending=True)
        counts = counts.collect() if isinstance(counts, pl.LazyFrame) else counts
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list()))


# The setting that decides each reject reason a user controls (for the reject-share warning); reasons that
# name a defect of the data itself (an exact duplicate, an unreadable file) have none.
REASON_SETTINGS: dict[str, str] = {
    "missing_column": "sources.tabular.text_column / label_column",
    "too_short": "cleaning.min_chars / cleaning.min_words (or cleaning.document_filters_on: documents for rows "
                 "of tables)",
    "too_long": "cleaning.max_chars",
    "language": "cleaning.languages (or cleaning.language_min_confidence)",
    "mean_word_length": "cleaning.min_mean_word_length / max_mean_word_length (or cleaning.document_filters_on)",
    "alpha_words": "cleaning.min_alpha_word_share (or cleaning.document_filters_on)",
    "symbol_to_word_ratio": "cleaning.max_symbol_word_ratio (or cleaning.document_filters_on)",
    "repeated_lines": "cleaning.max_duplicate_line_share (or cleaning.document_filters_on)",
    "repeated_ngrams": "cleaning.max_top_ngram_share / max_duplicate_ngram_share (or cleaning.document_filters_on)",
    "unknown_words": "cleaning.unknown_words_action (flag keeps them)",
    "pii_policy": "privacy.<type>: drop -> redact",
    "response_too_short": "cleaning.min_response_chars",
    "refusal": "cleaning.refusal_patterns",
    "truncated_response": "cleaning.truncation_min_chars",
    "conversation_too_long": "cleaning.too_long_action (or training.instruction.max_length)",
    "off_domain": "domain.threshold (calibration: absolute) or domain.record_cut / domain.source_cut (calibration: "
                  "corpus), or domain.policy: flag, or domain examples",
    "near_duplicate": "dedup.threshold",
    "semantic_duplicate": "dedup.semantic_threshold (or dedup.semantic: false)",
    "duplicate_prompt": "dedup.prompt_threshold",
    "conflicting_instruction": "dedup.conflicts",
    "in_review": "labeling.review_threshold (or label the records in the review queue)",
    "label_not_in_label_set": "labels in finetune.yaml",
    "unlabeled": "labeling.zero_shot",
}


@dataclass
class RejectShareWarning:
    """One reject reason that took more than `checks.max_reject_share` of a stage's input."""

    stage: str
    reason: str
    rejected: int
    rows_in: int
    max_share: float
    record_ids: list[str]  # the first few rejected (ids only, never text)
    setting: str | None  # what decides the reason, when the user controls it

    @property
    def share(self) -> float:
        return self.rejected / self.rows_in if self.rows_in else 0.0

    def message(self) -> str:
        ids = ", ".join(self.record_ids) or "none (whole sources)"
        fix = (f"if these records belong in the data, change {self.setting}" if self.setting
               else "check the data (the rejects in exports/rejects.parquet say why)")
        return (f"{self.stage}: '{self.reason}' rejected {self.rejected} of {self.rows_in} records "
                f"({self.share:.0%} > checks.max_reject_share={self.max_share}); e.g. {ids}; {fix}")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "share": round(self.share, 4)}


def reject_share_warnings(stage: str, rows_in: int, rejected: pl.DataFrame, max_share: float,
                          listed: int = 5) -> list[RejectShareWarning]:
    """A warning for every reject reason of `stage` that took more than `max_share` of its `rows_in` records,
    largest first, each with `listed` record ids and the setting that decides it."""
    if not rows_in or rejected.is_empty():
        return []
    found = []
    by_reason = rejected.group_by("reason", maintain_order=True).agg(
        pl.len().alias("n"), pl.col("record_id").drop_nulls().head(listed).alias("ids"))
    for reason, n, ids in by_reason.sort("n", "reason", descending=[True, False]).iter_rows():
        if n > max_share * rows_in:
            found.append(RejectShareWarning(stage, reason, n, rows_in, max_share, ids, REASON_SETTINGS.get(reason)))
    return found
