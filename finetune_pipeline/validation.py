"""Great Expectations suites for each corpus stage (plain library: the Dagster layer turns each into a
blocking asset check).

A suite is a list of GX expectations built from the settings; `validate` runs it on a pandas frame in
an ephemeral GX context and returns a `SuiteResult` whose details name each failed expectation. On a sharded
dataset (shards.py) it runs shard by shard: the row-wise expectations on each shard (their unexpected counts
added up), the others (uniqueness, row counts) once on only the columns they name, read from every shard.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd
import polars as pl

from finetune_pipeline.records import CORPUS_SCHEMA, SPLITS


def _gx():
    """Great Expectations, imported on first use: it takes seconds, and only check steps need it."""
    import great_expectations as gx

    return gx


class _Expectations:
    """`E.ExpectColumnToExist(...)` etc., resolved from `great_expectations.expectations` when used."""

    def __getattr__(self, name: str):
        return getattr(_gx().expectations, name)


E = _Expectations()


@dataclass
class SuiteResult:
    suite: str
    passed: bool
    evaluated: int
    failures: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        if self.passed:
            return f"{self.suite}: all {self.evaluated} expectations passed"
        parts = [f"{f['expectation']}({f.get('column') or ''}): {f['observed']}" for f in self.failures]
        return f"{self.suite}: {len(self.failures)} of {self.evaluated} failed: " + "; ".join(parts)


@lru_cache(maxsize=1)
def _context():
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = _gx().get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def validate(frame, suite_name: str, expectations: list, execution=None) -> SuiteResult:
    """Run `expectations` on `frame` (a polars or pandas frame, or a ShardedDataset); failures report counts
    and observed values, never row text. `execution` (ExecutionSettings): on `backend: ray` a dataset's
    row-wise expectations run on the workers, a shard per Ray task."""
    if hasattr(frame, "iter_shards"):
        return validate_dataset(frame, suite_name, expectations, execution)
    results, gx_order = _results(frame, suite_name, expectations)
    failures = [results[i] for i in gx_order if results[i] is not None]  # in the order GX reports them
    return SuiteResult(suite=suite_name, passed=not failures, evaluated=len(expectations), failures=failures)


# Decided row by row, so a dataset passes them exactly when each of its shards does.
ROW_WISE = frozenset({
    "expect_column_to_exist", "expect_column_values_to_not_be_null", "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between", "expect_column_value_lengths_to_be_between",
    "expect_column_values_to_match_regex", "expect_column_pair_values_to_be_equal"})


def _row_wise(expectation) -> bool:
    return expectation.expectation_type in ROW_WISE and getattr(expectation, "mostly", 1) in (None, 1)


def _columns(expectation) -> set[str] | None:
    """The columns an expectation reads (None: it may read any, through a row condition)."""
    if getattr(expectation, "row_condition", None):
        return None
    named = {getattr(expectation, n, None) for n in ("column", "column_A", "column_B")}
    return {c for c in named | set(getattr(expectation, "column_list", None) or ()) if c}


def _columns_read(dataset, expectations: list) -> list[str]:
    """The dataset's columns `expectations` read: every column when one may read any (a row condition), else
    those they name (at least one, so a frame has its rows)."""
    needed = [_columns(e) for e in expectations]
    if any(c is None for c in needed):
        return dataset.columns
    return [c for c in dataset.columns if c in set().union(*needed)] or dataset.columns[:1]


def _shard_results(dataset, number: int, suite_name: str, expectations: list) -> list[dict | None]:
    """`_results` of `expectations` on shard `number` of `dataset` (its columns they read), read here (a Ray
    task on `backend: ray`)."""
    return _results(dataset.read_shard(number, _columns_read(dataset, expectations)), suite_name, expectations)[0]


def validate_dataset(dataset, suite_name: str, expectations: list, execution=None) -> SuiteResult:
    """`validate` on a ShardedDataset without holding it: row-wise expectations on one shard at a time (a
    failure's unexpected count is the sum over shards; on `backend: ray` each shard's are a Ray task on the
    workers, `execution.per_shard`), the rest (unique ids, row counts, distinct values) on a frame of only the
    columns they read, gathered from every shard; as strict as on the whole frame."""
    from finetune_pipeline.execution import per_shard
    from finetune_pipeline.settings import ExecutionSettings

    row_wise = [i for i, e in enumerate(expectations) if _row_wise(e)]
    whole = [i for i in range(len(expectations)) if i not in set(row_wise)]
    found: dict[int, dict] = {}
    if row_wise:
        asked = [expectations[i] for i in row_wise]
        calls = [(dataset, number, suite_name, asked) for number in range(len(dataset.manifest.shards))]
        answers: list = [None] * len(calls)
        for number, answer in per_shard(_shard_results, calls, execution or ExecutionSettings()):
            answers[number] = answer  # a few small dicts per shard; combined in shard order below
        for answer in answers:
            for i, failure in zip(row_wise, answer):
                if failure is None:
                    continue
                if i in found and isinstance(failure["observed"], int) and isinstance(found[i]["observed"], int):
                    found[i]["observed"] += failure["observed"]
                else:
                    found.setdefault(i, failure)
    if whole:
        asked = [expectations[i] for i in whole]
        frame = _unique_by_codes(dataset.scan().select(_columns_read(dataset, asked)), asked).collect()
        for i, failure in zip(whole, _results(frame, suite_name, asked)[0]):
            if failure is not None:
                found[i] = failure
    failures = [found[i] for i in sorted(found)]
    return SuiteResult(suite=suite_name, passed=not failures, evaluated=len(expectations), failures=failures)


COLLECT_ROWS = 10_000  # a frame validated with at least this many rows is let go of at once (`_results`)


UNIQUE = "expect_column_values_to_be_unique"


def _unique_by_codes(rows: pl.LazyFrame, expectations: list) -> pl.LazyFrame:
    """`rows` with each string column that only uniqueness expectations read replaced by its values' dense ranks:
    equal values get equal codes and distinct values distinct ones (nulls stay null), so GX finds exactly the
    same duplicates, on 8 bytes a row in pandas instead of a Python string (GX on the 924,457 record ids of a
    1M corpus: about 300 MB for a 17.6 MB column, docs/benchmarks.md)."""
    reads = [_columns(e) for e in expectations]
    if any(r is None for r in reads):  # a row condition may read any column
        return rows
    schema = rows.collect_schema()
    only_unique = [c for c, dtype in schema.items() if dtype == pl.String and any(c in r for r in reads)
                   and all(e.expectation_type == UNIQUE for e, r in zip(expectations, reads) if c in r)]
    return rows.with_columns(pl.col(c).rank("dense") for c in only_unique) if only_unique else rows


def _results(frame: pl.DataFrame | pd.DataFrame, suite_name: str, expectations: list
             ) -> tuple[list[dict | None], list[int]]:
    """Per expectation, in the suite's order: None when it passed, else its failure (type, column, observed);
    and the expectations' indices in the order GX reported them."""
    answer = _gx_results(frame, suite_name, expectations)
    if len(frame) >= COLLECT_ROWS:
        # GX's batch and validation objects refer to each other in cycles that keep the pandas copy of the frame
        # until Python's next full collection: a suite run shard by shard over 1M records held about 15 MB more
        # per shard (782 against 544 MiB for the row-wise part of the labeled suite, docs/benchmarks.md)
        gc.collect()
    return answer


