"""The quality gates shared by every stage: Great Expectations suites as blocking asset checks, the
accounting identity rows_in = rows_out + rows_rejected, and the guard that stops a stage whose upstream
failed a blocking check.

Within one run Dagster skips the steps downstream of a failed blocking check; a separately launched run
that reads a failed gate is refused before it starts (run_gate.py), and `require_upstream_checks` stops
its step should it start anyway (a run that bypasses the run coordinator).
"""


from typing import Callable

import dagster as dg
import polars as pl

from finetune_pipeline import validation as v
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.defs.run_gate import latest_failure
from finetune_pipeline.settings import Settings
from finetune_pipeline.tasks import task_for


# The blocking checks by the asset they guard, recorded as the stage modules define them. A module defines
# its assets' checks beside them, so a job that holds an upstream asset has recorded its checks.
BLOCKING_CHECKS: dict[dg.AssetKey, set[dg.AssetCheckKey]] = {}


def blocking_check(asset: str, name: str, description: str, **kwargs):
    """`dg.asset_check(blocking=True)` on `asset`, recorded for `require_upstream_checks`."""

    def decorate(fn) -> dg.AssetChecksDefinition:
        checks_def = dg.asset_check(asset=asset, name=name, blocking=True, description=description, **kwargs)(fn)
        BLOCKING_CHECKS.setdefault(dg.AssetKey(asset), set()).update(checks_def.check_keys)
        return checks_def

    return decorate


def require_upstream_checks(context: dg.AssetExecutionContext, *upstream: str) -> None:
    """Refuse to run when the latest evaluation of a blocking check on any of `upstream` failed, in this run
    or any earlier one (a run of one downstream asset must not build on a failed gate)."""
    for asset in upstream:
        _require(context, asset)


def _require(context: dg.AssetExecutionContext, upstream: str) -> None:
    for check_key in sorted(BLOCKING_CHECKS.get(dg.AssetKey(upstream), ()), key=lambda k: k.name):
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

    @blocking_check(asset, f"{asset}_expectations", description)
    def _check(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
        return suite_result(v.validate(current, f"{asset}_expectations", expectations(pipeline.settings(), current)))

    return _check


def accounting_check(asset: str, upstream: str):
    """Blocking: every upstream row is either kept or rejected at this stage (nothing lost)."""

    @blocking_check(asset, f"{asset}_accounting", f"rows of {upstream} = rows kept + rows rejected at {asset}",
                    additional_ins={"upstream": dg.AssetIn(upstream)})
    def _check(pipeline: PipelineResource, current: pl.DataFrame, upstream: pl.DataFrame) -> dg.AssetCheckResult:
        originals = current.filter(pl.col("augmented_from").is_null()) if "augmented_from" in current.columns \
            else current
        rejected = pipeline.stage_rejects(asset).height
        counts = pl.DataFrame({"rows_in": [upstream.height], "rows_out_plus_rejected": [originals.height + rejected]})
        return suite_result(v.validate(counts, f"{asset}_accounting", v.accounting_expectations()),
                            extra={"rows_in": upstream.height, "rows_out": originals.height, "rows_rejected": rejected})

    return _check


def labels_and_records(settings: Settings, frame: pl.DataFrame) -> tuple[list[str], list | None]:
    """What the corpus suites check per record, by task: the label set, and the task's own per-record
    expectations (None: labels from the set)."""
    task = task_for(settings)
    labels = task.labels(frame, settings)
    return labels, task.record_expectations(labels)
