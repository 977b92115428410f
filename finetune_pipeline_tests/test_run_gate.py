"""A run that would build on a failed blocking check is refused before any step starts: by the run
coordinator of dagster.yaml (what the UI, the daemon and backfills submit through), on a small graph with a
check that really fails; the project's instance files name that coordinator and keep their run limits."""

import shutil

import dagster as dg
import yaml
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from finetune_pipeline.defs.run_gate import GatedRunCoordinator, failed_gates
from finetune_pipeline_tests.conftest import REPO


class Value(dg.Config):
    value: int = 1


@dg.asset
def upstream(config: Value) -> int:
    return config.value


@dg.asset_check(asset=upstream, blocking=True)
def upstream_not_negative(upstream: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=upstream >= 0)


@dg.asset_check(asset=upstream, blocking=False)
def upstream_small(upstream: int) -> dg.AssetCheckResult:  # a warning: never blocks
    return dg.AssetCheckResult(passed=upstream < 10, severity=dg.AssetCheckSeverity.WARN)


@dg.asset
def middle(upstream: int) -> int:
    return upstream + 1


@dg.asset
def downstream(middle: int) -> int:
    return middle + 1


gate_defs = dg.Definitions(assets=[upstream, middle, downstream], asset_checks=[upstream_not_negative, upstream_small])
COORDINATOR = {"module": "finetune_pipeline.defs.run_gate", "class": "GatedRunCoordinator"}


def _materialize(instance, value: int, *assets: str):
    job = gate_defs.resolve_implicit_global_asset_job_def()
    selection = [dg.AssetKey(a) for a in assets] if assets else None
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=selection,
                                  run_config={"ops": {"upstream": {"config": {"value": value}}}} if not assets
                                  or "upstream" in assets else None)


def _submit(instance, workspace, *assets: str) -> dg.DagsterRun:
    """What the UI's Materialize button does: create the run of the asset job, then submit it."""
    [location] = workspace.code_location_names
    repository = next(iter(workspace.get_code_location(location).get_repositories().values()))
    remote_job = repository.get_full_job("__ASSET_JOB")
    run = instance.create_run_for_job(
        gate_defs.resolve_implicit_global_asset_job_def(), asset_selection={dg.AssetKey(a) for a in assets},
        remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin())
    return instance.submit_run(run.run_id, workspace)


def _step_starts(instance, run_id: str) -> list:
    return [e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_step_start]


def test_a_run_reading_a_failed_gate_is_refused_before_any_step_starts():
    with dg.instance_for_test(overrides={"run_coordinator": COORDINATOR}) as instance, \
            in_process_test_workspace(instance, LoadableTargetOrigin(python_file=__file__, attribute="gate_defs")) \
            as workspace:
        assert isinstance(instance.run_coordinator, GatedRunCoordinator)
        bad = _materialize(instance, -1)
        assert [e.asset_check_evaluation_data.passed for e in bad.all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION"
                and e.asset_check_evaluation_data.check_name == "upstream_not_negative"] == [False]

        # downstream reads upstream through middle, which it does not rebuild: refused, no step started
        refused = _submit(instance, workspace, "downstream")
        assert refused.status == dg.DagsterRunStatus.FAILURE
        assert _step_starts(instance, refused.run_id) == []
        [failure] = [e.message for e in instance.all_logs(refused.run_id)
                     if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE]
        assert f"blocked: check 'upstream_not_negative' on upstream failed in run {bad.run_id}" in failure
        assert "upstream_small" not in failure  # a warning never blocks
        # the same answer from the local graph (what the CLI and the sensors use)
        [gate] = failed_gates(instance, gate_defs.resolve_asset_graph(), {dg.AssetKey("middle")})
        assert (gate.check.name, gate.run_id) == ("upstream_not_negative", bad.run_id)

        # a run that rebuilds upstream (and so re-runs its check) is queued as usual
        assert _submit(instance, workspace, "upstream", "middle").status == dg.DagsterRunStatus.QUEUED

        # once upstream passes its check again, downstream alone goes through
        assert _materialize(instance, 3, "upstream").success
        assert _submit(instance, workspace, "downstream").status == dg.DagsterRunStatus.QUEUED


