"""Experiment tracking with MLflow: training results, after training, become MLflow runs.

    Tracker.from_settings(settings.tracking, root)   -> a tracker (disabled: every call does nothing)
    tracker.log_training(result, ...)                -> TrackedRun: one trained model (the adapter)
    tracker.log_comparison(result, ...)              -> TrackedRun: the comparison, each approach a nested
                                                        run, each cross-validation fold nested under it
    tracker.register_adapter(adapter_dir, ...)       -> (TrackedRun, version): the published adapter's files
                                                        logged and registered as a model version

What a run holds: its settings as params (flattened: `lora.r`), the per-epoch history as metrics with
step = epoch, the test scores (`test_<metric>`), the model card and plots as artifacts, and tags naming
the data snapshot, the training key and the Dagster run. Nothing from the records themselves: no texts,
no annotator names. Files are logged as they are (safetensors, JSON, Markdown, PNG); nothing is pickled.

The default store is SQLite under the data root (`.pipeline/mlflow/mlflow.db`, artifacts in
`.pipeline/mlflow/artifacts/`); `tracking.tracking_uri` or $MLFLOW_TRACKING_URI send runs elsewhere.
Tracking never fails a training run: a store that cannot be reached or written is a warning and the
call returns None. MLflow is imported inside the functions that log (its import costs seconds). No
dagster import; `python -m finetune_pipeline.tracking ui-args` prints what `make mlflow` passes to the UI.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlparse

from finetune_pipeline.incremental import KEY_FILE
from finetune_pipeline.training.results import ComparisonResult, TrainingResult

if TYPE_CHECKING:
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.settings import TrackingSettings

URI_ENV = "MLFLOW_TRACKING_URI"
TAG = "finetune."  # our tags: finetune.asset, finetune.data_snapshot, finetune.training_key, ...
DAGSTER_RUN_TAG = "dagster.run_id"
PARENT_TAG = "mlflow.parentRunId"  # what makes a run nested in MLflow's UI
ADAPTER_ARTIFACTS = "adapter"
# files of an adapter folder that are not the adapter: the cache's key file repeats the settings and result
_NOT_ADAPTER = {KEY_FILE}
_MAX_PARAM = 6000  # MLflow's limit on a param value (characters)
UI_PORT = 5000  # `make mlflow` serves the local store's UI on 127.0.0.1:UI_PORT


class TrackingWarning(UserWarning):
    """Tracking failed (store unreachable or not writable); the training run went on without it."""


@dataclass(frozen=True)
class TrackedRun:
    """An MLflow run: its ids, the tracking URI it lives at and a link to it in the UI."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    ui_url: str

    def metadata(self) -> dict[str, str]:
        """What asset metadata shows of the run."""
        return {"mlflow_run_id": self.run_id, "mlflow_experiment_id": self.experiment_id,
                "mlflow_tracking_uri": self.tracking_uri, "mlflow_run_url": self.ui_url}


def local_store(root: DataRoot) -> tuple[str, str]:
    """(tracking URI, artifact location) of the default store under `root`."""
    store = root.tracking_store.resolve()
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def shown_uri(uri: str) -> str:
    """`uri` as logs and metadata show it: a user and password in it (http://user:secret@host) are masked."""
    parsed = urlparse(uri)
    if parsed.username is None and parsed.password is None:
        return uri
    host = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
    return parsed._replace(netloc=f"***@{host}").geturl()


