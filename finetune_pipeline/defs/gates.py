"""The quality gates shared by every stage: Great Expectations suites as blocking asset checks, the
accounting identity rows_in = rows_out + rows_rejected, and the guard that stops a stage whose upstream
failed a blocking check.

A stage's checks are check specs on its asset and run in the asset's own step, right after its output is
stored (`checked`), on what was stored: a check costs its work, not a process of its own (3-4 s each under
the multiprocess executor the UI, the schedule and the sensors use). A failed blocking check fails that step
after the output is stored, so Dagster runs nothing downstream of it; a separately launched run that reads a
failed gate is refused before it starts (run_gate.py), and `require_upstream_checks` stops its step should it
start anyway (a run that bypasses the run coordinator).
"""


from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import dagster as dg
import polars as pl

from finetune_pipeline import validation as v
from finetune_pipeline.defs.io import stored_value
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.defs.run_gate import latest_failure
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.raw_inventory import files_accounted
from finetune_pipeline.records import CORPUS_STAGES, reject_share_warnings
from finetune_pipeline.settings import Settings
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.tasks import task_for


@dataclass(frozen=True)
class Gate:
    """One check of an asset: `evaluate(pipeline, current, **upstream)` on the stored value of the asset
    (`current`) and of the upstream assets it names (inputs of the asset's step)."""

    asset: str
    name: str
    description: str
    evaluate: Callable[..., dg.AssetCheckResult]
    upstream: tuple[str, ...] = ()
    blocking: bool = True
    streams: bool = False  # takes a ShardedDataset as it is (the suites run shard by shard); else a frame
    columns: tuple[str, ...] | None = None  # what a frame given to it holds of a dataset (None: every column)

    @property
    def key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(dg.AssetKey(self.asset), self.name)

    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(self.name, asset=self.asset, description=self.description, blocking=self.blocking,
                                 additional_deps=list(self.upstream))


# The checks by the asset they check, in definition order. A stage module defines its assets' checks above
# the assets, so an asset's specs are complete when it is decorated.
GATES: dict[str, list[Gate]] = {}
LISTED = 20  # record ids or paths listed in a failed check's metadata


def gate(asset: str, name: str, description: str, upstream: tuple[str, ...] = (), blocking: bool = True,
         streams: bool = False, columns: tuple[str, ...] | None = None):
    """Register `fn(pipeline, current, **upstream) -> AssetCheckResult` as a check of `asset`; with `streams`,
    `current` and the upstream values may be ShardedDatasets (else they are collected into frames first: only
    the `columns` named, those of them a dataset has, where given)."""

    def decorate(fn):
        GATES.setdefault(asset, []).append(Gate(asset, name, description, fn, tuple(upstream), blocking, streams,
                                                columns))
        return fn

    return decorate


def blocking_checks() -> dict[dg.AssetKey, set[dg.AssetCheckKey]]:
    """The blocking checks by the asset they guard (for `require_upstream_checks`)."""
    return {dg.AssetKey(asset): {g.key for g in gates if g.blocking} for asset, gates in GATES.items()}


def check_specs(*assets: str) -> list[dg.AssetCheckSpec]:
    """The check specs of `assets`, for `@dg.asset(check_specs=...)`."""
    return [g.spec() for asset in assets for g in GATES.get(asset, [])]


def checked(context: dg.AssetExecutionContext, pipeline: PipelineResource, asset: str, value,
            **upstream) -> Iterator:
    """Yield the asset's output (`value`, or a `dg.Output`), then the result of each of its selected checks on
    the value as stored. Dagster stores an output when it is yielded, before this resumes, so a check that
    reads the stage's files (its rejects) reads this run's."""
    output = value if isinstance(value, dg.Output) else dg.Output(value)
    yield output
    selected = context.selected_asset_check_keys
    current = stored_value(output.value)
    gates = [g for g in GATES.get(asset, []) if g.key in selected]
    # A dataset collected once per columns for the checks that take frames, and let go after the last of them:
    # at 1M records each set of record columns is 100-200 MB, which the next checks would otherwise hold.
    frames: dict[tuple, pl.DataFrame] = {}
    uses = Counter((name, g.columns) for g in gates if not g.streams for name in (asset, *g.upstream))

    def as_frame(name: str, value, columns: tuple[str, ...] | None):
        if not isinstance(value, ShardedDataset):
            return value
        if (name, columns) not in frames:  # the columns a check reads: at 1M records never the texts
            frames[(name, columns)] = value.collect() if columns is None else \
                value.scan().select([c for c in columns if c in value.columns]).collect()
        return frames[(name, columns)]

    for g in gates:
        given = {asset: current, **{name: upstream[name] for name in g.upstream}}
        if not g.streams:
            given = {name: as_frame(name, value, g.columns) for name, value in given.items()}
        result = g.evaluate(pipeline, given.pop(asset), **given)
        del given
        if not g.streams:
            for name in (asset, *g.upstream):
                uses[(name, g.columns)] -= 1
                if not uses[(name, g.columns)]:
                    frames.pop((name, g.columns), None)
        if not result.passed and not g.blocking:  # a warning: in the run's log too, not only on the check
            context.log.warning(f"{g.name}: {result.description}")
        yield dg.AssetCheckResult(check_name=g.name, asset_key=dg.AssetKey(asset), passed=result.passed,
                                  severity=result.severity, description=result.description,
                                  metadata=result.metadata)


