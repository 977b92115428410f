"""A Parquet/JSON IO manager: no pickles. Corpus frames are Parquet files; a stage's rejects and
statistics go beside them, so `rejected_records` and the data card can read every stage's."""


import json

import dagster as dg
import polars as pl

from finetune_pipeline import atomic
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.records import StageResult


def stored_value(obj):
    """What a downstream step (or a check) reads back of `obj`: a StageResult's kept frame, a frame as is
    (Parquet keeps its types), a dict as its JSON."""
    if isinstance(obj, StageResult):
        return obj.kept
    if isinstance(obj, dict):
        return json.loads(json.dumps(obj, default=str))
    return obj


class ParquetIOManager(dg.ConfigurableIOManager):
    pipeline: dg.ResourceDependency[PipelineResource]

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        name = context.asset_key.to_python_identifier()
        root = self.pipeline.data_root()
        if isinstance(obj, StageResult):
            atomic.write_parquet(obj.rejected, root.stage_rejects(name))
            atomic.write_text(json.dumps({**obj.stats.to_dict(), "rows_out": obj.kept.height,
                                          "rows_rejected": obj.rejected.height}, default=str),
                              root.stage_stats(name))
            obj = obj.kept
        if isinstance(obj, pl.DataFrame):
            atomic.write_parquet(obj, root.asset_values / f"{name}.parquet")
        elif isinstance(obj, dict):
            atomic.write_text(json.dumps(obj, default=str, indent=2), root.asset_values / f"{name}.json")
        else:
            raise TypeError(f"{name}: cannot store a {type(obj).__name__}; return a polars DataFrame or a dict")

    def load_input(self, context: dg.InputContext):
        name = context.asset_key.to_python_identifier()
        root = self.pipeline.data_root()
        parquet, js = root.asset_values / f"{name}.parquet", root.asset_values / f"{name}.json"
        if parquet.exists():
            return pl.read_parquet(parquet)
        if js.exists():
            return json.loads(js.read_text())
        raise FileNotFoundError(f"{name} has not been materialized under {root.storage}; materialize it first")
