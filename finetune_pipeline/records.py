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

import polars as pl

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

SPLITS = ("train", "validation", "test")
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
    """What one stage produced: kept rows, rejected rows, and figures for the run summary."""

    kept: pl.DataFrame
    rejected: pl.DataFrame = field(default_factory=empty_rejects)
    stats: StageStats = field(default_factory=StageStats)

    def reasons(self) -> dict[str, int]:
        if self.rejected.is_empty():
            return {}
        counts = self.rejected.group_by("reason").len().sort("len", descending=True)
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list()))