def require_upstream_checks(context: dg.AssetExecutionContext, *upstream: str) -> None:
    """Refuse to run when the latest evaluation of a blocking check on any of `upstream` failed, in this run
    or any earlier one (a run of one downstream asset must not build on a failed gate)."""
    for asset in upstream:
        _require(context, asset)


def _require(context: dg.AssetExecutionContext, upstream: str) -> None:
    for check_key in sorted(blocking_checks().get(dg.AssetKey(upstream), ()), key=lambda k: k.name):
        if failure := latest_failure(context.instance, check_key):
            raise dg.Failure(description=failure.message())


@dataclass(frozen=True)
class Refusal:
    """Why a blocking check failed, for the person who has to act: the cause in words, the remedies that apply
    (a setting, the allow list, a file to fix), and the records concerned as (record_id, source_uri, locator),
    never their text."""

    cause: str
    remedies: tuple[str, ...] = ()
    records: pl.DataFrame | None = None

    def metadata(self) -> dict:
        """`cause`, `remedies` and `records` (the first LISTED, with `records_concerned` counting them all)."""
        meta = {"cause": dg.MetadataValue.text(self.cause),
                "remedies": dg.MetadataValue.md("\n".join(f"- {r}" for r in self.remedies) or "_none known_")}
        if self.records is not None and self.records.height:
            shown = _record_rows(self.records)
            meta["records_concerned"] = shown.height
            meta["records"] = dg.MetadataValue.md(  # a "|" in a file name would end its cell
                "| record_id | source | locator |\n| --- | --- | --- |\n" + "\n".join(
                    "| " + " | ".join(cell.replace("|", "¦") for cell in row) + " |"
                    for row in shown.head(LISTED).iter_rows()))
        return meta


def _record_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """(record_id, source_uri, locator) of `frame`, each once, in id order (files without records by path);
    missing values empty."""
    columns = [pl.col(c).cast(pl.String).fill_null("") if c in frame.columns else pl.lit("").alias(c)
               for c in ("record_id", "source_uri", "locator")]
    return frame.select(columns).unique(maintain_order=True).sort("record_id", "source_uri", "locator")


PIPELINE_DEFECT = ("this is a defect of the pipeline, not of your data: run again with execution.incremental: false "
                   "to rule out stale stored values, and report it with the run id and the records above if it "
                   "fails again")


def suite_result(*results: v.SuiteResult, extra: dict | None = None,
                 refusal: Refusal | Callable[[], Refusal] | None = None) -> dg.AssetCheckResult:
    """A blocking check's result from one or more GX suite results: passed when all passed. A failed one
    carries `refusal` (its cause, remedies and records; a function that makes it is called only then) in its
    metadata; without one, the failed expectations are the cause and no remedy is claimed."""
    passed = all(r.passed for r in results)
    if not passed and callable(refusal):
        refusal = refusal()
    if not passed and refusal is None:
        refusal = Refusal("; ".join(r.summary() for r in results if not r.passed))
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(r.summary() for r in results),
        metadata={"expectations_evaluated": sum(r.evaluated for r in results),
                  "expectations_failed": sum(len(r.failures) for r in results), **(extra or {}),
                  **(refusal.metadata() if not passed else {})},
    )


