"""The raw_corpus asset in Dagster: per-source-type metadata, progress in the run log, incremental runs;
the settings a run uses: overridden per run, and read once per run."""

import dagster as dg

from finetune_pipeline.definitions import resources_for
from finetune_pipeline.defs.collection import raw_corpus
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.layout import DataRoot
from finetune_pipeline_tests.test_sources import _write_good_files


def _small_root(root):
    """These roots hold a few records: the blocking row-count check of raw_corpus (its step runs its checks)
    is set to what they hold."""
    (root / "finetune.yaml").write_text("checks: {min_records: 1}\n")


def _materialize(root, instance):
    pipeline = PipelineResource(data_dir=str(root))
    result = dg.materialize([raw_corpus], instance=instance,
                            resources=resources_for(pipeline))
    assert result.success
    [materialization] = result.asset_materializations_for_node("raw_corpus")
    logs = [e.message for e in instance.all_logs(result.run_id) if e.user_message]
    return {k: v.value for k, v in materialization.metadata.items()}, logs


def test_raw_corpus_reports_sources_and_parses_only_changes(tmp_path):
    _write_good_files(tmp_path)
    _small_root(tmp_path)
    with dg.instance_for_test() as instance:
        first, logs = _materialize(tmp_path, instance)
        assert first["sources"] == 7 and first["sources_parsed"] == 7 and first["sources_from_cache"] == 0
        assert "| pdf | 1 | 1 | 0 | 1 | 0 |" in first["by_source_type"]
        assert any("[7/7]" in line for line in logs)
        assert first["settings_used"]["sources"]["chunk_by"] == "title"  # the settings the asset ran with

        (tmp_path / "raw" / "billing" / "a.txt").write_text("A brand new ticket about a refund that never came.")
        second, _ = _materialize(tmp_path, instance)
        assert second["sources_parsed"] == 1 and second["sources_from_cache"] == 6
        assert second["rows_out"] == first["rows_out"]


def test_settings_can_be_overridden_per_run_from_run_config(tmp_path):
    """What the launchpad sends: resources.pipeline.config.settings_yaml, merged over finetune.yaml."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "long.txt").write_text("\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(6)))
    _small_root(tmp_path)
    pipeline = PipelineResource(data_dir=str(tmp_path))
    resources = resources_for(pipeline)
    with dg.instance_for_test() as instance:
        plain = dg.materialize([raw_corpus], instance=instance, resources=resources)
        small = dg.materialize([raw_corpus], instance=instance, resources=resources, run_config={
            "resources": {"pipeline": {"config": {"data_dir": str(tmp_path),
                                                  "settings_yaml": "sources:\n  chunk_max_chars: 400\n"}}}})
        rows = [r.asset_materializations_for_node("raw_corpus")[0].metadata["rows_out"].value for r in (plain, small)]
        assert rows[0] == 1 and rows[1] > 1

        bad = dg.materialize([raw_corpus], instance=instance, resources=resources, raise_on_error=False, run_config={
            "resources": {"pipeline": {"config": {"data_dir": str(tmp_path),
                                                  "settings_yaml": "sources: {chunk_max_chars: tiny}"}}}})
        assert not bad.success
        failure = next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE")
        assert "sources.chunk_max_chars" in str(failure.event_specific_data.error)


@dg.asset
def seed_seen_first(pipeline: PipelineResource) -> dg.MaterializeResult:
    seed = pipeline.settings().splits.seed
    pipeline.data_root().settings_file.write_text("splits: {seed: 99}\n")  # someone edits it mid-run
    return dg.MaterializeResult(metadata={"seed": seed})


@dg.asset(deps=[seed_seen_first])
def seed_seen_next(pipeline: PipelineResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"seed": pipeline.settings().splits.seed})


def two_step_job() -> dg.JobDefinition:
    defs = dg.Definitions(assets=[seed_seen_first, seed_seen_next], jobs=[dg.define_asset_job("two_steps")],
                          resources={"pipeline": PipelineResource()})
    return defs.resolve_job_def("two_steps")


def test_a_run_keeps_the_settings_it_started_with_when_finetune_yaml_changes(tmp_path):
    """Each step runs in its own process; the second step of the run sees the first step's settings
    (the run's snapshot), not the finetune.yaml edited between them. The next run sees the edit."""
    (tmp_path / "finetune.yaml").write_text("splits: {seed: 7}\n")
    run_config = {"resources": {"pipeline": {"config": {"data_dir": str(tmp_path)}}}}

    def seeds(run) -> dict[str, int]:
        return {e.asset_key.to_user_string(): e.materialization.metadata["seed"].value
                for e in run.get_asset_materialization_events()}

    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(two_step_job), instance=instance, run_config=run_config) as run:
            assert run.success
            assert seeds(run) == {"seed_seen_first": 7, "seed_seen_next": 7}
            assert len({e.pid for e in run.all_events if e.is_step_success}) == 2  # two processes
            snapshot = DataRoot(tmp_path).settings_snapshots / f"{run.run_id}.json"
            assert '"seed": 7' in snapshot.read_text()
        with dg.execute_job(dg.reconstructable(two_step_job), instance=instance, run_config=run_config) as run:
            assert seeds(run) == {"seed_seen_first": 99, "seed_seen_next": 99}
