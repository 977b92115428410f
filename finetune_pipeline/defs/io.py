"""A Parquet/JSON IO manager: no pickles. Corpus frames are Parquet files; a stage's rejects and
figures go beside them, so `rejected_records` and the data card can read every stage's."""


import json

import dagster as dg
import polars as pl

from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.exports import atomic_path
from finetune_pipeline.records import StageResult


class ParquetIOManager(dg.ConfigurableIOManager):
    pipeline: dg.ResourceDependency[PipelineResource]

    def _path(self, name: str, suffix: str):
        return self.pipeline.storage_dir() / "assets" / f"{name}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        name = context.asset_key.to_python_identifier()
        base = self.pipeline.storage_dir()
        if isinstance(obj, StageResult):
            with atomic_path(base / "rejects" / f"{name}.parquet") as tmp:
                obj.rejected.write_parquet(tmp)
            with atomic_path(base / "stats" / f"{name}.json") as tmp:
                tmp.write_text(json.dumps({**obj.stats, "rows_out": obj.kept.height,
                                           "rows_rejected": obj.rejected.height}, default=str))
            obj = obj.kept
        if isinstance(obj, pl.DataFrame):
            with atomic_path(self._path(name, ".parquet")) as tmp:
                obj.write_parquet(tmp)
        elif isinstance(obj, dict):
            with atomic_path(self._path(name, ".json")) as tmp:
                tmp.write_text(json.dumps(obj, default=str, indent=2))
        else:
            raise TypeError(f"{name}: cannot store a {type(obj).__name__}; return a polars DataFrame or a dict")

    def load_input(self, context: dg.InputContext):
        name = context.asset_key.to_python_identifier()
        parquet, js = self._path(name, ".parquet"), self._path(name, ".json")
        if parquet.exists():
            return pl.read_parquet(parquet)
        if js.exists():
            return json.loads(js.read_text())
        raise FileNotFoundError(f"{name} has not been materialized under {self.pipeline.storage_dir()}; "
                                f"materialize it first")
