"""The Definitions object: assets, checks, schedules, sensors and resources of the pipeline."""


import dagster as dg

from finetune_pipeline.defs import assets
from finetune_pipeline.defs.automation import (new_annotations, new_raw_files, nightly_refresh, refresh_all,
                                                refresh_labels)
from finetune_pipeline.defs.checks import ALL_CHECKS
from finetune_pipeline.defs.io import ParquetIOManager
from finetune_pipeline.defs.resources import PipelineResource, RayCluster



def resources_for(pipeline: PipelineResource) -> dict:
    """Every resource the assets use: the data root and settings, the Parquet IO manager, and the Ray
    cluster the heavy stages run on when `execution.backend` is `ray` (idle otherwise)."""
    return {"pipeline": pipeline, "io_manager": ParquetIOManager(pipeline=pipeline),
            "ray_cluster": RayCluster(pipeline=pipeline)}


pipeline = PipelineResource()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=ALL_CHECKS,
    jobs=[refresh_all, refresh_labels],
    schedules=[nightly_refresh],
    sensors=[new_raw_files, new_annotations],
    resources=resources_for(pipeline),
)
