"""End to end: the README's headless command on a copy of the sample data root, then the gates.

One real run (parsing, cleaning, dedup, labels, oversampling, splits, LoRA training) through
`dagster asset materialize`, in a DAGSTER_HOME and data root outside the repository. The data root also
holds the bad inputs of bad_inputs.py (damaged PDFs, a 200 MiB text, wrong encodings, broken rows, a
fake database, a link out of the root, an unknown label, annotations for unknown records): the run must
finish with each of them rejected for its reason and every good record through.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from datasets import load_from_disk

from finetune_pipeline.defs.cli import _summary
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.settings import load_settings
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline.stored import stored_frame
from finetune_pipeline_tests.conftest import REPO, copy_sample_data

STAGES = ["raw_corpus", "cleaned_corpus", "deduplicated_corpus", "labeled_corpus", "augmented_corpus"]


def test_headless_materialize_succeeds_and_writes_to_the_data_root(sample_run):
    root, _, proc, _ = sample_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    splits = load_from_disk(str(root / "exports" / "splits"))
    assert set(splits) == {"train", "validation", "test"}
    for name in splits:
        assert (root / "exports" / "splits" / f"{name}.jsonl").exists()
        assert splits[name].num_rows > 0
    assert set(splits["train"].column_names) >= {"record_id", "text", "label", "label_source", "split", "group_id",
                                                 "source_uri", "source_type", "locator", "content_sha256",
                                                 "augmented_from", "augmentation"}
    assert (root / "models" / "lora_adapter" / "adapter_model.safetensors").exists()
    assert (root / "exports" / "rejects.parquet").exists() and (root / "exports" / "report.md").exists()


def test_every_source_type_reaches_the_corpus_and_stages_do_work(sample_run):
    root = sample_run[0]
    raw = stored_frame(DataRoot(root), "raw_corpus")
    assert {"txt", "md", "html", "pdf", "csv", "jsonl", "sqlite"} <= set(raw["source_type"])
    rejects = pl.read_parquet(root / "exports" / "rejects.parquet")
    reasons = set(rejects["reason"])
    assert {"exact_duplicate", "near_duplicate", "label_not_in_label_set"} <= reasons
    # the two one-line CSV tickets are labeled rows of a table: kept with the flag, not rejected (issue 33)
    cleaned = stored_frame(DataRoot(root), "cleaned_corpus")
    short = cleaned.filter(pl.col("quality_flags").list.contains("too_short"))
    assert short["source_type"].to_list() == ["csv", "csv"] and "too_short" not in reasons
    # raw/notes.txt has no label folder: the zero-shot model labels it (confidently, so not in review)
    labeled = stored_frame(DataRoot(root), "labeled_corpus")
    notes = labeled.filter(pl.col("source_uri") == "raw/notes.txt")
    assert notes.select("label", "label_source").rows() == [("shipping", "model")]
    assert notes["label_model"][0].startswith("zero-shot all-MiniLM-L6-v2")
    # The review loop of the sample: its ambiguous inbox tickets wait in the queue, highest priority first,
    # except those the shipped reviewers' export (annotations/review_round_1.csv) settled.
    tasks = json.loads((root / "exports" / "review" / "tasks.json").read_text())
    inbox = {t["data"]["source_uri"].split("/")[-1]: t for t in tasks if t["data"]["source_uri"].startswith("raw/inbox/")}
    assert set(inbox) == {"invoice_behind_login.txt", "account_used_saved_card.txt", "express_delivery_late.txt"}
    assert [t["data"]["priority"] for t in tasks] == sorted((t["data"]["priority"] for t in tasks), reverse=True)
    assert inbox["invoice_behind_login.txt"]["meta"]["suggested_annotators"] == ["reviewer_3"]
    settled = labeled.filter(pl.col("source_uri").str.starts_with("raw/inbox/"))
    assert settled.height == 3 and set(settled["label_source"]) == {"crowd"}
    assert rejects.filter(pl.col("stage").is_null() | pl.col("reason").is_null()).is_empty()
    # The domain filter rejects the sample's two unrelated documents, and no ticket.
    off_domain = rejects.filter(pl.col("reason") == "off_domain")
    assert sorted(off_domain["source_uri"]) == ["raw/unrelated/match_report.txt", "raw/unrelated/recipe.txt"]
    assert set(off_domain["stage"]) == {"deduplicated_corpus"}
    assert all("relevance score" in d for d in off_domain["detail"])
    assert "2 of " in (root / "exports" / "report.md").read_text().split("## Domain relevance", 1)[1][:40]


def test_bad_inputs_are_rejected_for_their_reason_and_every_good_record_comes_through(sample_run, tmp_path):
    root, _, proc, expected = sample_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    rejects = pl.read_parquet(root / "exports" / "rejects.parquet")
    raw = stored_frame(DataRoot(root), "raw_corpus")
    for uri, outcome in expected.items():
        if outcome == "kept":
            assert raw.filter(pl.col("source_uri") == uri).height == 1, uri
            continue
        stage, reason, word = outcome
        rows = rejects.filter((pl.col("stage") == stage) & (pl.col("reason") == reason))
        rows = rows.filter(pl.col("detail").str.contains(uri.split(":")[1], literal=True)) if uri.startswith("label:") \
            else rows.filter(pl.col("source_uri") == uri)
        assert rows.height >= 1, (uri, outcome)
        assert all(word in detail for detail in rows["detail"]), (uri, rows["detail"].to_list())
    # The UTF-16 ticket is read as text (not mojibake) and labeled by the zero-shot model.
    utf16 = raw.filter(pl.col("source_uri") == "raw/incoming/utf16.txt")
    assert utf16["text"][0].startswith("My password reset email never arrives")
    # Every record of the sample data itself still came through collection, unchanged.
    clean = copy_sample_data(tmp_path / "clean")
    good = collect_raw_corpus(clean, load_settings(clean)).kept
    assert good.select("record_id", "content_sha256").join(raw, on=["record_id", "content_sha256"],
                                                           how="anti").is_empty()
    # Annotations for records that do not exist are reported, not applied and not fatal.
    stats = json.loads((root / ".pipeline" / "stats" / "labeled_corpus.json").read_text())
    problems = [p for p in stats["annotations"]["problems"] if p["file"] == "from_another_project.csv"]
    assert problems and all("not in the corpus" in p["reason"] for p in problems)


def test_nothing_lost_across_stages(sample_run):
    root = sample_run[0]
    rejects = pl.read_parquet(root / "exports" / "rejects.parquet")
    previous = None
    for stage in STAGES:
        frame = stored_frame(DataRoot(root), stage)
        originals = frame.filter(pl.col("augmented_from").is_null()) if "augmented_from" in frame.columns else frame
        if previous is not None:
            rejected_here = rejects.filter(pl.col("stage") == stage)
            assert previous.height == originals.height + rejected_here.height, stage
            assert set(previous["record_id"]) == set(originals["record_id"]) | set(rejected_here["record_id"])
        previous = originals
    splits = stored_frame(DataRoot(root), "dataset_splits")
    assert splits.filter(pl.col("augmented_from").is_null()).height == previous.height


def test_splits_do_not_leak_and_augmentation_stays_in_train(sample_run):
    splits = stored_frame(DataRoot(sample_run[0]), "dataset_splits")
    assert splits.group_by("group_id").agg(pl.col("split").n_unique())["split"].max() == 1
    augmented = splits.filter(pl.col("augmented_from").is_not_null())
    assert augmented.height > 0 and set(augmented["split"]) == {"train"}
    for name in ("train", "validation", "test"):
        assert splits.filter(pl.col("split") == name)["label"].n_unique() == 4


def test_all_checks_ran_and_passed(sample_run):
    home = sample_run[1]
    instance = dg.DagsterInstance.from_config(str(home))
    from finetune_pipeline.definitions import defs

    graph = defs.get_repository_def().asset_graph
    keys = list(graph.asset_check_keys)
    assert len(keys) >= 12
    for key in keys:
        record = instance.get_latest_asset_check_evaluation_record(key)
        assert record is not None, key
        if graph.get_check_spec(key).blocking:  # a warning check may warn on real data
            assert record.evaluation.passed, (key, record.evaluation.description)


def test_adapter_beats_majority_baseline_and_summary_reports_it(sample_run):
    root = sample_run[0]
    metrics = json.loads((root / "models" / "lora_adapter" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > metrics["majority_baseline"]["accuracy"]
    summary = _summary(DataRoot(root))
    for text in ("raw_corpus", "exact_duplicate", "splits: test", "adapter:", "majority class"):
        assert text in summary


def test_no_personal_data_in_exports(sample_run):
    root = sample_run[0]
    exported = "".join(p.read_text() for p in (root / "exports" / "splits").glob("*.jsonl"))
    exported += (root / "exports" / "report.md").read_text()
    for value in ("@example.com", "@example.org", "4111 1111 1111 1111", "203.0.113.42", "078-05-1120"):
        assert value not in exported


PLANTED_PII = ("maria.lopez@example.com", "tom.baker@example.org", "priya.n@example.com", "jonas_k@example.com",
               "4111 1111 1111 1111", "078-05-1120", "203.0.113.42")


def test_no_personal_data_in_dagster_storage_logs_or_metadata(sample_run):
    """Run and event storage (SQLite), compute logs, the stats behind the asset metadata and the MLflow store
    (its database: params, metrics, tags; its artifacts) carry no planted PII value: redaction happens
    before anything is logged or described."""
    root, home, proc, _ = sample_run
    raw = b"".join(p.read_bytes() for p in (root / "raw").rglob("*") if p.is_file() and p.stat().st_size < 2**26)
    assert all(value.encode() in raw for value in PLANTED_PII)  # they really are in the inputs
    places = [p for p in home.rglob("*") if p.is_file()]  # history/ (runs, events), storage/ (compute logs)
    places += list((root / ".pipeline" / "stats").glob("*.json"))
    assert any(p.suffix == ".db" for p in places) and any(p.suffix in (".out", ".err") for p in places)
    mlflow_store = [p for p in DataRoot(root).tracking_store.rglob("*") if p.is_file()]
    # what is searched holds the runs: the database, the model cards and the adapter's weights
    assert {"mlflow.db", "README.md", "adapter_model.safetensors"} <= {p.name for p in mlflow_store}
    places += mlflow_store
    for path in places:
        data = path.read_bytes()
        for value in PLANTED_PII:
            assert value.encode() not in data, (value, path.name)
    for value in PLANTED_PII:
        assert value not in proc.stdout and value not in proc.stderr


def _tiny_root(tmp_path: Path, yaml: str) -> Path:
    root = tmp_path / "data"
    (root / "raw" / "billing").mkdir(parents=True)
    for i in range(3):
        (root / "raw" / "billing" / f"t{i}.txt").write_text(
            f"Ticket {i}: I was charged twice for invoice {1000 + i} and would like a refund of one payment.")
    (root / "finetune.yaml").write_text(yaml)
    return root


def test_failed_blocking_check_stops_downstream_in_this_and_later_runs(tmp_path, monkeypatch):
    from finetune_pipeline.definitions import defs

    root = _tiny_root(tmp_path, "checks:\n  min_records: 1000\n")
    monkeypatch.setenv("FINETUNE_DATA_DIR", str(root))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("refresh_all")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    evaluations = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
                   for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert evaluations == {"raw_corpus_expectations": False, "raw_corpus_every_file_accounted": True,
                           "raw_corpus_reject_share": True}
    materialized = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert materialized == {"raw_corpus"}
    assert not (root / "exports").exists() and not (root / "models").exists()

    # A separately launched run of a downstream asset refuses to build on the failed gate.
    later = job.execute_in_process(instance=instance, raise_on_error=False,
                                   asset_selection=[dg.AssetKey("cleaned_corpus")])
    assert not later.success
    failure = next(e for e in later.all_events if e.is_step_failure)
    assert "blocked: check 'raw_corpus_expectations'" in failure.step_failure_data.error.message


def test_wrong_types_in_finetune_yaml_stop_the_run_before_any_stage_with_the_fields_named(tmp_path, monkeypatch):
    root = _tiny_root(tmp_path, "splits:\n  train: lots\ntraining:\n  epochs: many\n")
    cli = subprocess.run([sys.executable, "-m", "finetune_pipeline.defs.cli", "run", "--data-dir", str(root)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2
    assert "splits.train" in cli.stderr and "training.epochs" in cli.stderr and "finetune.yaml" in cli.stderr
    assert "Traceback" not in cli.stderr
    assert sorted(p.name for p in root.iterdir()) == ["finetune.yaml", "raw"]  # nothing written

    # From the UI, a schedule or a sensor: the first step fails with the same message; nothing is stored.
    from finetune_pipeline.definitions import defs

    monkeypatch.setenv("FINETUNE_DATA_DIR", str(root))
    result = defs.resolve_job_def("refresh_all").execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                                                   raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "raw_corpus"
    description = failure.step_failure_data.user_failure_data.description
    assert "splits.train" in description and "training.epochs" in description
    assert not any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)
    assert sorted(p.name for p in root.iterdir()) == ["finetune.yaml", "raw"]


# ---- the web UI in a real browser ---------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("FINETUNE_SCREENSHOT_DIR")  # set to docs/screenshots to refresh the README's


@pytest.fixture(scope="module")
def webserver(sample_run, tmp_path_factory):
    """dagster-webserver on 127.0.0.1 over the e2e run's DAGSTER_HOME and data root."""
    import socket
    import time
    import urllib.request

    root, home, proc, _ = sample_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FINETUNE_DATA_DIR": str(root), "DAGSTER_HOME": str(home)}
    log = (tmp_path_factory.mktemp("web") / "webserver.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1",
                               "-p", str(port), "-m", "finetune_pipeline.definitions"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"dagster-webserver did not start; see {log.name}")
            time.sleep(1)
    # The first-visit community newsletter dialog (shown on 127.0.0.1) would cover the screenshots.
    request = urllib.request.Request(f"{url}/graphql", data=b'{"query": "mutation { setNuxSeen }"}',
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30)
    yield url
    server.terminate()
    server.wait(timeout=30)


