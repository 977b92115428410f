"""The IO manager: Parquet and JSON, no pickles; the corpus as sharded datasets between stages.

What it stores, by what an asset returns:
- a `StageResult` (every corpus stage): the kept rows as a sharded dataset (shards.py) at
  `DataRoot.asset_dataset(name)` (.pipeline/assets/<name>/), the rejects as one at
  `DataRoot.rejects_dataset(name)` (.pipeline/rejects/<name>/), the statistics as JSON beside them
  (.pipeline/stats/<name>.json), so `rejected_records` and the data card read every stage's;
- a polars frame of a corpus asset (stored.CORPUS_ASSETS: the corpus stages and dataset_splits), or any
  `ShardedDataset`: a sharded dataset at `asset_dataset(name)`;
- any other frame (the split assignment, a review queue): one Parquet file, .pipeline/assets/<name>.parquet;
- a dict: JSON, .pipeline/assets/<name>.json.
Shards hold `execution.shard_rows` rows. Each dataset's manifest (rows, shards, bytes, content digest) is
the output's metadata. Writing a dataset removes the single file an earlier version stored for the asset.

The streaming contract: a stage that writes its own output shard by shard returns a StageResult whose
`kept` (and/or `rejected`) is already a `ShardedDataset` committed at the asset's location
(`output_location(pipeline, name)` / `rejects_location(pipeline, name)`; e.g. with
`shards.DatasetWriter(output_location(pipeline, "cleaned_corpus"))`). The IO manager then writes nothing
for it and only records its statistics and manifest; a dataset committed anywhere else is copied shard by
shard to the asset's location.

What a downstream asset gets, by the annotation of its parameter: `ShardedDataset`: the handle (nothing
read; an asset stored by an earlier version as one file is first rewritten as a dataset); `pl.LazyFrame`:
a lazy scan; anything else (`pl.DataFrame`, none): the rows collected, as every stage took them before.
"""


import json

import dagster as dg
import polars as pl

from finetune_pipeline import atomic, stored
from finetune_pipeline.defs.metadata import dataset_metadata
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.records import StageResult
from finetune_pipeline.shards import ShardedDataset


def output_location(pipeline: PipelineResource, name: str):
    """Where the IO manager stores asset `name`'s rows: a streaming stage writes its dataset there."""
    return pipeline.data_root().asset_dataset(name)


def rejects_location(pipeline: PipelineResource, stage: str):
    """Where the IO manager stores `stage`'s rejects: a streaming stage writes its rejects dataset there."""
    return pipeline.data_root().rejects_dataset(stage)


def stored_value(obj):
    """What a check reads back of `obj`: a StageResult's kept rows, a frame or a dataset as is (Parquet keeps
    its types), a dict as its JSON."""
    if isinstance(obj, StageResult):
        return obj.kept
    if isinstance(obj, dict):
        return json.loads(json.dumps(obj, default=str))
    return obj


def _wanted_type(context: dg.InputContext):
    """The Python type the downstream parameter is annotated with (None when it is not annotated)."""
    dagster_type = context.dagster_type
    return getattr(dagster_type, "typing_type", None) if dagster_type is not None else None


class ParquetIOManager(dg.ConfigurableIOManager):
    pipeline: dg.ResourceDependency[PipelineResource]

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        name = context.asset_key.to_python_identifier()
        root = self.pipeline.data_root()
        shard_rows = self.pipeline.settings().execution.shard_rows
        if isinstance(obj, StageResult):
            rejected = stored.store_rejects(root, name, obj.rejected, shard_rows=shard_rows)
            atomic.write_text(json.dumps({**obj.stats.to_dict(), "rows_out": obj.kept.height,
                                          "rows_rejected": rejected.rows}, default=str),
                              root.stage_stats(name))
            context.add_output_metadata(dataset_metadata(rejected, prefix="rejects_dataset_"))
            obj = obj.kept
            if isinstance(obj, (pl.DataFrame, ShardedDataset)):
                context.add_output_metadata(dataset_metadata(stored.store_frame(root, name, obj,
                                                                                shard_rows=shard_rows)))
                return
        if isinstance(obj, ShardedDataset) or (isinstance(obj, pl.DataFrame) and name in stored.CORPUS_ASSETS):
            context.add_output_metadata(dataset_metadata(stored.store_frame(root, name, obj, shard_rows=shard_rows)))
        elif isinstance(obj, pl.DataFrame):
            atomic.write_parquet(obj, root.asset_values / f"{name}.parquet")
        elif isinstance(obj, dict):
            atomic.write_text(json.dumps(obj, default=str, indent=2), root.asset_values / f"{name}.json")
        else:
            raise TypeError(f"{name}: cannot store a {type(obj).__name__}; return a polars DataFrame, a "
                            "ShardedDataset, a StageResult or a dict")

    def load_input(self, context: dg.InputContext):
        name = context.asset_key.to_python_identifier()
        root = self.pipeline.data_root()
        wanted = _wanted_type(context)
        if isinstance(wanted, type) and issubclass(wanted, ShardedDataset):
            if stored.has_stored(root, name):
                return stored.migrate_legacy(root, name, shard_rows=self.pipeline.settings().execution.shard_rows)
        elif (dataset := stored.stored_dataset(root, name)) is not None:
            return dataset.scan() if wanted is pl.LazyFrame else dataset.collect()
        parquet, js = root.legacy_asset_value(name), root.asset_values / f"{name}.json"
        if parquet.exists():
            return pl.scan_parquet(parquet) if wanted is pl.LazyFrame else pl.read_parquet(parquet)
        if js.exists():
            return json.loads(js.read_text())
        raise FileNotFoundError(f"{name} has not been materialized under {root.storage}; materialize it first")
