"""Resources: where the data root is, and the settings read from its finetune.yaml."""


import contextlib
import json
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_ray import LocalRay  # imports no ray: only a run with backend ray pays for it
from pydantic import Field

from finetune_pipeline import execution

from finetune_pipeline.records import CORPUS_STAGES, empty_rejects
from finetune_pipeline.settings import Settings, SettingsError, load_settings, resolve_data_dir


class PipelineResource(dg.ConfigurableResource):
    """The data root (default: $FINETUNE_DATA_DIR, else `data/`) and the pipeline's settings."""

    data_dir: str | None = Field(
        None, description="Data root; default $FINETUNE_DATA_DIR, else data/.")
    settings_yaml: str | None = Field(
        None, description="Settings for this run only, as YAML merged over finetune.yaml section by section "
                          "(e.g. 'splits: {seed: 7}'). Validated like finetune.yaml; a bad field fails the run "
                          "with the field named.")

    def root(self) -> Path:
        return resolve_data_dir(self.data_dir)

    def settings(self) -> Settings:
        """The validated settings; a bad finetune.yaml fails the step with the file and fields named."""
        try:
            return load_settings(self.root(), overrides=self.settings_yaml)
        except SettingsError as err:
            raise dg.Failure(description=str(err), allow_retries=False) from None

    def storage_dir(self) -> Path:
        """Intermediate asset values (Parquet/JSON), kept beside the data they come from."""
        return self.root() / ".pipeline"

    def parse_cache_dir(self) -> Path:
        """Parsed raw sources by content hash, so unchanged sources are not parsed again."""
        return self.storage_dir() / "parse_cache"

    def exports_dir(self) -> Path:
        return self.root() / "exports"

    def annotations_dir(self) -> Path:
        """Human or crowd labels coming back: Label Studio JSON exports or CSV record_id,annotator,label."""
        return self.root() / "annotations"

    def models_dir(self) -> Path:
        return self.root() / "models"

    def stage_rejects(self, stage: str) -> pl.DataFrame:
        path = self.storage_dir() / "rejects" / f"{stage}.parquet"
        return pl.read_parquet(path) if path.exists() else empty_rejects()

    def stage_stats(self, stage: str) -> dict:
        path = self.storage_dir() / "stats" / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def stage_counts(self) -> list[dict]:
        """Rows in/out/rejected per corpus stage, counting originals only (augmented rows are `augmented`).
        Stages not materialized yet are left out."""
        counts = []
        for stage in CORPUS_STAGES:
            stats = self.stage_stats(stage)
            if not stats:
                continue
            added = stats.get("augmented_rows", 0)
            originals_out = stats["rows_out"] - added
            counts.append({"stage": stage, "rows_in": originals_out + stats["rows_rejected"],
                           "rows_out": originals_out, "rows_rejected": stats["rows_rejected"], "augmented": added})
        return counts


class RayCluster(LocalRay):
    """dagster-ray's Ray resource, for the heavy stages when `execution.backend` is `ray`: connects to
    `execution.ray_address` (else $RAY_ADDRESS) or starts a local cluster for the run, and ships this
    package to the workers. With the local backend it does nothing (no `import ray`)."""

    pipeline: PipelineResource

    @property
    def name(self) -> str:
        return f"Ray cluster at {self.ray_address}" if self.ray_address else "a local Ray cluster"

    @property
    def ray_address(self) -> str | None:  # type: ignore[override]
        return execution.ray_address(self.pipeline.settings().execution)

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        try:
            backend = self.pipeline.settings().execution.backend
        except dg.Failure:  # a bad finetune.yaml: the first step fails on it with the fields named
            backend = "local"
        if backend != "ray":
            yield self
            return
        with super().yield_for_execution(context) as resource:
            yield resource

    def connect(self, context):
        self._context = execution.connect(self.pipeline.settings().execution)
        return self._context