def _gx_results(frame: pl.DataFrame | pd.DataFrame, suite_name: str, expectations: list
                ) -> tuple[list[dict | None], list[int]]:
    if not expectations:
        return [], []
    df = frame.to_pandas() if isinstance(frame, pl.DataFrame) else frame
    context = _context()
    source = context.data_sources.add_or_update_pandas("finetune_pipeline")
    asset_name = f"{suite_name}_frame"
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(asset_name)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{suite_name}_{len(asset.batch_definitions)}")
    suite = _gx().ExpectationSuite(name=suite_name, expectations=expectations)
    result = batch_definition.get_batch(batch_parameters={"dataframe": df}).validate(suite)
    # GX orders its results by the metrics it computes: each is matched back to its expectation by
    # configuration (equal configurations have equal outcomes, so which of them gets which does not matter)
    by_config: dict[str, list[int]] = {}
    for position, item in enumerate(result.results):
        by_config.setdefault(_config_key(item.expectation_config.type, item.expectation_config.kwargs),
                             []).append(position)
    failures, positions = [], []
    for expectation in expectations:
        position = by_config[_config_key(expectation.expectation_type, expectation.configuration.kwargs)].pop()
        positions.append(position)
        item = result.results[position]
        if item.success:
            failures.append(None)
            continue
        res = item.result or {}
        observed = res.get("observed_value", res.get("unexpected_count"))
        failures.append({"expectation": item.expectation_config.type,
                         "column": item.expectation_config.kwargs.get("column"),
                         "observed": observed})
    return failures, sorted(range(len(expectations)), key=positions.__getitem__)


