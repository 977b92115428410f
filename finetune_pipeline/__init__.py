"""finetune-pipeline: prepare fine-tuning datasets from raw material and train LoRA adapters on them.

The modules here are a plain library (no dagster imports); `finetune_pipeline.defs` is the Dagster
layer and `finetune_pipeline.definitions` its entry point.
"""

__version__ = "0.1.0"