def expectations_refusal(asset: str, pipeline: PipelineResource, current: pl.DataFrame, result: v.SuiteResult,
                         labels: list[str] | None = None) -> Refusal | None:
    """The cause and remedies of a failed stage suite: too few rows (with the stage's rejects by reason and
    their detail, which says the fix), labels outside the set (with the records), or else a broken contract."""
    if result.passed:
        return None
    failed = {f["expectation"]: f for f in result.failures}
    settings = pipeline.settings()
    if "expect_table_row_count_to_be_between" in failed:
        rejects = pipeline.stage_rejects(asset)
        remedies = [f"{reason} ({n} {'input' if n == 1 else 'inputs'}): {detail}"
                    for reason, n, detail in _rejects_by_reason(rejects)]
        remedies.append(f"if a corpus this small is intended, lower checks.min_records "
                        f"({settings.checks.min_records}) in finetune.yaml")
        return Refusal(f"{asset} holds {current.height} record(s), fewer than checks.min_records "
                       f"({settings.checks.min_records}); {rejects.height} input(s) were rejected at this stage, "
                       "by reason below", tuple(remedies),
                       rejects if rejects["record_id"].is_not_null().any() else None)
    if labels is not None and any(
            f["expectation"] == "expect_column_values_to_be_in_set" and f.get("column") == "label"
            for f in result.failures):
        rows = current.lazy() if isinstance(current, pl.DataFrame) else current.scan()
        outside = rows.filter(pl.col("label").is_not_null() & ~pl.col("label").is_in(labels)).collect()
        found = sorted(set(outside["label"].to_list()))
        return Refusal(f"{outside.height} record(s) carry a label outside the label set: {', '.join(found)}",
                       ("add the label to `labels` in finetune.yaml if it is one of yours",
                        "else correct the label in the source file (or the review file of the labeling stage) "
                        "and run again"), outside)
    return Refusal(f"{asset} breaks the contract every corpus stage keeps: {result.summary()}", (PIPELINE_DEFECT,))


def _rejects_by_reason(rejects: pl.DataFrame, per_reason: int = 3) -> list[tuple[str, int, str]]:
    """(reason, count, up to `per_reason` distinct details joined) per reject reason, most frequent first."""
    if rejects.is_empty():
        return []
    details = pl.col("detail").drop_nulls().unique(maintain_order=True).head(per_reason)
    grouped = rejects.group_by("reason").agg(pl.len().alias("n"), details) \
        .sort(["n", "reason"], descending=[True, False])
    return [(reason, n, " | ".join(details)) for reason, n, details in grouped.iter_rows()]


def suite_check(asset: str, expectations: Callable[[Settings, pl.DataFrame], list], description: str):
    """A blocking check that runs a GX suite built from the settings on the asset's frame."""

    @gate(asset, f"{asset}_expectations", description, streams=True)
    def _check(pipeline: PipelineResource, current: pl.DataFrame | ShardedDataset) -> dg.AssetCheckResult:
        settings = pipeline.settings()  # on Ray a dataset's row-wise expectations run on the workers
        result = v.validate(current, f"{asset}_expectations", expectations(settings, current), settings.execution)
        return suite_result(result, refusal=expectations_refusal(asset, pipeline, current, result))

    return _check


def accounting_check(asset: str, upstream: str):
    """Blocking: every record read from `upstream` (as stored) is kept or rejected at this stage exactly once,
    by record id, against the stage's rejects on disk: a row lost, kept twice, both kept and rejected, or
    invented fails, even where the counts alone would balance."""

    @gate(asset, f"{asset}_accounting", f"every record of {upstream} is kept or rejected at {asset} exactly once, "
          "by record id, against the rejects on disk (rows_in = rows_out + rows_rejected)", upstream=(upstream,),
          columns=("record_id", "augmented_from", "source_uri", "locator"))
    def _check(pipeline: PipelineResource, current: pl.DataFrame, **inputs: pl.DataFrame) -> dg.AssetCheckResult:
        originals = current.filter(pl.col("augmented_from").is_null()) if "augmented_from" in current.columns \
            else current
        read, rejected = inputs[upstream], pipeline.stage_rejects(asset)
        wrong = v.reconciliation_frame(read["record_id"], originals["record_id"], rejected["record_id"])
        # where each record came from: the stage's own source and locator first (cleaning redacts personal data
        # in them), the upstream's for a record this stage lost
        known = pl.concat([f.select(pl.col(c).cast(pl.String) for c in ("record_id", "source_uri", "locator"))
                           .join(wrong, on="record_id", how="semi")  # of the records named only, not of every one
                           for f in (originals, rejected, read)]).unique("record_id", keep="first", maintain_order=True)
        refusal = Refusal(
            f"records of {upstream} not kept or rejected exactly once at {asset}: "
            + ", ".join(f"{n} {STATUS_WORDS.get(status, status)}" for status, n in
                        wrong.group_by("status").len().sort("status").iter_rows()),
            (PIPELINE_DEFECT,), wrong.select("record_id").join(known, on="record_id", how="left"))
        # the suite reads the records not accounted for once (none: it passes), not every record id
        return suite_result(v.validate(wrong, f"{asset}_accounting", v.reconciliation_expectations()),
                            refusal=refusal, extra={
            "rows_in": read.height, "rows_out": originals.height, "rows_rejected": rejected.height,
            **{f"records_{status}": ", ".join(ids[:LISTED]) for status, ids in
               wrong.group_by("status").agg(pl.col("record_id").sort()).sort("status").iter_rows()}})

    return _check


STATUS_WORDS = {"lost": "neither kept nor rejected (lost)", "out_twice": "kept or rejected more than once",
                "read_twice": "read twice", "not_read": "kept or rejected but never read"}


