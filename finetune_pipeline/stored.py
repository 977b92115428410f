"""What the pipeline stored of an asset or of a stage's rejects, read and written in one place.

A corpus asset (records.CORPUS_STAGES and dataset_splits) and every stage's rejects are sharded datasets
(shards.py) at `DataRoot.asset_dataset(name)` and `DataRoot.rejects_dataset(stage)`. Versions before them
stored one Parquet file (`.pipeline/assets/<name>.parquet`, `.pipeline/rejects/<stage>.parquet`); those are
still read, so a data root materialized by an earlier version keeps working until its stages run again
(writing a dataset removes the old file). This module imports no dagster: the IO manager, the CLI
(`explain`, the run summary) and the tests all read through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import fsspec
import polars as pl

from finetune_pipeline import shards
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import CORPUS_STAGES, empty_rejects
from finetune_pipeline.shards import Manifest, ShardedDataset

# The assets whose rows are stored as sharded datasets (the corpus as it passes the stages); other frames
# (the split assignment, group tables, review queues) are small and stay one Parquet file.
CORPUS_ASSETS = (*CORPUS_STAGES, "dataset_splits")


def with_datasets_url(root: DataRoot) -> DataRoot:
    """`root` with its datasets where its finetune.yaml's `storage.datasets_url` puts them, for readers outside
    a run (explain, the run summary); as it is when that is unset or the settings do not load."""
    from finetune_pipeline.settings import SettingsError, load_settings

    if root.datasets_url:
        return root
    try:
        url = load_settings(root).storage.datasets_url
    except SettingsError:
        return root
    return dataclasses.replace(root, datasets_url=url) if url else root


def same_location(a: str | Path, b: str | Path) -> bool:
    """Whether two dataset locations (paths or fsspec URLs) name the same place."""
    fs_a, path_a = fsspec.core.url_to_fs(str(a))
    fs_b, path_b = fsspec.core.url_to_fs(str(b))
    return fs_a.protocol == fs_b.protocol and path_a.rstrip("/") == path_b.rstrip("/")


def _dataset(location: str | Path) -> ShardedDataset | None:
    return shards.open_dataset(location) if shards.is_dataset(location) else None


def stored_dataset(root: DataRoot, name: str) -> ShardedDataset | None:
    """The asset's committed dataset (None when it has none: not materialized, or only the old single file)."""
    return _dataset(root.asset_dataset(name))


def _read(dataset: ShardedDataset | None, legacy: Path, columns: Iterable[str] | None) -> pl.DataFrame | None:
    if dataset is not None:
        scan = dataset.scan()
    elif legacy.exists():
        scan = pl.scan_parquet(legacy)
    else:
        return None
    if columns is not None:
        present = scan.collect_schema().names()
        scan = scan.select([c for c in columns if c in present])
    return scan.collect()


def stored_frame(root: DataRoot, name: str, columns: Iterable[str] | None = None) -> pl.DataFrame | None:
    """The asset's stored rows (the dataset, else the old `<name>.parquet`), only `columns` where given (those
    of them it has); None when the asset has not been materialized."""
    return _read(stored_dataset(root, name), root.legacy_asset_value(name), columns)


def stored_rejects(root: DataRoot, stage: str) -> pl.DataFrame:
    """The stage's stored rejects (the dataset, else the old `rejects/<stage>.parquet`); empty when none."""
    found = _read(_dataset(root.rejects_dataset(stage)), root.stage_rejects(stage), None)
    return empty_rejects() if found is None else found


def has_stored(root: DataRoot, name: str) -> bool:
    return stored_dataset(root, name) is not None or root.legacy_asset_value(name).exists()


def store_dataset(value: pl.DataFrame | ShardedDataset, location: str | Path, legacy: Path, *,
                  shard_rows: int = shards.DEFAULT_SHARD_ROWS) -> Manifest:
    """`value` as the dataset at `location`, and the old single file `legacy` removed. A ShardedDataset that
    is already committed at `location` (a streaming stage wrote it there) is kept as it is; one elsewhere is
    copied shard by shard (never whole in memory)."""
    if isinstance(value, ShardedDataset):
        if same_location(value.location, location):
            manifest = value.manifest
        else:
            manifest = shards.write_dataset(value.iter_shards(), location, shard_rows=shard_rows,
                                            schema=value.schema)
    elif isinstance(value, pl.DataFrame):
        manifest = shards.write_dataset(value, location, shard_rows=shard_rows)
    else:
        raise TypeError(f"{location}: cannot store a {type(value).__name__} as a dataset; give a polars DataFrame "
                        "or a ShardedDataset")
    legacy.unlink(missing_ok=True)
    return manifest


def store_frame(root: DataRoot, name: str, value: pl.DataFrame | ShardedDataset, *,
                shard_rows: int = shards.DEFAULT_SHARD_ROWS) -> Manifest:
    return store_dataset(value, root.asset_dataset(name), root.legacy_asset_value(name), shard_rows=shard_rows)


def store_rejects(root: DataRoot, stage: str, value: pl.DataFrame | ShardedDataset, *,
                  shard_rows: int = shards.DEFAULT_SHARD_ROWS) -> Manifest:
    return store_dataset(value, root.rejects_dataset(stage), root.stage_rejects(stage), shard_rows=shard_rows)


def migrate_legacy(root: DataRoot, name: str, *, shard_rows: int = shards.DEFAULT_SHARD_ROWS) -> ShardedDataset:
    """The asset's dataset, written from the old single file when only that exists (a root from an earlier
    version, read by a stage that takes a dataset). The old file is left in place: another step of the
    run may be reading it; the next materialization removes it."""
    found = stored_dataset(root, name)
    if found is not None:
        return found
    legacy = root.legacy_asset_value(name)
    if not legacy.exists():
        raise shards.DatasetMissing(f"{name}: nothing stored at {root.asset_dataset(name)}; materialize {name} first")
    shards.write_dataset(pl.read_parquet(legacy), root.asset_dataset(name), shard_rows=shard_rows)
    return shards.open_dataset(root.asset_dataset(name))


def remove_stored(root: DataRoot, name: str) -> None:
    """The asset's stored rows gone, in either form (privacy.keep_raw_text: none removes raw_corpus's)."""
    location = str(root.asset_dataset(name))
    fs, path = fsspec.core.url_to_fs(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    root.legacy_asset_value(name).unlink(missing_ok=True)


def rewrite_stored(root: DataRoot, name: str, keep: Callable[[pl.DataFrame], pl.DataFrame], *,
                   shard_rows: int = shards.DEFAULT_SHARD_ROWS) -> int:
    """Rewrite the asset's stored rows through `keep` (a filter), shard by shard; returns the rows removed
    (0, and nothing rewritten, when `keep` removes none or nothing is stored)."""
    dataset = stored_dataset(root, name)
    if dataset is None:
        legacy = root.legacy_asset_value(name)
        if not legacy.exists():
            return 0
        frame = pl.read_parquet(legacy)
        kept = keep(frame)
        if kept.height == frame.height:
            return 0
        store_frame(root, name, kept, shard_rows=shard_rows)
        return frame.height - kept.height
    removed = sum(shard.height - keep(shard).height for shard in dataset.iter_shards())
    if removed:
        shards.write_dataset((keep(shard) for shard in dataset.iter_shards()), dataset.location,
                             shard_rows=shard_rows, schema=dataset.schema)
    return removed

