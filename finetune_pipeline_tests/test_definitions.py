"""The Definitions load, with every stage, blocking checks, the schedule and the sensor."""

import dagster as dg

from finetune_pipeline.definitions import defs

STAGES = ["raw_corpus", "cleaned_corpus", "deduplicated_corpus", "labeled_corpus", "augmented_corpus",
          "dataset_splits", "lora_adapter"]
PUBLISHED = {"published_splits": "dataset_splits", "published_adapter": "lora_adapter",
             "published_comparison": "approach_comparison"}


def test_graph_has_the_seven_stages_in_order():
    graph = defs.get_repository_def().asset_graph
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(STAGES) | {"raw_files", "review_queue", "split_assignment", "rejected_records", "data_card",
                          "bias_report", "approach_comparison", *PUBLISHED} == keys
    for upstream, downstream in zip(STAGES, STAGES[1:]):
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, (upstream, downstream)


def test_the_split_is_decided_once_before_augmentation():
    """split_assignment reads the labeled originals; augmentation and the export both read it."""
    graph = defs.get_repository_def().asset_graph

    def parents(asset: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(asset)).parent_keys}

    assert parents("split_assignment") == {"labeled_corpus"}
    assert parents("augmented_corpus") == {"labeled_corpus", "split_assignment"}
    assert parents("dataset_splits") == {"augmented_corpus", "split_assignment"}
    assert graph.get(dg.AssetKey("split_assignment")).group_name == "splits"
    for published, made_by in PUBLISHED.items():  # publishing waits for the checks of what it publishes
        assert {k.to_user_string() for k in graph.get(dg.AssetKey(published)).parent_keys} == {made_by}


# Checks that warn without stopping anything downstream (advice, not gates).
WARNING_CHECKS = {"bias_report_representation", "dataset_splits_share_drift", "dataset_splits_test_support",
                  *(f"{stage}_reject_share" for stage in STAGES[:5])}  # every corpus stage


def test_every_asset_is_described_grouped_and_every_check_blocks():
    repo = defs.get_repository_def()
    for key in repo.asset_graph.get_all_asset_keys():
        node = repo.asset_graph.get(key)
        assert node.description and node.group_name != "default", key
    checks = list(repo.asset_graph.asset_check_keys)
    covered = {c.asset_key.to_user_string() for c in checks}
    assert set(STAGES) <= covered
    for check in checks:
        assert repo.asset_graph.get_check_spec(check).blocking == (check.name not in WARNING_CHECKS), check
    assert WARNING_CHECKS <= {c.name for c in checks}


def test_schedule_and_sensor_run_by_default():
    assert defs.get_schedule_def("nightly_refresh").default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.get_sensor_def("new_raw_files").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.get_sensor_def("new_annotations").default_status == dg.DefaultSensorStatus.RUNNING


def test_annotations_refresh_labeling_and_everything_downstream():
    job = defs.resolve_job_def("refresh_labels")
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert keys == {"labeled_corpus", "review_queue", "split_assignment", "augmented_corpus", "dataset_splits",
                    "lora_adapter", "bias_report", "approach_comparison", "rejected_records", "data_card", *PUBLISHED}
    assert defs.get_sensor_def("new_annotations").job_name == "refresh_labels"


def test_training_runs_in_the_gpu_pool():
    for name in ("lora_adapter", "approach_comparison"):
        assert defs.get_assets_def(name).op.pool == "gpu", name


def test_comparison_reuses_the_adapter_instead_of_training_it_twice():
    graph = defs.get_repository_def().asset_graph
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("approach_comparison")).parent_keys}
    assert parents == {"dataset_splits", "lora_adapter"}


def test_any_stage_with_its_upstream_makes_a_job():
    """`dagster asset materialize --select '*<stage>'` for every stage: labeled_corpus and review_queue
    come from one labeling step, which runs for either of them alone."""
    graph = defs.get_repository_def().asset_graph
    job = defs.resolve_implicit_global_asset_job_def()
    for stage in [*STAGES, "review_queue"]:
        selection = dg.AssetSelection.assets(stage).upstream().resolve(graph)
        keys = job.get_subset(asset_selection=selection).asset_layer.selected_asset_keys
        assert {k.to_user_string() for k in keys} == {k.to_user_string() for k in selection}, stage
    splits_upstream = {k.to_user_string() for k in dg.AssetSelection.assets("dataset_splits").upstream().resolve(graph)}
    assert "labeled_corpus" in splits_upstream and "review_queue" not in splits_upstream


def test_the_guard_of_separately_launched_runs_knows_every_blocking_check():
    from finetune_pipeline.defs.gates import blocking_checks

    graph = defs.get_repository_def().asset_graph
    blocking = {k for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {k for keys in blocking_checks().values() for k in keys}


def test_every_check_runs_in_the_step_of_its_asset():
    """A check is a check spec of its asset, evaluated in the asset's step: no step (a process under the
    multiprocess executor) of its own."""
    job = defs.resolve_job_def("refresh_all")
    steps = {node.name for node in job.graph.node_dict.values()}
    graph = defs.get_repository_def().asset_graph
    assert graph.asset_check_keys and not any(check.name in steps for check in graph.asset_check_keys)
    for check in graph.asset_check_keys:
        assert check in graph.get(check.asset_key).assets_def.check_keys, check
