"""The data root's layout: every path the pipeline reads or writes under it, named once.

    raw/                      inputs, any depth
    annotations/              human or crowd labels coming back
    finetune.yaml             settings (optional)
    erasure_requests.csv      right-to-erasure requests (optional)
    .pipeline/                intermediate asset values (assets/<name>/: a corpus asset as a sharded dataset,
                              shards.py; assets/<name>.json or .parquet: a small value), per-stage rejects
                              (rejects/<stage>/, a sharded dataset) and statistics, the parse cache,
                              cache/ (cleaned records, embeddings, the export check's counts, the stored split
                              and contamination answer, by content and settings), staging/ (exports and
                              models waiting for their checks), mlflow/ (the default MLflow tracking store)
    exports/                  splits, folds, rejects, review tasks, the data card, the approach comparison
    models/                   one adapter per task, registry.json, the comparison's models
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = "data"
DATA_DIR_ENV = "FINETUNE_DATA_DIR"


@dataclass(frozen=True)
class DataRoot:
    """A data root and the paths under it."""

    path: Path
    datasets_url: str | None = None  # storage.datasets_url: where sharded datasets live; None: under .pipeline/

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None) -> "DataRoot":
        """The argument, else $FINETUNE_DATA_DIR, else `data/`, as an absolute path."""
        return cls(Path(path or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).resolve())

    # ---- inputs
    @property
    def raw(self) -> Path:
        return self.path / "raw"

    @property
    def annotations(self) -> Path:
        """Label Studio JSON exports or CSV record_id,annotator,label."""
        return self.path / "annotations"

    @property
    def settings_file(self) -> Path:
        return self.path / "finetune.yaml"

    @property
    def erasure_requests(self) -> Path:
        return self.path / "erasure_requests.csv"

    # ---- the pipeline's own storage
    @property
    def storage(self) -> Path:
        """Intermediate asset values (Parquet/JSON), kept beside the data they come from."""
        return self.path / ".pipeline"

    @property
    def parse_cache(self) -> Path:
        """Parsed raw sources by content hash, so unchanged sources are not parsed again."""
        return self.storage / "parse_cache"

    @property
    def cleaning_cache(self) -> Path:
        """Cleaned outcome rows by unit key (cleaning/cache.py), so unchanged records are not cleaned again."""
        return self.storage / "cache" / "cleaned_corpus.parquet"

    @property
    def personal_data_check_cache(self) -> Path:
        """Per exported text (by sha256 key), what dataset_splits_no_personal_data found (cleaning/cache.py)."""
        return self.storage / "cache" / "personal_data_check.parquet"

    @property
    def result_cache(self) -> Path:
        """Whole results kept with the key of what decided them (incremental.ResultCache): the split of an
        unchanged corpus, the contamination check's answer for the rows it was asked about."""
        return self.storage / "cache" / "results"

    @property
    def embedding_cache(self) -> Path:
        """Sentence embeddings by text hash and model, one Parquet file per stage (embeddings.py)."""
        return self.storage / "cache" / "embeddings"

    @property
    def asset_values(self) -> Path:
        return self.storage / "assets"

    @property
    def tracking_store(self) -> Path:
        """The default MLflow store (finetune_pipeline/tracking.py): mlflow.db (SQLite) and artifacts/."""
        return self.storage / "mlflow"

    @property
    def settings_snapshots(self) -> Path:
        """The settings each run started with, one JSON file per run id."""
        return self.storage / "settings"

    def staged(self, published: Path) -> Path:
        """Where the candidate for a published path (an export, a model) is written first: it replaces the
        published one only after the blocking checks of the asset that made it have passed. The path is not
        resolved: exports/splits and models/<name> are links to their current version (versions.py), and
        their candidates stay at one place whichever version is current."""
        return self.storage / "staging" / Path(os.path.abspath(published)).relative_to(self.path)

    def _datasets(self, *parts: str) -> Path | str:
        if self.datasets_url:
            return "/".join([self.datasets_url.rstrip("/"), *parts])
        return self.storage.joinpath(*parts)

    def asset_dataset(self, name: str) -> Path | str:
        """Where a corpus asset's rows are stored as a sharded dataset (shards.py): .pipeline/assets/<name>/,
        or <storage.datasets_url>/assets/<name> (any fsspec URL, e.g. s3://bucket/run)."""
        return self._datasets("assets", name)

    def rejects_dataset(self, stage: str) -> Path | str:
        """Where a corpus stage's rejects are stored as a sharded dataset: .pipeline/rejects/<stage>/ (or under
        storage.datasets_url)."""
        return self._datasets("rejects", stage)

    def legacy_asset_value(self, name: str) -> Path:
        """The single Parquet file versions before sharded datasets stored an asset's rows in (still read)."""
        return self.asset_values / f"{name}.parquet"

    def stage_rejects(self, stage: str) -> Path:
        """The single Parquet file versions before sharded datasets stored a stage's rejects in (still read)."""
        return self.storage / "rejects" / f"{stage}.parquet"

    def stage_stats(self, stage: str) -> Path:
        return self.storage / "stats" / f"{stage}.json"

    # ---- exports
    @property
    def exports(self) -> Path:
        return self.path / "exports"

    @property
    def splits_export(self) -> Path:
        """A datasets.DatasetDict plus <split>.jsonl."""
        return self.exports / "splits"

    @property
    def folds(self) -> Path:
        return self.exports / "folds.parquet"

    @property
    def rejects_export(self) -> Path:
        return self.exports / "rejects.parquet"

    @property
    def report(self) -> Path:
        """The data card."""
        return self.exports / "report.md"

    @property
    def review(self) -> Path:
        """Label Studio import tasks and labeling config."""
        return self.exports / "review"

    def comparison_export(self, suffix: str) -> Path:
        """exports/approach_comparison.<suffix> (json, md, png)."""
        return self.exports / f"approach_comparison.{suffix}"

    # ---- models
    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def registry(self) -> Path:
        """Every task's adapter: models/registry.json."""
        return self.models / "registry.json"

    def adapter(self, name: str) -> Path:
        return self.models / name

    @property
    def comparison_models(self) -> Path:
        return self.models / "comparison"