def _browse(url: str, tmp: Path, screenshot: str | None = None) -> str:
    """The rendered DOM of `url` in headless Chromium, optionally saving a screenshot."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (scripts/ensure_debian_package.sh)"
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}", "--window-size=1600,1000", "--hide-scrollbars",
            "--virtual-time-budget=20000"]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    if screenshot:
        folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp
        folder.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run([*args, f"--screenshot={folder / screenshot}", url], capture_output=True, timeout=180)
        assert shot.returncode == 0 and (folder / screenshot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return dom.stdout


def test_ui_shows_the_asset_graph_and_check_results(webserver, tmp_path):
    catalog = _browse(f"{webserver}/assets", tmp_path)
    for asset in ("raw_corpus", "cleaned_corpus", "deduplicated_corpus", "labeled_corpus", "augmented_corpus",
                  "dataset_splits", "lora_adapter"):
        assert asset in catalog, asset
    assert "Materialized" in catalog
    graph = _browse(f"{webserver}/assets/data_card?view=lineage&lineageScope=upstream&lineageDepth=10", tmp_path,
                    screenshot="asset-graph.png")
    assert "lora_adapter" in graph and "raw_corpus" in graph
    for asset, check in (("raw_corpus", "raw_corpus_expectations"), ("dataset_splits", "dataset_splits_no_leakage")):
        page = _browse(f"{webserver}/assets/{asset}?view=checks", tmp_path, screenshot=f"{asset}-checks.png")
        assert check in page and "Passed" in page, asset
    overview = _browse(f"{webserver}/assets/deduplicated_corpus", tmp_path, screenshot="deduplicated-corpus.png")
    assert "rows_rejected" in overview