def resolve_uri(settings: TrackingSettings, root: DataRoot) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): tracking.tracking_uri, else
    $MLFLOW_TRACKING_URI, else the local store. A SQLite file keeps its artifacts beside it (MLflow's own
    default is ./mlruns in whatever folder the run started from); a server decides for itself (None)."""
    uri = settings.tracking_uri or os.environ.get(URI_ENV)
    if not uri:
        return local_store(root)
    if uri.startswith("sqlite:///"):
        return uri, (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
    return uri, None


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: {"lora": {"r": 8}} -> {"lora.r": "8"}; lists as JSON."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:_MAX_PARAM]
    return flat


def training_key(folder: Path) -> str | None:
    """The training key a model folder was made under (incremental.remember's file; None: none stored)."""
    try:
        return json.loads((Path(folder) / KEY_FILE).read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return None


def comparison_arms(folder: Path, approaches: list[str], trained: TrainingResult,
                    trained_dir: Path) -> tuple[dict[str, TrainingResult], dict[str, Path]]:
    """Each approach's TrainingResult and model folder: from the comparison's folder (<approach>/metrics.json),
    else, for the approach lora_adapter trained and the comparison reused, that result and folder."""
    arms, dirs = {}, {}
    for approach in approaches:
        metrics = Path(folder) / approach / "metrics.json"
        if metrics.is_file():
            arms[approach], dirs[approach] = TrainingResult.from_json(metrics), metrics.parent
        elif approach == trained.approach:
            arms[approach], dirs[approach] = trained, Path(trained_dir)
    return arms, dirs


def _number(value) -> float | None:
    """A metric value (bools and non-numbers are not metrics)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def epoch_metrics(result: TrainingResult) -> list[tuple[str, float, int]]:
    """(key, value, epoch) for every number of every history row (train_loss, val_macro_f1, ...)."""
    rows = []
    for row in result.history or []:
        epoch = int(row.get("epoch", len(rows) + 1))
        rows += [(key, v, epoch) for key, value in row.items()
                 if key != "epoch" and (v := _number(value)) is not None]
    return rows


def result_metrics(result: TrainingResult) -> dict[str, float]:
    """A trained model's single-valued metrics: test scores, its baseline's, validation, cost."""
    out = {}
    for prefix, scores in (("test_", result.test), ("majority_baseline_", result.majority_baseline),
                           ("base_model_test_", result.base_model_test), ("validation_", result.validation)):
        out.update({f"{prefix}{k}": v for k, value in (scores or {}).items() if (v := _number(value)) is not None})
    for name in ("validation_best_macro_f1", "trainable_parameters", "total_parameters", "epochs_run",
                 "wall_time_s", "peak_memory_mb"):
        if (v := _number(getattr(result, name))) is not None:
            out[name] = v
    if result.train_tokens_per_s:
        out["train_tokens_per_s"] = float(sum(result.train_tokens_per_s) / len(result.train_tokens_per_s))
    return out


def result_params(result: TrainingResult) -> dict[str, str]:
    """A trained model's params: the settings it ran with (flattened) and what it is; no records' text."""
    params = flatten(result.settings or {}, "training.")
    described = {"approach": result.approach, "task": result.task, "base_model": result.base_model,
                 "labels": result.labels, "learning_rate": result.learning_rate, "C": result.C,
                 "embedding_dim": result.embedding_dim, "packing": result.packing, "device": result.device,
                 "processes": result.processes, "split_sizes": result.split_sizes, "sequences": result.sequences,
                 "lora_search": result.lora_search}
    params.update(flatten({k: v for k, v in described.items() if v is not None}))
    return params


def _warn(message: str) -> None:
    warnings.warn(message, TrackingWarning, stacklevel=3)


@dataclass
class Tracker:
    """Logs results to one MLflow experiment. `enabled` False: every call returns None, nothing is written."""

    enabled: bool
    tracking_uri: str = ""
    artifact_location: str | None = None
    experiment: str = "finetune-pipeline"
    registered_model: str = "lora_adapter"
    timeout_s: float = 5.0
    warn: Callable[[str], None] = field(default=_warn, repr=False)
    _client: object = field(default=None, repr=False)
    _experiment_id: str | None = field(default=None, repr=False)
    _open: list[str] = field(default_factory=list, repr=False)  # runs started and not ended yet

    @classmethod
    def from_settings(cls, settings: TrackingSettings, root: DataRoot, adapter_name: str = "lora_adapter",
                      warn: Callable[[str], None] | None = None) -> Tracker:
        uri, artifacts = resolve_uri(settings, root)
        return cls(enabled=settings.enabled, tracking_uri=uri, artifact_location=artifacts,
                   experiment=settings.experiment or root.path.resolve().name,
                   registered_model=settings.registered_model or adapter_name, timeout_s=settings.timeout_s,
                   warn=warn or _warn)

    # ---- the store

    def _reachable(self) -> str | None:
        """Why a tracking server cannot be reached within timeout_s (None: it can, or it is not a server)."""
        parsed = urlparse(self.tracking_uri)
        if parsed.scheme not in ("http", "https"):
            return None
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=self.timeout_s).close()
        except OSError as err:
            return f"{type(err).__name__}: {err}"
        return None

    def client(self):
        """The MLflow client and this tracker's experiment id (created on first use)."""
        if self._client is None:
            # a server that answers slowly must not hold training up for MLflow's default minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(self.timeout_s))))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            from mlflow import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            found = client.get_experiment_by_name(self.experiment)
            self._experiment_id = (found.experiment_id if found else
                                   client.create_experiment(self.experiment, artifact_location=self.artifact_location))
            self._client = client
        return self._client

    def _guarded(self, what: str, log):
        """Run `log()`; a failure is a warning naming the store and the fix, and None is returned."""
        if not self.enabled:
            return None
        problem = self._reachable()
        if problem is None:
            try:
                return log()
            except Exception as err:  # tracking must never fail training: any store error is reported
                problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                self._fail_open()
        self.warn(f"MLflow tracking at {shown_uri(self.tracking_uri)}: {what} not logged ({problem}); the run goes on without "
                  "it. Start the tracking server, or set tracking.tracking_uri (or $MLFLOW_TRACKING_URI) to one "
                  "that answers, or tracking.enabled: false in finetune.yaml")
        return None

    def _fail_open(self) -> None:
        """Mark the runs a failed call left open as FAILED (when the store still answers)."""
        for run_id in reversed(self._open):
            try:
                self._client.set_terminated(run_id, "FAILED")
            except Exception:  # the store that failed the call may fail this too: the warning says so
                break
        self._open.clear()

    def ui_url(self, run_id: str) -> str:
        """The run's page: on the tracking server, or on `make mlflow`'s UI for a local store."""
        parsed = urlparse(self.tracking_uri)
        base = shown_uri(self.tracking_uri).rstrip("/") if parsed.scheme in ("http", "https") else f"http://127.0.0.1:{UI_PORT}"
        return f"{base}/#/experiments/{self._experiment_id}/runs/{run_id}"

    def _tracked(self, run_id: str) -> TrackedRun:
        return TrackedRun(run_id, self._experiment_id, shown_uri(self.tracking_uri), self.ui_url(run_id))

    # ---- runs

    def _start(self, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        tags = {k: str(v) for k, v in tags.items() if v not in (None, "")}
        if parent:
            tags[PARENT_TAG] = parent
        run_id = self.client().create_run(self._experiment_id, run_name=name, tags=tags).info.run_id
        self._open.append(run_id)
        return run_id

    def _log(self, run_id: str, params: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
             steps: list[tuple[str, float, int]] = ()) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in (params or {}).items()]
        metrics = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()] + \
                  [Metric(k, v, now, step) for k, v, step in steps]
        client = self.client()
        for start in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            client.log_batch(run_id, params=params[start:start + 100])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def _artifacts(self, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            if path.is_file():
                self.client().log_artifact(run_id, str(path), artifact_path)

    def _end(self, run_id: str) -> None:
        self.client().set_terminated(run_id, "FINISHED")
        self._open.remove(run_id)

    def find(self, training_key: str, asset: str) -> TrackedRun | None:
        """The newest run `asset` logged under `training_key` (None: none, or tracking is off/unreachable)."""
        def search():
            runs = self.client().search_runs(
                [self._experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                filter_string=f"tags.`{TAG}training_key` = '{training_key}' and tags.`{TAG}asset` = '{asset}'")
            return self._tracked(runs[0].info.run_id) if runs else None
        return self._guarded(f"the search for {asset}'s run", search)

    def log_training(self, result: TrainingResult | dict, *, asset: str, model_dir: Path | None = None,
                     tags: dict[str, str] | None = None) -> TrackedRun | None:
        """One trained model as a run named `asset`: params, per-epoch and test metrics, and from `model_dir`
        its model card (README.md) and metrics.json as artifacts."""
        result = TrainingResult.from_dict(result)

        def log():
            run_id = self._start(asset, {**self._result_tags(result, asset), **(tags or {})})
            self._log(run_id, result_params(result), result_metrics(result), epoch_metrics(result))
            if model_dir is not None:
                self._artifacts(run_id, [Path(model_dir) / "README.md", Path(model_dir) / "metrics.json"])
            self._end(run_id)
            return self._tracked(run_id)
        return self._guarded(f"training run {asset}", log)

    @staticmethod
    def _result_tags(result: TrainingResult, asset: str) -> dict[str, str]:
        return {f"{TAG}asset": asset, f"{TAG}task": result.task, f"{TAG}approach": result.approach,
                f"{TAG}data_snapshot": result.data_snapshot, f"{TAG}nan_loss": result.nan_loss}

    def log_comparison(self, result: ComparisonResult | dict, *, asset: str, arms: dict[str, TrainingResult],
                       arm_dirs: dict[str, Path] | None = None, exports: list[Path] = (),
                       tags: dict[str, str] | None = None) -> TrackedRun | None:
        """The comparison as a parent run (its table, plot and JSON as artifacts), each approach a nested run
        (its row's scores; from `arms`, that approach's TrainingResult, its params and per-epoch metrics; its
        card from `arm_dirs`), and each cross-validation fold a run nested under its approach."""
        result = ComparisonResult.from_dict(result)

        def log():
            common = {f"{TAG}task": result.task, f"{TAG}data_snapshot": result.data_snapshot, **(tags or {})}
            parent = self._start(asset, {f"{TAG}asset": asset, **common})
            params = {"approaches": [r.approach for r in result.rows], "split_sizes": result.split_sizes,
                      "task": result.task}
            metrics = {f"majority_baseline_{k}": v for k, value in (result.majority_baseline or {}).items()
                       if (v := _number(value)) is not None}
            if (total := _number(result.total_wall_time_s)) is not None:
                metrics["total_wall_time_s"] = total
            cross = result.cross_validation
            if cross:
                params.update({"cv.folds": cross.folds, "cv.fold_sizes": cross.fold_sizes, "cv.metric": cross.metric})
                for versus in cross.lora_versus or []:
                    for key in ("mean_difference", "std_difference"):
                        if (v := _number(versus.get(key))) is not None:
                            metrics[f"cv_lora_vs_{versus['approach']}_{key}"] = v
            self._log(parent, flatten({k: v for k, v in params.items() if v is not None}), metrics)
            self._artifacts(parent, [Path(p) for p in exports])
            folds = {row["approach"]: row for row in (cross.rows or [])} if cross else {}
            for row in result.rows:
                self._log_arm(row, arms.get(row.approach), (arm_dirs or {}).get(row.approach),
                              folds.get(row.approach), cross, parent, common)
            self._end(parent)
            return self._tracked(parent)
        return self._guarded(f"comparison run {asset}", log)

    def _log_arm(self, row, trained: TrainingResult | None, folder: Path | None, fold_row: dict | None,
                 cross, parent: str, common: dict) -> None:
        arm = self._start(row.approach, {f"{TAG}asset": "approach_comparison_arm", f"{TAG}approach": row.approach,
                                         f"{TAG}nan_loss": row.nan_loss, **common}, parent=parent)
        metrics = {name: v for name in ("trainable_parameters", "total_parameters", "wall_time_s", "peak_memory_mb",
                                        "epochs_run") if (v := _number(getattr(row, name))) is not None}
        metrics.update({k: v for k, value in row.scores.items() if (v := _number(value)) is not None})
        params, steps = {"approach": row.approach}, []
        if trained is not None:
            params, steps = result_params(trained), epoch_metrics(trained)
        if fold_row is not None:
            for key in ("mean", "std"):
                if (v := _number(fold_row.get(key))) is not None:
                    metrics[f"cv_{cross.metric}_{key}"] = v
        self._log(arm, params, metrics, steps)
        if folder is not None:
            self._artifacts(arm, [folder / "README.md", folder / "metrics.json"])
        for i, score in enumerate((fold_row or {}).get("scores") or []):
            fold = self._start(f"{row.approach} fold {i + 1}", {f"{TAG}asset": "cross_validation_fold",
                                                                 f"{TAG}approach": row.approach, **common}, parent=arm)
            sizes = cross.fold_sizes or []
            self._log(fold, flatten({"approach": row.approach, "fold": i + 1, "folds": cross.folds,
                                     "fold_size": sizes[i] if i < len(sizes) else None, "metric": cross.metric}),
                      {cross.metric: v} if (v := _number(score)) is not None else {})
            self._end(fold)
        self._end(arm)

    # ---- the model registry

    def register_adapter(self, adapter_dir: Path, *, run: TrackedRun | None, dataset_version: str,
                         data_snapshot: str, adapter_version: str | None = None,
                         tags: dict[str, str] | None = None) -> tuple[TrackedRun, str] | None:
        """Log the published adapter's files (safetensors, configs, tokenizer, card) into `run` (its training
        run; None: a run of its own) and register them as a new version of `registered_model`, tagged with
        the dataset version, the data snapshot, the adapter's own version and `tags` (the Dagster run id).
        An `adapter_version` registered already (an unchanged candidate published again) is not registered
        twice. Returns (run, model version)."""
        adapter_dir = Path(adapter_dir)

        def register():
            from mlflow.exceptions import MlflowException

            client = self.client()
            if adapter_version and (known := self._registered(adapter_version)):
                return known
            run_id = run.run_id if run else self._start("published_adapter", {f"{TAG}asset": "published_adapter",
                                                                                 f"{TAG}data_snapshot": data_snapshot,
                                                                                 **(tags or {})})
            files = sorted(p for p in adapter_dir.iterdir() if p.is_file() and p.name not in _NOT_ADAPTER)
            self._artifacts(run_id, files, ADAPTER_ARTIFACTS)
            if run is None:
                self._end(run_id)
            try:
                client.create_registered_model(self.registered_model, description=(
                    "The pipeline's published LoRA adapters (safetensors), one version per publication."))
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            source = f"{client.get_run(run_id).info.artifact_uri}/{ADAPTER_ARTIFACTS}"
            version_tags = {"dataset_version": dataset_version, "data_snapshot": data_snapshot,
                            "adapter_version": adapter_version, **(tags or {})}
            version = client.create_model_version(self.registered_model, source, run_id=run_id,
                                                  tags={k: str(v) for k, v in version_tags.items() if v})
            return self._tracked(run_id), str(version.version)
        return self._guarded(f"model version of {self.registered_model}", register)


    def _registered(self, adapter_version: str) -> tuple[TrackedRun, str] | None:
        """The model version registered for `adapter_version`, when there is one."""
        try:
            found = self.client().search_model_versions(f"name = '{self.registered_model}'")
        except Exception:  # no registered model yet
            return None
        for version in found:
            if version.tags.get("adapter_version") == adapter_version:
                return self._tracked(version.run_id), str(version.version)
        return None


def ui_args(root: DataRoot, settings: TrackingSettings) -> list[str]:
    """`mlflow ui` arguments for the store `settings` name (a remote server has its own UI: nothing)."""
    uri, artifacts = resolve_uri(settings, root)
    if urlparse(uri).scheme in ("http", "https", "databricks"):
        raise SystemExit(f"tracking URI {uri} is a server: open its own UI")
    args = ["--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(UI_PORT)]
    return args + (["--default-artifact-root", artifacts] if artifacts else [])


def _main(argv: list[str]) -> int:
    """`python -m finetune_pipeline.tracking ui MLFLOW [DATA_DIR]`: run the `mlflow` executable MLFLOW's UI on
    the data root's store (what `make mlflow` does); `ui-args [DATA_DIR]` prints the arguments instead."""
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.settings import load_settings

    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in ("ui", "ui-args") or (command == "ui" and not rest):
        print("usage: python -m finetune_pipeline.tracking ui MLFLOW_EXECUTABLE [DATA_DIR] | ui-args [DATA_DIR]",
              file=sys.stderr)
        return 2
    executable, rest = (rest[0], rest[1:]) if command == "ui" else (None, rest)
    root = DataRoot.resolve(rest[0] if rest else None)
    args = ui_args(root, load_settings(root).tracking)
    if executable is None:
        print(" ".join(args))
        return 0
    root.tracking_store.mkdir(parents=True, exist_ok=True)
    os.execv(executable, [executable, "ui", *args])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
