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


def gate(asset: str, name: str, description: str, upstream: tuple[str, ...] = (), blocking: bool = True):
    """Register `fn(pipeline, current, **upstream) -> AssetCheckResult` as a check of `asset`."""

    def decorate(fn):
        GATES.setdefault(asset, []).append(Gate(asset, name, description, fn, tuple(upstream), blocking))
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
    for g in GATES.get(asset, []):
        if g.key in selected:
            result = g.evaluate(pipeline, current, **{name: upstream[name] for name in g.upstream})
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


def suite_result(*results: v.SuiteResult, extra: dict | None = None) -> dg.AssetCheckResult:
    """A blocking check's result from one or more GX suite results: passed when all passed."""
    return dg.AssetCheckResult(
        passed=all(r.passed for r in results),
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(r.summary() for r in results),
        metadata={"expectations_evaluated": sum(r.evaluated for r in results),
                  "expectations_failed": sum(len(r.failures) for r in results), **(extra or {})},
    )


def suite_check(asset: str, expectations: Callable[[Settings, pl.DataFrame], list], description: str):
    """A blocking check that runs a GX suite built from the settings on the asset's frame."""

    @gate(asset, f"{asset}_expectations", description)
    def _check(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
        return suite_result(v.validate(current, f"{asset}_expectations", expectations(pipeline.settings(), current)))

    return _check


def accounting_check(asset: str, upstream: str):
    """Blocking: every record read from `upstream` (as stored) is kept or rejected at this stage exactly once,
    by record id, against the stage's rejects on disk: a row lost, kept twice, both kept and rejected, or
    invented fails, even where the counts alone would balance."""

    @gate(asset, f"{asset}_accounting", f"every record of {upstream} is kept or rejected at {asset} exactly once, "
          "by record id, against the rejects on disk (rows_in = rows_out + rows_rejected)", upstream=(upstream,))
    def _check(pipeline: PipelineResource, current: pl.DataFrame, **inputs: pl.DataFrame) -> dg.AssetCheckResult:
        originals = current.filter(pl.col("augmented_from").is_null()) if "augmented_from" in current.columns \
            else current
        read, rejected = inputs[upstream], pipeline.stage_rejects(asset)
        frame = v.reconciliation_frame(read["record_id"].to_list(), originals["record_id"].to_list(),
                                       rejected["record_id"].to_list())
        wrong = frame.filter(pl.col("status") != "once")
        return suite_result(v.validate(frame, f"{asset}_accounting", v.reconciliation_expectations()), extra={
            "rows_in": read.height, "rows_out": originals.height, "rows_rejected": rejected.height,
            **{f"records_{status}": ", ".join(ids[:LISTED]) for status, ids in
               wrong.group_by("status").agg(pl.col("record_id").sort()).sort("status").iter_rows()}})

    return _check


def files_check(asset: str = "raw_corpus"):
    """Blocking: every file under raw/, listed from the disk (not by the collector), gave records or a reject."""

    @gate(asset, f"{asset}_every_file_accounted",
          "Every file under raw/ (hidden names aside), listed from the disk, gave at least one record or a "
          "reject: no input vanishes without a reason.")
    def _check(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
        root = pipeline.data_root()
        uris = set(current["source_uri"].to_list()) | set(pipeline.stage_rejects(asset)["source_uri"].to_list())
        frame = files_accounted(root.raw, root.path, uris)
        missing = frame.filter(~pl.col("accounted"))["path"].to_list()
        return suite_result(v.validate(frame, f"{asset}_every_file_accounted", v.files_accounted_expectations()),
                            extra={"files_on_disk": frame.height, "files_unaccounted": len(missing),
                                   "unaccounted": ", ".join(missing[:LISTED]) or "none"})

    return _check


def labels_and_records(settings: Settings, frame: pl.DataFrame, root: DataRoot | None = None
                       ) -> tuple[list[str], list | None]:
    """What the corpus suites check per record, by task: the label set, and the task's own per-record
    expectations (None: labels from the set).

    With `labels: []` the set is not what the frame holds (then "label in set" could not fail) but what was
    given: labels from a column, a folder or people (human, crowd) in `frame`, plus those of the last
    published split under `root`. A label only the model (or augmentation) produced fails."""
    task = task_for(settings)
    labels = task.labels(frame, settings)
    if task.labeled and not settings.labels:
        labels = sorted(given_labels(frame) | (published_labels(root) if root else set()))
    return labels, task.record_expectations(labels)


GIVEN_LABEL_SOURCES = ("column", "folder", "human", "crowd")


def given_labels(frame: pl.DataFrame) -> set[str]:
    """Labels some record carries from a column, a folder or a person (not from the model)."""
    if "label" not in frame.columns or "label_source" not in frame.columns:
        return set()
    return set(frame.filter(pl.col("label_source").is_in(GIVEN_LABEL_SOURCES))["label"].drop_nulls().to_list())


def published_labels(root: DataRoot) -> set[str]:
    """The labels of the last published split (exports/splits/*.jsonl); empty before the first publish."""
    found: set[str] = set()
    for path in sorted(root.splits_export.glob("*.jsonl")):
        if path.stat().st_size:
            frame = pl.read_ndjson(path)
            if "label" in frame.columns:
                found |= set(frame["label"].drop_nulls().cast(pl.String).to_list())
    return found


def label_suite_check(asset: str, expectations: Callable[[Settings, list[str], list | None], list],
                      description: str):
    """A blocking check that runs a GX suite built from the settings and the label set (`labels_and_records`,
    with the published split's labels) on the asset's frame."""

    @gate(asset, f"{asset}_expectations", description)
    def _check(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
        settings = pipeline.settings()
        labels, records = labels_and_records(settings, current, pipeline.data_root())
        return suite_result(v.validate(current, f"{asset}_expectations", expectations(settings, labels, records)))

    return _check


def reject_share_check(asset: str):
    """Warning (non-blocking): one reject reason took more than `checks.max_reject_share` of the stage's input
    (its original rows kept plus its rejects); names the reason, the share, a few record ids and the setting."""

    @gate(asset, f"{asset}_reject_share", f"Warns when one reject reason of {asset} took more than "
          "checks.max_reject_share of its input, naming the reason, the share, record ids and the setting to "
          "change: a filter mis-set for this data can discard a corpus.", blocking=False)
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
