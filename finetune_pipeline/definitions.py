"""The Definitions object: assets, checks, schedules, sensors and resources of the pipeline."""


import dagster as dg

from finetune_pipeline.defs import assets
from finetune_pipeline.defs.automation import (new_annotations, new_raw_files, nightly_refresh, refresh_all,
                                                refresh_labels)
from finetune_pipeline.defs.checks import ALL_CHECKS
from finetune_pipeline.defs.io import ParquetIOManager
from finetune_pipeline.defs.resources import PipelineResource

pipeline = PipelineResource()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=ALL_CHECKS,
    jobs=[refresh_all, refresh_labels],
    schedules=[nightly_refresh],
    sensors=[new_raw_files, new_annotations],
    resources={"pipeline": pipeline, "io_manager": ParquetIOManager(pipeline=pipeline)},
)