def test_the_instance_files_use_the_gated_coordinator_and_keep_their_limits(tmp_path):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, GatedRunCoordinator)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
    production = yaml.safe_load((REPO / "dagster.postgres.yaml").read_text())
    assert production["run_coordinator"] == yaml.safe_load((REPO / "dagster.yaml").read_text())["run_coordinator"]


@dg.asset(name="deduplicated_corpus")
def dedup_stand_in() -> int:
    return 1


@dg.asset_check(asset="deduplicated_corpus", name="deduplicated_corpus_expectations", blocking=True)
def dedup_stand_in_fails() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)


def test_the_sensors_and_the_schedule_skip_naming_the_check_when_their_run_would_be_refused(tmp_path):
    from finetune_pipeline.definitions import definitions_for
    from finetune_pipeline.defs.automation import new_annotations, nightly_refresh
    from finetune_pipeline.defs.resources import PipelineResource
    from finetune_pipeline.layout import DataRoot

    repository = definitions_for(DataRoot(tmp_path)).get_repository_def()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "batch1.csv").write_text("record_id,annotator,label\nr1,ann1,billing\n")
    with dg.instance_for_test() as instance:
        def tick(cursor=None):
            context = dg.build_sensor_context(instance=instance, repository_def=repository, cursor=cursor,
                                              resources={"pipeline": PipelineResource(data_dir=str(tmp_path))})
            return new_annotations(context), context.cursor

        assert isinstance(tick()[0], dg.RunRequest)  # no gate failed yet
        # the real check key of the project's deduplicated_corpus, failed in a real run
        stand_in = dg.Definitions(assets=[dedup_stand_in], asset_checks=[dedup_stand_in_fails])
        bad = stand_in.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, raise_on_error=False).run_id
        result, cursor = tick()
        assert isinstance(result, dg.SkipReason) and cursor is None  # the annotations are requested later
        assert result.skip_message.startswith("refresh_labels not requested: blocked: check "
                                              f"'deduplicated_corpus_expectations' on deduplicated_corpus failed "
                                              f"in run {bad}")
        # the nightly refresh rebuilds deduplicated_corpus and re-runs its checks: never refused by it
        schedule = dg.build_schedule_context(instance=instance, repository_def=repository)
        assert isinstance(nightly_refresh.evaluate_tick(schedule).run_requests[0], dg.RunRequest)


@dg.asset(name="dataset_splits")
def splits_stand_in() -> int:
    return 1


@dg.asset_check(asset="dataset_splits", name="dataset_splits_no_personal_data", blocking=True)
def splits_stand_in_fails() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)


def test_the_coordinator_refuses_a_run_of_the_projects_published_splits_over_its_real_graph():
    """The project's own definitions as the UI loads them (a code location), and the project's check key
    failed in a real run: `published_splits` alone is refused, a run that rebuilds dataset_splits is not."""
    stand_in = dg.Definitions(assets=[splits_stand_in], asset_checks=[splits_stand_in_fails])
    with dg.instance_for_test(overrides={"run_coordinator": COORDINATOR}) as instance, \
            in_process_test_workspace(instance, LoadableTargetOrigin(module_name="finetune_pipeline.definitions",
                                                                     attribute="defs")) as workspace:
        bad = stand_in.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, raise_on_error=False).run_id
        [location] = workspace.code_location_names
        repository = next(iter(workspace.get_code_location(location).get_repositories().values()))
        remote_job = repository.get_full_job("__ASSET_JOB")
        from finetune_pipeline.definitions import defs

        def submit(*assets: str) -> dg.DagsterRun:
            run = instance.create_run_for_job(
                defs.resolve_implicit_global_asset_job_def(), asset_selection={dg.AssetKey(a) for a in assets},
                remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin())
            return instance.submit_run(run.run_id, workspace)

        refused = submit("published_splits")
        assert refused.status == dg.DagsterRunStatus.FAILURE and _step_starts(instance, refused.run_id) == []
        assert any(f"check 'dataset_splits_no_personal_data' on dataset_splits failed in run {bad}" in (e.message or "")
                   for e in instance.all_logs(refused.run_id))
        assert submit("dataset_splits", "published_splits").status == dg.DagsterRunStatus.QUEUED
