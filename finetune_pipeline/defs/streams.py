"""The Dagster side of the local streaming path (streaming.py): a streaming stage writes its kept rows and
rejects where the IO manager keeps them (defs/io.py's locations) and returns a StageResult of the committed
datasets; the checks get the input's record ids and provenance, not its rows."""

from contextlib import contextmanager

import polars as pl

from finetune_pipeline.defs.io import output_location, rejects_location
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.records import REJECTS_SCHEMA, StageResult
from finetune_pipeline.shards import DatasetWriter, ShardedDataset, open_dataset


@contextmanager
def writers(pipeline: PipelineResource, stage: str):
    """A streaming stage's kept-rows and rejects writers at the IO manager's locations: both committed when the
    block ends, both left out (the previous datasets stay) when it raises."""
    rows = pipeline.settings().execution.shard_rows
    with DatasetWriter(output_location(pipeline, stage), shard_rows=rows) as kept, \
            DatasetWriter(rejects_location(pipeline, stage), shard_rows=rows, schema=REJECTS_SCHEMA) as rejected:
        yield kept, rejected


def committed(pipeline: PipelineResource, stage: str, stats, kind=StageResult, **extra):
    """The StageResult of a streaming stage: its committed datasets (the IO manager writes nothing again)."""
    return kind(kept=open_dataset(output_location(pipeline, stage)),
                rejected=open_dataset(rejects_location(pipeline, stage)), stats=stats, **extra)


def frame_of(value) -> pl.DataFrame:
    return value.collect() if isinstance(value, ShardedDataset) else value


def identities(value) -> pl.DataFrame:
    """What the accounting check reads of a stage's input: each record's id and provenance."""
    if isinstance(value, ShardedDataset):
        return value.scan().select("record_id", "source_uri", "locator").collect()
    return value
