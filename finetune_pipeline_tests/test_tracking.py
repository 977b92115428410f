"""MLflow tracking (finetune_pipeline/tracking.py) against a real MLflow SQLite store in a temporary folder:
runs with params, per-epoch metrics and artifacts; the comparison with its approaches and folds nested;
the published adapter registered as model versions tagged with their dataset version; tracking off writes
nothing; a store that cannot be reached is a warning, never a failure."""

import socket
from pathlib import Path

import pytest

from finetune_pipeline.layout import DataRoot
from finetune_pipeline.settings import TrackingSettings
from finetune_pipeline.tracking import PARENT_TAG, Tracker, TrackingWarning, flatten, resolve_uri, shown_uri
from finetune_pipeline.training.results import ComparisonResult, TrainingResult


@pytest.fixture(autouse=True)
def _no_ambient_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's own default would put artifacts in ./mlruns: nothing may land here


def _result(snapshot="snap1", epochs=3, accuracy=0.8) -> TrainingResult:
    return TrainingResult(
        approach="lora", task="classification", base_model="tiny", labels=["a", "b"],
        test={"accuracy": accuracy, "macro_f1": accuracy - 0.05}, majority_baseline={"accuracy": 0.5, "macro_f1": 0.33},
        history=[{"epoch": e, "train_loss": 1.0 / e, "train_step_losses": [1.0, 0.5], "val_macro_f1": 0.5 + e / 10}
                 for e in range(1, epochs + 1)],
        epochs_run=epochs, trainable_parameters=1234, wall_time_s=2.5, data_snapshot=snapshot,
        settings={"epochs": epochs, "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}})


def _adapter_dir(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(weights)
    (path / "adapter_config.json").write_text('{"r": 8}')
    (path / "README.md").write_text("# card\n")
    (path / "training_key.json").write_text('{"key": "k"}')
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its schema costs seconds): each test its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _tracker(tmp_path: Path, **settings) -> Tracker:
    root = DataRoot(tmp_path / "data")
    root.path.mkdir(exist_ok=True)
    return Tracker.from_settings(TrackingSettings(**settings), root)


def _shared(tmp_path: Path, store: str, **settings) -> Tracker:
    """A tracker on the module's store, in an experiment (and registered model) named after this test."""
    name = tmp_path.name
    return _tracker(tmp_path, tracking_uri=store, experiment=name, registered_model=f"{name}_adapter", **settings)


def _client(tracker: Tracker):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracker.tracking_uri, registry_uri=tracker.tracking_uri)


def test_default_store_is_sqlite_under_the_data_root_and_settings_or_env_move_it(tmp_path, monkeypatch):
    root = DataRoot(tmp_path / "data")
    uri, artifacts = resolve_uri(TrackingSettings(), root)
    assert uri == f"sqlite:///{(tmp_path / 'data' / '.pipeline' / 'mlflow' / 'mlflow.db').resolve()}"
    assert artifacts == (tmp_path / "data" / ".pipeline" / "mlflow" / "artifacts").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker.invalid:5000")
    assert resolve_uri(TrackingSettings(), root) == ("http://tracker.invalid:5000", None)
    elsewhere = tmp_path / "elsewhere" / "runs.db"
    assert resolve_uri(TrackingSettings(tracking_uri=f"sqlite:///{elsewhere}"), root) == (
        f"sqlite:///{elsewhere}", (tmp_path / "elsewhere" / "artifacts").resolve().as_uri())  # not ./mlruns


def test_flatten_names_nested_settings_with_dots():
    assert flatten({"epochs": 3, "lora": {"r": 8, "target_modules": ["q", "v"]}, "name": "x"}) == {
        "epochs": "3", "lora.r": "8", "lora.target_modules": '["q", "v"]', "name": "x"}


def test_default_store_is_created_under_the_data_root(tmp_path):
    tracker = _tracker(tmp_path)
    assert tracker.log_training(_result(), asset="lora_adapter") is not None
    assert (tmp_path / "data" / ".pipeline" / "mlflow" / "mlflow.db").is_file()


def test_training_run_logs_settings_epoch_metrics_test_scores_and_the_card(tmp_path, store):
    tracker = _shared(tmp_path, store)
    model = _adapter_dir(tmp_path / "model", b"weights")
    (model / "metrics.json").write_text(_result().to_json())
    tracked = tracker.log_training(_result(), asset="lora_adapter", model_dir=model, tags={"dagster.run_id": "r-1"})
    assert tracked is not None
    client = _client(tracker)
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lora_adapter"
    assert run.data.params["training.lora.r"] == "8" and run.data.params["approach"] == "lora"
    assert run.data.params["training.lora.target_modules"] == '["query", "value"]'
    assert run.data.tags["finetune.data_snapshot"] == "snap1" and run.data.tags["dagster.run_id"] == "r-1"
    assert run.data.metrics["test_accuracy"] == pytest.approx(0.8)
    assert run.data.metrics["majority_baseline_accuracy"] == pytest.approx(0.5)
    history = client.get_metric_history(tracked.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert "train_step_losses" not in run.data.metrics  # lists are not epoch metrics
    assert sorted(a.path for a in client.list_artifacts(tracked.run_id)) == ["README.md", "metrics.json"]
    assert tracker.find("nokey", "lora_adapter") is None


def test_comparison_logs_each_approach_and_each_fold_as_nested_runs(tmp_path, store):
    tracker = _shared(tmp_path, store)
    comparison = ComparisonResult.from_dict({
        "task": "classification", "data_snapshot": "snap1", "split_sizes": {"train": 10, "test": 4},
        "rows": [{"approach": "lora", "trainable_parameters": 10, "epochs_run": 3, "test_accuracy": 0.8},
                 {"approach": "feature", "trainable_parameters": 5, "epochs_run": 1, "test_accuracy": 0.6}],
        "cross_validation": {"folds": 2, "fold_sizes": [5, 5], "metric": "macro_f1", "higher_is_better": True,
                             "rows": [{"approach": "lora", "mean": 0.7, "std": 0.1, "scores": [0.6, 0.8]},
                                      {"approach": "feature", "mean": 0.5, "std": 0.0, "scores": [0.5, 0.5]}],
                             "lora_versus": [{"approach": "feature", "mean_difference": 0.2, "std_difference": 0.1}]}})
    plot = tmp_path / "approach_comparison.png"
    plot.write_bytes(b"\x89PNG")
    parent = tracker.log_comparison(comparison, asset="approach_comparison", arms={"lora": _result()},
                                    exports=[plot], tags={"dagster.run_id": "r-1"})
    client = _client(tracker)
    runs = client.search_runs([parent.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"approach_comparison", "lora", "feature", "lora fold 1", "lora fold 2",
                            "feature fold 1", "feature fold 2"}
    assert by_name["lora"].data.tags[PARENT_TAG] == parent.run_id
    assert by_name["lora fold 2"].data.tags[PARENT_TAG] == by_name["lora"].info.run_id
    assert by_name["lora fold 2"].data.metrics["macro_f1"] == pytest.approx(0.8)
    assert by_name["lora fold 2"].data.params["fold_size"] == "5"
    assert by_name["lora"].data.metrics["cv_macro_f1_mean"] == pytest.approx(0.7)
    assert by_name["lora"].data.params["training.lora.r"] == "8"  # the arm's result: its settings and epochs
    assert len(client.get_metric_history(by_name["lora"].info.run_id, "val_macro_f1")) == 3
    assert by_name["feature"].data.metrics["test_accuracy"] == pytest.approx(0.6)
    assert by_name["approach_comparison"].data.metrics["cv_lora_vs_feature_mean_difference"] == pytest.approx(0.2)
    assert [a.path for a in client.list_artifacts(parent.run_id)] == ["approach_comparison.png"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_each_publication_is_a_model_version_tagged_with_its_dataset_version(tmp_path, store):
    tracker = _shared(tmp_path, store)
    versions = []
    for n, weights in enumerate((b"first", b"second"), start=1):
        trained = tracker.log_training(_result(snapshot=f"snap{n}"), asset="lora_adapter",
                                       tags={"finetune.training_key": f"key{n}"})
        assert tracker.find(f"key{n}", "lora_adapter") == trained  # the published adapter finds its training run
        adapter = _adapter_dir(tmp_path / f"adapter{n}", weights)
        run, version = tracker.register_adapter(adapter, run=trained, dataset_version=f"v{n}",
                                                data_snapshot=f"snap{n}", tags={"dagster.run_id": f"run-{n}"})
        assert run == trained
        versions.append(version)
    assert versions == ["1", "2"]
    client = _client(tracker)
    for n, version in enumerate(versions, start=1):
        mv = client.get_model_version(tracker.registered_model, version)
        assert mv.tags == {"dataset_version": f"v{n}", "data_snapshot": f"snap{n}", "dagster.run_id": f"run-{n}"}
        files = sorted(a.path for a in client.list_artifacts(mv.run_id, "adapter"))
        # the adapter's files as they are (no pickle, no pyfunc flavour); the cache's key file stays out
        assert files == ["adapter/README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
        local = client.download_artifacts(mv.run_id, "adapter/adapter_model.safetensors", str(tmp_path / f"dl{n}"))
        assert Path(local).read_bytes() == (b"first", b"second")[n - 1]
    assert not list(Path(store.removeprefix("sqlite:///")).parent.rglob("*.pkl"))
    assert not (tmp_path / "mlruns").exists()  # the artifacts lie beside the SQLite file


def test_tracking_disabled_writes_nothing(tmp_path):
    tracker = _tracker(tmp_path, enabled=False)
    adapter = _adapter_dir(tmp_path / "adapter", b"w")
    assert tracker.log_training(_result(), asset="lora_adapter") is None
    assert tracker.register_adapter(adapter, run=None, dataset_version="v1", data_snapshot="s") is None
    assert tracker.find("key", "lora_adapter") is None
    assert list((tmp_path / "data").iterdir()) == []


def test_unreachable_server_is_a_warning_and_the_run_goes_on(tmp_path):
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    tracker = _tracker(tmp_path, tracking_uri=f"http://127.0.0.1:{port}", timeout_s=1)
    with pytest.warns(TrackingWarning, match=rf"127.0.0.1:{port}.*not logged.*tracking.enabled: false"):
        assert tracker.log_training(_result(), asset="lora_adapter") is None
    said = []
    tracker.warn = said.append  # the Dagster resource passes context.log.warning
    assert tracker.register_adapter(_adapter_dir(tmp_path / "a", b"w"), run=None, dataset_version="v",
                                    data_snapshot="s") is None
    assert len(said) == 1 and "model version of lora_adapter not logged" in said[0]


def test_credentials_in_a_tracking_uri_are_never_shown(tmp_path):
    assert shown_uri("https://alice:s3cret@mlflow.example.com:8443/") == "https://***@mlflow.example.com:8443/"
    assert shown_uri("sqlite:////data/.pipeline/mlflow/mlflow.db") == "sqlite:////data/.pipeline/mlflow/mlflow.db"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    said = []
    tracker = _tracker(tmp_path, tracking_uri=f"http://alice:s3cret@127.0.0.1:{port}", timeout_s=1)
    tracker.warn = said.append
    assert tracker.log_training(_result(), asset="lora_adapter") is None
    assert len(said) == 1 and "s3cret" not in said[0] and "alice" not in said[0] and f"127.0.0.1:{port}" in said[0]


def test_a_run_left_open_by_a_failing_call_is_marked_failed(tmp_path, store):
    tracker = _shared(tmp_path, store)
    bad = _result()
    bad.history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 1, "train_loss": 0.4}]  # one key, step twice: fine
    bad.settings = {"x": object()}  # flattened with str(): fine too
    said = []
    tracker.warn = said.append
    assert tracker.log_training(bad, asset="lora_adapter") is not None and said == []
    original = tracker._artifacts

    def broken(*args, **kwargs):
        raise OSError("disk full")
    tracker._artifacts = broken
    assert tracker.log_training(_result(), asset="lora_adapter", model_dir=tmp_path) is None
    assert "disk full" in said[0]
    tracker._artifacts = original
    statuses = sorted(r.info.status for r in _client(tracker).search_runs([tracker._experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]


def test_a_store_that_cannot_be_written_is_a_warning(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    tracker = _tracker(tmp_path, tracking_uri=f"sqlite:///{blocked}/mlflow.db")
    with pytest.warns(TrackingWarning, match="not logged"):
        assert tracker.log_training(_result(), asset="lora_adapter") is None


def test_the_end_to_end_run_is_tracked_and_its_assets_link_the_runs(sample_run):
    """The session's real run (no new one): the adapter's run, the comparison with its approaches and folds
    nested, the published adapter as model version 1 tagged with its dataset version and Dagster run, and
    the asset metadata naming those runs."""
    import dagster as dg
    from mlflow import MlflowClient

    from finetune_pipeline.settings import load_settings
    from finetune_pipeline.training import registry
    from finetune_pipeline_tests.conftest import SAMPLE_RUN_FOLDS

    root, home = DataRoot(sample_run[0]), sample_run[1]
    settings = load_settings(root)
    tracker = Tracker.from_settings(settings.tracking, root, settings.training.adapter_name)
    assert tracker.tracking_uri.startswith("sqlite:///") and (root.tracking_store / "mlflow.db").is_file()
    client = MlflowClient(tracker.tracking_uri, tracker.tracking_uri)
    experiment = client.get_experiment_by_name(root.path.name)
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    named = {}
    for run in runs.values():
        named.setdefault(run.info.run_name, []).append(run)
    [adapter], [comparison] = named["lora_adapter"], named["approach_comparison"]
    arms = [r for r in runs.values() if r.data.tags.get(PARENT_TAG) == comparison.info.run_id]
    assert sorted(r.info.run_name for r in arms) == sorted(settings.training.compare)
    for arm in arms:
        folds = [r for r in runs.values() if r.data.tags.get(PARENT_TAG) == arm.info.run_id]
        assert len(folds) == SAMPLE_RUN_FOLDS and all(f.data.metrics for f in folds)
    assert len(client.get_metric_history(adapter.info.run_id, "train_loss")) == adapter.data.metrics["epochs_run"]
    entry = registry.get(root.models, settings.training.adapter_name)
    [version] = client.search_model_versions(f"name = '{settings.training.adapter_name}'")
    assert version.run_id == adapter.info.run_id
    assert version.tags["dataset_version"] == entry["dataset_version"] != ""
    assert version.tags["data_snapshot"] == adapter.data.tags["finetune.data_snapshot"] == entry["data_snapshot"]
    instance = dg.DagsterInstance.from_config(str(home))
    for asset, run in (("lora_adapter", adapter), ("approach_comparison", comparison), ("published_adapter", adapter)):
        metadata = instance.get_latest_materialization_event(dg.AssetKey(asset)).asset_materialization.metadata
        assert metadata["mlflow_run_id"].value == run.info.run_id
        assert metadata["mlflow_run"].value.endswith(f"/runs/{run.info.run_id}")
    assert version.tags["dagster.run_id"] == adapter.data.tags["dagster.run_id"] == \
        instance.get_latest_materialization_event(dg.AssetKey("published_adapter")).run_id
