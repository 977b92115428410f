"""The Dagster layer: a thin map of the pipeline over the plain library in `finetune_pipeline`.

One module per stage group (collection, cleaning, labeling, augmentation, splits, training, reporting),
each with its assets and their checks; `metadata` renders what the assets show, `gates` holds the
shared quality gates, `resources` and `io` the resources, `automation` the jobs, schedule and sensors.
"""

OWNERS = ["team:data-engineering"]
