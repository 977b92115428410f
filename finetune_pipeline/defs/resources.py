"""Resources: the data root, the settings a run uses, the Ray cluster of the heavy stages and MLflow tracking."""


import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_ray import LocalRay  # imports no ray: only a run with backend ray pays for it
from pydantic import Field, PrivateAttr

from finetune_pipeline import execution
from finetune_pipeline.allocator import set_mmap_threshold
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.incremental import ResultCache
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import CORPUS_STAGES
from finetune_pipeline.stored import stored_rejects
from finetune_pipeline.tasks import task_for
from finetune_pipeline.settings import Settings, SettingsError, load_settings
from finetune_pipeline.tracking import TrackedRun, Tracker


class PipelineResource(dg.ConfigurableResource):
    """The data root (default: $FINETUNE_DATA_DIR, else `data/`) and the pipeline's settings.

    Settings are read and validated once per run: the first step of a run snapshots them to
    `.pipeline/settings/<run id>.json`, and every later step of that run (each in its own process) reads
    the snapshot, so editing finetune.yaml mid-run changes nothing until the next run. Outside a run
    (sensors, tests) they are read once per resource instance.
    """

    data_dir: str | None = Field(
        None, description="Data root; default $FINETUNE_DATA_DIR, else data/.")
    settings_yaml: str | None = Field(
        None, description="Settings for this run only, as YAML merged over finetune.yaml section by section "
                          "(e.g. 'splits: {seed: 7}'). Validated like finetune.yaml; a bad field fails the run "
                          "with the field named.")

    _root: DataRoot | None = PrivateAttr(None)
    _settings: Settings | None = PrivateAttr(None)
    _settings_error: str | None = PrivateAttr(None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._root = DataRoot.resolve(self.data_dir)
        self._settings, self._settings_error = None, None
        try:
            self._settings = self._run_settings(context.run_id) if context.run_id else self._read_settings()
        except SettingsError as err:  # reported by the first step that asks (RayCluster must not fail on it)
            self._settings_error = str(err)
        if self._settings is not None:  # this step process gives large freed arrays back (allocator.py)
            set_mmap_threshold(self._settings.execution.malloc_mmap_threshold)

    def _base_root(self) -> DataRoot:
        return self._root or DataRoot.resolve(self.data_dir)

    def data_root(self) -> DataRoot:
        """The data root, its sharded datasets at storage.datasets_url when the settings set one."""
        if self._settings is None and self._settings_error is None:
            try:
                self._settings = self._read_settings()
            except SettingsError as err:  # raised by settings(), where a step asks for them
                self._settings_error = str(err)
        url = self._settings.storage.datasets_url if self._settings is not None else None
        return dataclasses.replace(self._base_root(), datasets_url=url) if url else self._base_root()

    def settings(self) -> Settings:
        """The validated settings; a bad finetune.yaml fails the step with the file and fields named."""
        if self._settings is None and self._settings_error is None:
            try:
                self._settings = self._read_settings()
            except SettingsError as err:
                self._settings_error = str(err)
        if self._settings_error is not None:
            raise dg.Failure(description=self._settings_error, allow_retries=False)
        return self._settings

    def _read_settings(self) -> Settings:
        settings = load_settings(self._base_root(), overrides=self.settings_yaml)
        task_for(settings)  # the kind checks what it needs (a SettingsError naming the setting)
        return settings

    def _run_settings(self, run_id: str) -> Settings:
        """The run's snapshot; the first step of the run reads finetune.yaml and writes it."""
        snapshot = self._base_root().settings_snapshots / f"{run_id}.json"
        if not snapshot.exists():
            # What was set, not every default: read back, the settings keep which fields were given explicitly
            # (an explicit sources.tabular.text_column is honoured, a default one may be recognised).
            _create_once(snapshot, self._read_settings().model_dump_json(indent=2, exclude_unset=True))
        return Settings.model_validate_json(snapshot.read_text(encoding="utf-8"))

    def cache_file(self, *paths: Path) -> Path | None:
        """The first of `paths` (a stage's cache files) with execution.incremental; without it None, and the
        files are deleted: a run from scratch leaves nothing an earlier run cached (an erased subject's text
        included) behind in .pipeline/cache/."""
        if self.settings().execution.incremental:
            return paths[0]
        for path in paths:
            path.unlink(missing_ok=True)
        return None

    def embedding_cache(self, stage: str) -> EmbeddingCache | None:
        """`stage`'s sentence-vector cache under .pipeline/cache/embeddings/; None without execution.incremental."""
        cache = EmbeddingCache(self.data_root().embedding_cache, stage)
        return cache if self.cache_file(cache.file) else None

    def result_cache(self, name: str) -> ResultCache | None:
        """A stored whole result under .pipeline/cache/results/; None without execution.incremental."""
        cache = ResultCache(self.data_root().result_cache, name)
        return cache if self.cache_file(cache.key_file, cache.frame_file) else None

    def stage_rejects(self, stage: str) -> pl.DataFrame:
        """A stage's rejects as stored by the IO manager (empty when none)."""
        return stored_rejects(self.data_root(), stage)

    def stage_stats(self, stage: str) -> dict:
        """A stage's statistics as stored by the IO manager (JSON), with rows_out and rows_rejected."""
        path = self.data_root().stage_stats(stage)
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


def _create_once(target: Path, text: str) -> None:
    """Write `target` whole unless it exists: of steps racing to create it, the first one wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.link(tmp, target)  # fails when another step got there first; never replaces
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


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


class ExperimentTracking(dg.ConfigurableResource):
    """MLflow tracking of the training assets (finetune_pipeline/tracking.py), as finetune.yaml's `tracking`
    section says: results are logged after training, the published adapter becomes a registered model
    version. A store that cannot be reached is a warning in the step's log, never a failed step.
    (dagster-mlflow offers only the older function-style resource; this one is a ConfigurableResource.)"""

    pipeline: PipelineResource

    def tracker(self, context) -> Tracker:
        """The run's tracker; its warnings go to the step's log."""
        settings = self.pipeline.settings()
        return Tracker.from_settings(settings.tracking, self.pipeline.data_root(), settings.training.adapter_name,
                                     warn=context.log.warning)

    @staticmethod
    def metadata(tracked: TrackedRun | None) -> dict:
        """The asset metadata linking the MLflow run (its id, tracking URI and page)."""
        if tracked is None:
            return {"mlflow_run": "not logged (tracking.enabled is false, or the store did not answer: see the "
                                  "step's warnings)"}
        return {"mlflow_run_id": tracked.run_id, "mlflow_experiment_id": tracked.experiment_id,
                "mlflow_tracking_uri": tracked.tracking_uri, "mlflow_run": dg.MetadataValue.url(tracked.ui_url)}