def _config_key(kind: str, kwargs: dict) -> str:
    return kind + json.dumps({k: v for k, v in kwargs.items() if k != "batch_id"}, sort_keys=True, default=str)


def corpus_expectations(min_records: int) -> list:
    """What every corpus stage guarantees: the standard columns, unique non-null ids, non-empty text."""
    exps = [E.ExpectColumnToExist(column=c) for c in CORPUS_SCHEMA]
    exps += [
        E.ExpectTableRowCountToBeBetween(min_value=min_records),
        E.ExpectColumnValuesToNotBeNull(column="record_id"),
        E.ExpectColumnValuesToBeUnique(column="record_id"),
        E.ExpectColumnValuesToNotBeNull(column="text"),
        E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        E.ExpectColumnValuesToNotBeNull(column="source_uri"),
        E.ExpectColumnValuesToMatchRegex(column="content_sha256", regex=r"^[0-9a-f]{64}$"),
    ]
    return exps


def cleaned_expectations(min_records: int, min_chars: int, max_chars: int,
                         short_allowed: frozenset[str] = frozenset()) -> list:
    """`short_allowed`: source types whose short texts cleaning keeps with a flag (rows of tables under
    cleaning.document_filters_on: documents); they are held to 1..max_chars, every other record to
    min_chars..max_chars."""
    if short_allowed:  # pandas' query syntax; a null source_type is not in the set, as in is_table_row
        others = f"~source_type.isin({sorted(short_allowed)!r})"
        length = [E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1, max_value=max_chars),
                  E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=min_chars, row_condition=others,
                                                        condition_parser="pandas")]
    else:
        length = [E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=min_chars, max_value=max_chars)]
    return corpus_expectations(min_records) + length + [
        E.ExpectColumnToExist(column="redactions"),
    ]


def deduplicated_expectations(min_records: int) -> list:
    return corpus_expectations(min_records) + [
        E.ExpectColumnValuesToBeUnique(column="content_sha256"),
        E.ExpectColumnValuesToNotBeNull(column="group_id"),
    ]


def label_expectations(labels: list[str]) -> list:
    """Every record has a label from the label set, a known label_source and a confidence in [0, 1]."""
    return [
        E.ExpectColumnValuesToNotBeNull(column="label"),
        E.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
        E.ExpectColumnValuesToBeInSet(column="label_source", value_set=["folder", "column", "human", "crowd", "model"]),
        E.ExpectColumnValuesToBeBetween(column="label_confidence", min_value=0, max_value=1),
    ]