def files_check(asset: str = "raw_corpus"):
    """Blocking: every file under raw/, listed from the disk (not by the collector), gave records or a reject."""

    @gate(asset, f"{asset}_every_file_accounted",
          "Every file under raw/ (hidden names aside), listed from the disk, gave at least one record or a "
          "reject: no input vanishes without a reason.", columns=("source_uri",))
    def _check(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
        root = pipeline.data_root()
        uris = set(current["source_uri"].to_list()) | set(pipeline.stage_rejects(asset)["source_uri"].to_list())
        frame = files_accounted(root.raw, root.path, uris)
        missing = frame.filter(~pl.col("accounted"))["path"].to_list()
        refusal = Refusal(
            f"{len(missing)} file(s) under raw/ gave neither a record nor a reject: added after {asset} read "
            "raw/, or skipped by the collection",
            (f"materialize {asset} again (finetune-pipeline run) so that it reads them",
             "if they are still unaccounted after that: " + PIPELINE_DEFECT),
            pl.DataFrame({"record_id": [None] * len(missing), "source_uri": missing, "locator": [None] * len(missing)},
                         schema={"record_id": pl.String, "source_uri": pl.String, "locator": pl.String}))
        return suite_result(v.validate(frame, f"{asset}_every_file_accounted", v.files_accounted_expectations()),
                            refusal=refusal, extra={"files_on_disk": frame.height, "files_unaccounted": len(missing),
                                   "unaccounted": ", ".join(missing[:LISTED]) or "none"})

    return _check


def labels_and_records(settings: Settings, frame: pl.DataFrame, root: DataRoot | None = None
                       ) -> tuple[list[str], list | None]:
    """What the corpus suites check per record, by task: the label set (`Task.checked_labels`, with the labels
    of the last published split under `root`), and the task's own per-record expectations (None: labels from
    the set)."""
    task = task_for(settings)
    labels = task.checked_labels(frame, settings, lambda: published_labels(root) if root else set())
    return labels, task.record_expectations(labels)


def published_labels(root: DataRoot) -> set[str]:
    """The labels of the last published split (exports/splits/); empty before the first publish. Read from the
    export's label column only (`exports.published_columns`), never its texts."""
    from finetune_pipeline.exports import published_columns

    frame = published_columns(root.splits_export, ("label",))
    return set(frame["label"].drop_nulls().cast(pl.String).to_list()) if "label" in frame.columns else set()


def label_suite_check(asset: str, expectations: Callable[[Settings, list[str], list | None], list],
                      description: str):
    """A blocking check that runs a GX suite built from the settings and the label set (`labels_and_records`,
    with the published split's labels) on the asset's frame."""

    @gate(asset, f"{asset}_expectations", description, streams=True)
    def _check(pipeline: PipelineResource, current: pl.DataFrame | ShardedDataset) -> dg.AssetCheckResult:
        settings = pipeline.settings()
        # the label set comes from the label columns only (a dataset's are read from every shard)
        label_columns = current if isinstance(current, pl.DataFrame) else current.scan().select(
            [c for c in current.columns if c in ("label", "label_source")]).collect()
        labels, records = labels_and_records(settings, label_columns, pipeline.data_root())
        result = v.validate(current, f"{asset}_expectations", expectations(settings, labels, records),
                            settings.execution)
        return suite_result(result, refusal=expectations_refusal(asset, pipeline, current, result, labels))

    return _check


def reject_share_check(asset: str):
    """Warning (non-blocking): one reject reason took more than `checks.max_reject_share` of the stage's input
    (its original rows kept plus its rejects); names the reason, the share, a few record ids and the setting."""

    @gate(asset, f"{asset}_reject_share", f"Warns when one reject reason of {asset} took more than "
          "checks.max_reject_share of its input, naming the reason, the share, record ids and the setting to "
          "change: a filter mis-set for this data can discard a corpus.", blocking=False,
          columns=("record_id", "augmented_from"))
    def _check(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
        originals = current.filter(pl.col("augmented_from").is_null()) if "augmented_from" in current.columns \
            else current
        rejected, max_share = pipeline.stage_rejects(asset), pipeline.settings().checks.max_reject_share
        rows_in = originals.height + rejected.height
        warnings = reject_share_warnings(asset, rows_in, rejected, max_share)
        return dg.AssetCheckResult(
            passed=not warnings, severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(w.message() for w in warnings)
            or f"no reject reason took more than checks.max_reject_share={max_share} of {rows_in} records",
            metadata={"rows_in": rows_in, "max_reject_share": max_share,
                      "reject_share_warnings": dg.MetadataValue.json([w.to_dict() for w in warnings])})

    return _check


# Every corpus stage, whatever its filters, warns when one of them took too large a share of its input.
for _stage in CORPUS_STAGES:
    reject_share_check(_stage)
