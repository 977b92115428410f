"""Refuse a run before any step starts when it would build on a failed gate.

A run is refused when an asset it reads, directly or through other assets it does not rebuild, has a
blocking check whose latest evaluation failed. An asset the run rebuilds does not block it: the run
re-evaluates that asset's checks, and Dagster skips what is downstream if they fail again.

Every entry point goes through `failed_gates`: `GatedRunCoordinator` (the UI, `dagster job launch`, and
the runs that sensors, schedules and backfills submit through the daemon; named in dagster.yaml),
`finetune-pipeline run --select`, and the sensors and the schedule, which skip with the reason.
`require_upstream_checks` (gates.py) stays in the steps as the last line of defence, for runs that bypass
the coordinator (`execute_in_process`, `dagster asset materialize`).

This module imports dagster only, so the webserver and daemon load it without the pipeline.
"""

from dataclasses import dataclass
from typing import AbstractSet, Iterable

import dagster as dg
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext


@dataclass(frozen=True)
class FailedGate:
    """A blocking check on an asset the run reads, failing in its latest evaluation."""

    check: dg.AssetCheckKey
    run_id: str

    def message(self) -> str:
        asset = self.check.asset_key.to_user_string()
        return (f"blocked: check '{self.check.name}' on {asset} failed in run {self.run_id}. "
                f"Fix the data or settings and re-materialize {asset} (with its checks) first.")


def latest_failure(instance: dg.DagsterInstance, check: dg.AssetCheckKey) -> FailedGate | None:
    """The check's latest evaluation when it failed with error severity (a warning never blocks)."""
    record = instance.get_latest_asset_check_evaluation_record(check)
    evaluation = record.evaluation if record else None  # None: planned, not evaluated yet
    if evaluation is None or evaluation.passed or evaluation.severity == dg.AssetCheckSeverity.WARN:
        return None
    return FailedGate(check, record.run_id)


def failed_gates(instance: dg.DagsterInstance, graph: BaseAssetGraph,
                 selected: Iterable[dg.AssetKey]) -> list[FailedGate]:
    """The failed blocking checks on the assets a run of `selected` reads but does not rebuild, walking
    upstream through every asset it does not rebuild. Works on a local or a remote (workspace) asset graph."""
    rebuilt = set(selected)
    pending = [parent for key in rebuilt if graph.has(key) for parent in graph.get(key).parent_keys]
    seen: set[dg.AssetKey] = set()
    failed = []
    while pending:
        key = pending.pop()
        if key in seen or key in rebuilt or not graph.has(key):
            continue
        seen.add(key)
        node = graph.get(key)
        for check in sorted(node.check_keys, key=lambda k: k.name):
            if graph.get(check).blocking and (failure := latest_failure(instance, check)):
                failed.append(failure)
        pending.extend(node.parent_keys)
    return sorted(failed, key=lambda f: (f.check.asset_key.to_user_string(), f.check.name))


def job_asset_keys(job: dg.JobDefinition) -> AbstractSet[dg.AssetKey]:
    """The assets a (local) asset job materializes."""
    return job.asset_layer.selected_asset_keys


def refusal(failed: list[FailedGate]) -> str:
    """One message naming every failed check and the run it failed in."""
    return "; ".join(f.message() for f in failed)


def gate_skip(context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext,
              job_name: str) -> dg.SkipReason | None:
    """For a sensor or schedule: a SkipReason naming the failed checks when a run of `job_name` would be
    refused, else None. The daemon always gives the context its repository and instance; a context built by
    hand without them is not gated."""
    try:
        repository, instance = context.repository_def, context.instance
    except dg.DagsterInvariantViolationError:
        return None
    if repository is None:
        return None
    failed = failed_gates(instance, repository.asset_graph, job_asset_keys(repository.get_job(job_name)))
    return dg.SkipReason(f"{job_name} not requested: {refusal(failed)}") if failed else None


class GatedRunCoordinator(QueuedRunCoordinator):
    """The queued run coordinator (its `concurrency` settings unchanged) that marks a submitted run failed,
    before it is queued or any step starts, when it would build on a failed gate (`failed_gates`)."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if run.status == dg.DagsterRunStatus.NOT_STARTED:
            graph = context.workspace.asset_graph
            selected = run.asset_selection if run.asset_selection is not None \
                else graph.asset_keys_for_job(run.job_name)
            failed = failed_gates(self._instance, graph, selected) if selected else []
            if failed:
                self._instance.report_run_failed(run, f"run refused before it started: {refusal(failed)}")
                return self._instance.get_run_by_id(run.run_id)
        return super().submit_run(context)
