"""The Definitions object: assets, checks, schedules, sensors and resources of the pipeline."""


import dagster as dg

from finetune_pipeline.defs import augmentation, cleaning, collection, labeling, reporting, splits, training
from finetune_pipeline.defs.automation import (new_annotations, new_raw_files, nightly_refresh, refresh_all,
                                                refresh_labels, settings_changed)
from finetune_pipeline.defs.io import ParquetIOManager
from finetune_pipeline.defs.resources import ExperimentTracking, PipelineResource, RayCluster
from finetune_pipeline.layout import DataRoot

# One module per stage group, in pipeline order; each holds its assets and their checks.
STAGE_MODULES = [collection, cleaning, labeling, augmentation, splits, training, reporting]
ALL_ASSETS = dg.load_assets_from_modules(STAGE_MODULES)  # each asset carries its checks (check_specs)


def resources_for(pipeline: PipelineResource) -> dict:
    """Every resource the assets use: the data root and settings, the Parquet IO manager, the Ray
    cluster the heavy stages run on when `execution.backend` is `ray` (idle otherwise), and MLflow tracking.

    The IO manager, the Ray cluster and tracking take the run's `pipeline` resource itself (the same data root and
    settings, launchpad overrides included), not copies configured on their own."""
    shared = PipelineResource.configure_at_launch(
        **{name: value for name, value in (("data_dir", pipeline.data_dir), ("settings_yaml", pipeline.settings_yaml))
           if value is not None})
    return {"pipeline": shared, "io_manager": ParquetIOManager(pipeline=shared), "ray_cluster": RayCluster(pipeline=shared),
            "tracking": ExperimentTracking(pipeline=shared)}


# How the UI, the schedule, the sensors and `dagster asset materialize` run the steps: each in its own process
# (Dagster's multiprocess executor), forked from a server that has already imported Dagster and Great
# Expectations, which every step with a check needs and which take about 4 s to import; a spawned process
# imported them again for every step (a 5-step run: 67 s spawned, 47 s forked, docs/benchmarks.md). Only modules
# that start no thread of their own at import and touch no GPU are preloaded: not this package (it would fork
# polars' state), not torch and transformers (5 s more saved here, but a CUDA driver initialized in the server
# would break the training steps forked from it, and that is not testable without a GPU).
# (`finetune-pipeline run` runs the steps in its own process and is not affected.)
PRELOADED = ["dagster", "great_expectations"]
EXECUTOR = dg.multi_or_in_process_executor.configured(
    {"multiprocess": {"start_method": {"forkserver": {"preload_modules": PRELOADED}}}})


def definitions_for(root: DataRoot | None = None, executor: dg.ExecutorDefinition = EXECUTOR) -> dg.Definitions:
    """The pipeline on `root`; without one, on $FINETUNE_DATA_DIR (else data/) as each run starts. `executor`:
    the jobs' (scripts/bench_step_start.py measures this one against Dagster's default)."""
    pipeline = PipelineResource(data_dir=str(root.path) if root else None)
    return dg.Definitions(
        assets=ALL_ASSETS,
        jobs=[refresh_all, refresh_labels],
        schedules=[nightly_refresh],
        sensors=[new_raw_files, new_annotations, settings_changed],
        resources=resources_for(pipeline),
        executor=executor,
    )


defs = definitions_for()