def conversation_expectations() -> list:
    """Instruction records (no label): a non-empty prompt and a non-empty response each."""
    return [exp for column in ("prompt", "response") for exp in (
        E.ExpectColumnToExist(column=column),
        E.ExpectColumnValuesToNotBeNull(column=column),
        E.ExpectColumnValueLengthsToBeBetween(column=column, min_value=1),
    )]


def labeled_expectations(min_records: int, labels: list[str], records: list | None = None) -> list:
    """The corpus expectations plus `records` (per-record ones from `Task.record_expectations`); None: the
    label expectations."""
    return corpus_expectations(min_records) + (records if records is not None else label_expectations(labels))


def augmented_expectations(min_records: int, labels: list[str], records: list | None = None) -> list:
    """record_id stays unique; augmented rows name their source and the technique. `records`: as in
    `labeled_expectations` (None: labels from the set)."""
    return [
        E.ExpectTableRowCountToBeBetween(min_value=min_records),
        E.ExpectColumnValuesToBeUnique(column="record_id"),
        *(records if records is not None else [E.ExpectColumnValuesToBeInSet(column="label", value_set=labels)]),
        E.ExpectColumnToExist(column="augmented_from"),
        E.ExpectColumnToExist(column="augmentation"),
    ]


def split_expectations(min_records: int, labels: list[str], records: list | None = None) -> list:
    """Valid split values, unique ids; `records` as in `labeled_expectations` (None: labels from the set)."""
    return [
        E.ExpectTableRowCountToBeBetween(min_value=min_records),
        E.ExpectColumnValuesToBeUnique(column="record_id"),
        E.ExpectColumnValuesToNotBeNull(column="split"),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        *(records if records is not None else [E.ExpectColumnValuesToBeInSet(column="label", value_set=labels)]),
    ]


