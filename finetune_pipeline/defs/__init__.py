"""The Dagster layer: a thin map of the pipeline over the plain library in `finetune_pipeline`."""
