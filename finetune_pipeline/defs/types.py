"""Dagster types for the frames handed from one asset to the next, built with dagster-pandas: each names
its columns and their constraints, so a frame with a wrong schema fails at the boundary with the column
named, and the schema shows on the asset in the UI (`column_schema`).

The frames are polars; the check converts the constrained columns to pandas (dagster-pandas' own
validation runs on them) and never reports row values: a failure says which constraint on which column,
not the text that broke it (raw text can hold personal data)."""

from __future__ import annotations

import warnings

import dagster as dg
import polars as pl
from dagster_pandas import PandasColumn, create_dagster_pandas_dataframe_type

from finetune_pipeline.records import SPLITS, StageResult
from finetune_pipeline.shards import ShardedDataset

warnings.filterwarnings("ignore", category=dg.BetaWarning, module=r"dagster_pandas\..*")
warnings.filterwarnings("ignore", category=dg.BetaWarning, module=__name__)


def _string(name: str, description: str, **kwargs) -> tuple[PandasColumn, dg.TableColumn]:
    return PandasColumn.string_column(name, **kwargs), dg.TableColumn(name, "string", description)


def _float(name: str, description: str, **kwargs) -> tuple[PandasColumn, dg.TableColumn]:
    return (PandasColumn.float_column(name, ignore_missing_vals=True, **kwargs),
            dg.TableColumn(name, "float", description))


CORPUS_COLUMNS = [
    _string("record_id", "stable id: a hash of source_uri and locator", non_nullable=True, unique=True),
    _string("text", "the record's text (conversations: every turn)", non_nullable=True),
    _string("source_uri", "raw/ path or SQL source", non_nullable=True),
    _string("source_type", "txt, pdf, csv, jsonl, sql ...", non_nullable=True),
    _string("locator", "where in the source: page, row, line, chunk", non_nullable=True),
    _string("content_sha256", "hash of the text", non_nullable=True),
    _string("label", "from the label set (null before labeling and for conversations)"),
    _string("label_source", "human, crowd, column, folder, model, synthetic"),
    _float("label_confidence", "in [0, 1]", min_value=0.0, max_value=1.0),
    _string("redactions", "from cleaning on: JSON list of {field, kind, start, end}, each span redacted in the "
            "text, source_uri or locator (no values; the original text stays only in raw_corpus)", is_required=False),
]
SPLIT_COLUMNS = CORPUS_COLUMNS + [
    (PandasColumn.categorical_column("split", categories=set(SPLITS), non_nullable=True),
     dg.TableColumn("split", "string", "train, validation or test")),
    _string("group_id", "records of one group are in one split", non_nullable=True),
]
ASSIGNMENT_COLUMNS = [
    _string("record_id", "an original record of labeled_corpus", non_nullable=True, unique=True),
    SPLIT_COLUMNS[-2],  # split
    SPLIT_COLUMNS[-1],  # group_id
]
REVIEW_COLUMNS = [
    _string("record_id", "the record (or, for a conflict, the conflict id)", non_nullable=True, unique=True),
    _string("text", "what the reviewer sees (redacted)", non_nullable=True),
    _string("label", "the prediction, if any"),
    _float("score", "model confidence or annotator agreement", min_value=0.0, max_value=1.0),
    (PandasColumn.categorical_column("reason", categories={"low_confidence", "disagreement", "audit", "conflict"},
                                     non_nullable=True),
     dg.TableColumn("reason", "string", "low_confidence, disagreement, audit or conflict")),
    _float("priority", "expected value of a label: doubt x (1 + w x class need); highest first", min_value=0.0),
]


def frame_type(name: str, description: str, columns: list[tuple[PandasColumn, dg.TableColumn]]) -> dg.DagsterType:
    """A Dagster type checking a polars frame (or a stage result's kept rows) against `columns`."""
    pandas_type = create_dagster_pandas_dataframe_type(name, description, [c for c, _ in columns])
    names = [c.name for c, _ in columns]

    unique = [c.name for c, _ in columns if any(type(k).__name__ == "UniqueColumnConstraint" for k in c.constraints)]

    def check_frame(context, frame: pl.DataFrame) -> str | None:
        result = pandas_type.type_check(context, frame.select([c for c in names if c in frame.columns]).to_pandas())
        # dagster-pandas lists the offending rows: keep the constraint and the column only
        return None if result.success else f"{name}: " + (result.description or "").split("The offending")[0].strip()

    def check(context, value) -> dg.TypeCheck:
        frame = value.kept if isinstance(value, StageResult) else value
        if isinstance(frame, ShardedDataset):  # a streamed stage's dataset: shard by shard, then uniqueness whole
            for shard in frame.iter_shards([c for c in names if c in frame.columns]):  # the checked columns only
                if problem := check_frame(context, shard):
                    return dg.TypeCheck(False, problem)
            present = [c for c in unique if c in frame.columns]
            twice = frame.scan().select(pl.col(present).is_duplicated().any()).collect().row(0) if present else ()
            if any(twice):
                return dg.TypeCheck(False, f"{name}: column {present[list(twice).index(True)]} is not unique")
            return dg.TypeCheck(True, metadata={"columns_checked": len(names), "rows": frame.rows})
        if not isinstance(frame, pl.DataFrame):
            return dg.TypeCheck(False, f"{name}: expected a polars DataFrame, got {type(value).__name__}")
        if problem := check_frame(context, frame):
            return dg.TypeCheck(False, problem)
        return dg.TypeCheck(True, metadata={"columns_checked": len(names), "rows": frame.height})

    return dg.DagsterType(name=name, description=pandas_type.description, type_check_fn=check)


def column_schema(columns: list[tuple[PandasColumn, dg.TableColumn]]) -> dict:
    """Asset metadata that shows the schema in the UI."""
    return {"dagster/column_schema": dg.TableSchema(columns=[t for _, t in columns])}


CorpusFrame = frame_type("CorpusFrame", "Records of a corpus stage (the record schema of records.py).", CORPUS_COLUMNS)
SplitsFrame = frame_type("SplitsFrame", "Every record with its split and group.", SPLIT_COLUMNS)
SplitAssignmentFrame = frame_type("SplitAssignmentFrame", "The split of each original record, decided once.",
                                  ASSIGNMENT_COLUMNS)
ReviewFrame = frame_type("ReviewFrame", "Items waiting for a person, one per record or conflict.", REVIEW_COLUMNS)