def leakage_frames(splits: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per group (and per augmented source) with the number of splits it appears in,
    and one row per (label, split) pair present; the suite expects 1 split per group."""
    groups = splits.group_by("group_id").agg(pl.col("split").n_unique().alias("n_splits"))
    aug = (splits.filter(pl.col("augmented_from").is_not_null())
           .join(splits.select(pl.col("record_id").alias("augmented_from"), pl.col("split").alias("source_split")),
                 on="augmented_from", how="left")
           .select((pl.col("split") == pl.col("source_split")).alias("same_split"),
                   (pl.col("split") == "train").alias("in_train")))
    return groups, aug


def leakage_expectations() -> tuple[list, list]:
    return (
        [E.ExpectColumnValuesToBeBetween(column="n_splits", min_value=1, max_value=1)],
        [E.ExpectColumnValuesToBeInSet(column="same_split", value_set=[True]),
         E.ExpectColumnValuesToBeInSet(column="in_train", value_set=[True])],
    )


def label_coverage_frame(splits: pl.DataFrame, labels: list[str]) -> pl.DataFrame:
    """Per split, how many of the labels appear in it (all of them are expected)."""
    present = splits.group_by("split").agg(pl.col("label").n_unique().alias("labels_present"))
    return present.with_columns(pl.lit(len(labels)).alias("labels_expected"))


def proportion_frame(splits: pl.DataFrame, tolerance: float, column: str = "label") -> pl.DataFrame:
    """Per (split, label) of original records: how far the label's share in the split is from its share
    overall, and the allowed distance: `tolerance` plus one record of the split (rounding in small splits).
    `column`: what the split stratifies (`Task.stratify_column`); its values are reported as `label`."""
    originals = splits.filter(pl.col("augmented_from").is_null()) if "augmented_from" in splits.columns else splits
    originals = originals.with_columns(pl.col(column).alias("label"))
    overall = originals.group_by("label").len().with_columns((pl.col("len") / originals.height).alias("overall"))
    sizes = originals.group_by("split").len().rename({"len": "split_rows"})
    per = originals.group_by("split", "label").len().join(sizes, on="split")
    return (overall.select("label", "overall").join(sizes, how="cross")
            .join(per.select("split", "label", "len"), on=["split", "label"], how="left")
            .with_columns(pl.col("len").fill_null(0))
            .select("split", "label",
                    (pl.col("len") / pl.col("split_rows") - pl.col("overall")).abs().alias("distance"),
                    (tolerance + 1 / pl.col("split_rows")).alias("allowed"))
            .with_columns((pl.col("distance") <= pl.col("allowed")).alias("within")))


def proportion_expectations() -> list:
    return [E.ExpectColumnValuesToBeInSet(column="within", value_set=[True])]


def label_coverage_expectations() -> list:
    return [E.ExpectTableRowCountToEqual(value=len(SPLITS)),
            E.ExpectColumnPairValuesToBeEqual(column_A="labels_present", column_B="labels_expected")]


def reconciliation_frame(upstream: list | pl.Series, kept: list | pl.Series, rejected: list | pl.Series
                         ) -> pl.DataFrame:
    """`record_id, status` of every record id not accounted for once at a stage, in id order: read twice
    (`read_twice`), read but neither kept nor rejected (`lost`), kept or rejected but never read (`not_read`),
    kept or rejected more than once (`out_twice`); the first that applies. Empty when rows_in = rows_out +
    rows_rejected holds id by id. The ids as polars Series (a stage's id columns) or lists. Anti-joins and
    duplicate flags on the id columns: a frame of every id with its counts held 400 MiB more at 1M records."""
    read = pl.DataFrame({"record_id": pl.Series(upstream, dtype=pl.String)})
    out = pl.DataFrame({"record_id": pl.concat([pl.Series(kept, dtype=pl.String),
                                                pl.Series(rejected, dtype=pl.String)])})

    def flagged(frame: pl.DataFrame, status: str) -> pl.DataFrame:
        return frame.unique(maintain_order=True).with_columns(pl.lit(status).alias("status"))

    found = pl.concat([flagged(read.filter(read["record_id"].is_duplicated()), "read_twice"),
                       flagged(read.join(out, on="record_id", how="anti"), "lost"),
                       flagged(out.join(read, on="record_id", how="anti"), "not_read"),
                       flagged(out.filter(out["record_id"].is_duplicated()), "out_twice")])
    return found.unique("record_id", keep="first", maintain_order=True).sort("record_id")


def reconciliation_expectations() -> list:
    return [E.ExpectColumnValuesToBeInSet(column="status", value_set=["once"])]


def files_accounted_expectations() -> list:
    """Every file counted under raw/ gave records or a reject."""
    return [E.ExpectColumnValuesToBeInSet(column="accounted", value_set=[True])]


def adapter_expectations(baseline_accuracy: float) -> list:
    """No NaN loss, and the adapter beats always predicting the majority class on test."""
    return [
        E.ExpectColumnValuesToBeInSet(column="nan_loss", value_set=[False]),
        E.ExpectColumnValuesToBeBetween(column="test_accuracy", min_value=baseline_accuracy, max_value=1,
                                        strict_min=True),
        E.ExpectColumnValuesToBeBetween(column="test_macro_f1", min_value=0, max_value=1),
    ]


def instruction_adapter_expectations(base_model_loss: float) -> list:
    """No NaN loss, and the tuned model's test loss on response tokens is below the base model's."""
    return [
        E.ExpectColumnValuesToBeInSet(column="nan_loss", value_set=[False]),
        E.ExpectColumnValuesToBeBetween(column="test_loss", min_value=0, max_value=base_model_loss, strict_max=True),
    ]


def comparison_expectations(approaches: list[str]) -> list:
    """One row per configured approach, each with a finite test metric, no NaN loss and a parameter count."""
    return [
        E.ExpectColumnDistinctValuesToEqualSet(column="approach", value_set=approaches),
        E.ExpectColumnValuesToBeUnique(column="approach"),
        E.ExpectColumnValuesToNotBeNull(column="test_metric"),
        E.ExpectColumnValuesToBeBetween(column="test_metric", min_value=0),
        E.ExpectColumnValuesToBeInSet(column="nan_loss", value_set=[False]),
        E.ExpectColumnValuesToBeBetween(column="trainable_parameters", min_value=1),
    ]


def personal_data_frame(exported: pl.DataFrame, found: list) -> pl.DataFrame:
    """Per exported record (`exports.exported_texts`: one text per column or turn), how many personal data
    items the detector still finds in its texts of kinds the policy removes (`privacy.personal_data_left`);
    0 is expected everywhere."""
    return (exported.select("split", "record_id")
            .with_columns(pl.Series("personal_data_found", [sum(c.values()) for c in found], pl.Int64))
            .group_by("split", "record_id", maintain_order=True).agg(pl.col("personal_data_found").sum()))


def personal_data_expectations() -> list:
    return [E.ExpectColumnValuesToBeBetween(column="personal_data_found", min_value=0, max_value=0)]


def contamination_frame(splits: pl.DataFrame, crossing: pl.DataFrame) -> pl.DataFrame:
    """Per record, the number of splits its near-duplicate cluster (`splits.cross_split_near_duplicates`)
    spans: 1 is expected everywhere."""
    spans = crossing.select(pl.col("record_ids").alias("record_id"), pl.col("splits").list.len().alias("n"))
    spans = spans.explode("record_id")
    return (splits.select("record_id", "split").join(spans, on="record_id", how="left")
            .with_columns(pl.col("n").fill_null(1).alias("cluster_splits")).drop("n"))


def contamination_expectations() -> list:
    return [E.ExpectColumnValuesToBeBetween(column="cluster_splits", min_value=1, max_value=1)]


def share_drift_frame(current: pl.DataFrame, published: pl.DataFrame, column: str, limit: float) -> pl.DataFrame:
    """Per value of `column` (label or category), its share of the original records now and in the last
    published split, and whether it moved by at most `limit`. Empty when nothing was published yet."""
    def shares(frame: pl.DataFrame) -> pl.DataFrame:
        if "augmented_from" in frame.columns:
            frame = frame.filter(pl.col("augmented_from").is_null())
        return frame.group_by(pl.col(column).fill_null("(none)").alias("value")).len().with_columns(
            (pl.col("len") / frame.height).alias("share")).drop("len")
    if published.is_empty() or column not in published.columns:
        return pl.DataFrame(schema={"value": pl.String, "share": pl.Float64, "published_share": pl.Float64,
                                    "moved": pl.Float64, "within": pl.Boolean})
    joined = shares(current).join(shares(published).rename({"share": "published_share"}), on="value", how="full",
                                  coalesce=True).fill_null(0.0)
    return joined.with_columns((pl.col("share") - pl.col("published_share")).abs().alias("moved")).with_columns(
        (pl.col("moved") <= limit).alias("within")).sort("value")


def test_support_frame(splits: pl.DataFrame, column: str) -> pl.DataFrame:
    """Per value of `column` anywhere in the splits, its records in the test split (0 when it has none)."""
    value = pl.col(column).fill_null("(none)").alias("value")
    return (splits.group_by(value).agg((pl.col("split") == "test").sum().cast(pl.Int64).alias("test_records"))
            .sort("value"))


def min_count_expectations(column: str, minimum: int) -> list:
    return [E.ExpectColumnValuesToBeBetween(column=column, min_value=minimum)]


def document_frame(splits: pl.DataFrame, document_types: tuple[str, ...]) -> pl.DataFrame:
    """Per source document (records of a document source type), the number of splits its chunks are in;
    1 is expected (`splits.group_by: document`)."""
    originals = splits.filter(pl.col("augmented_from").is_null()) if "augmented_from" in splits.columns else splits
    return (originals.filter(pl.col("source_type").is_in(list(document_types)))
            .group_by("source_uri").agg(pl.col("split").n_unique().alias("n_splits")))
