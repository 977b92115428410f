"""Crash safety: a run killed (SIGKILL, its whole process group) in the middle of a stage or of training
leaves the last good materialization readable, never a half-written export or adapter where a reader
would load it, and the next run completes, training resuming from its last checkpoint.

Real processes: the README's `finetune-pipeline run` on a copy of the end-to-end run's data root and
DAGSTER_HOME (the project's dagster.yaml, so the `gpu` pool limit of one applies across runs).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from datasets import load_from_disk

from finetune_pipeline.atomic import atomic_path
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.shards import open_dataset
from finetune_pipeline_tests.conftest import REPO

CLI = Path(sys.executable).parent / "finetune-pipeline"
TRAINING = ("training:\n  epochs: 2\n  early_stopping_patience: 2\n  checkpoint_every_epochs: 1\n  compare: [lora]\n"
            "splits:\n  cv_below_records: 0\n")  # no cross-validated comparison: this test is about the kills


def _start(root: Path, home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    return subprocess.Popen([str(CLI), "run", "--data-dir", str(root)], cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, what: str, log: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _digests(folder: Path) -> dict[str, str]:
    """What a reader would load from `folder`: its files, not the hidden temporaries or the checkpoint."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()
            and not any(part.startswith(".") or part == "checkpoint" for part in p.relative_to(folder).parts)}


def _assert_readable(root: Path) -> None:
    """Every stored asset, the split exports, the rejects and the adapter load."""
    for parquet in (root / ".pipeline" / "assets").glob("*.parquet"):
        pl.read_parquet(parquet)
    datasets = [p.parent for p in (root / ".pipeline").glob("*/*/manifest.json")]  # assets/<name>, rejects/<stage>
    assert datasets
    for dataset in datasets:
        open_dataset(dataset).collect()
    splits = load_from_disk(str(root / "exports" / "splits"))
    assert set(splits) == {"train", "validation", "test"}
    for jsonl in (root / "exports" / "splits").glob("*.jsonl"):
        assert [json.loads(line) for line in jsonl.read_text().splitlines()]
    pl.read_parquet(root / "exports" / "rejects.parquet")
    adapter = root / "models" / "lora_adapter"
    assert json.loads((adapter / "metrics.json").read_text())["test"]["accuracy"] >= 0
    from safetensors.torch import load_file

    assert load_file(adapter / "adapter_model.safetensors")


def test_killed_runs_leave_the_last_materialization_readable_and_the_next_run_completes(sample_run, tmp_path):
    e2e_root, e2e_home, proc, _ = sample_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    root, home, logs = tmp_path / "data", tmp_path / "dagster_home", tmp_path / "logs"
    shutil.copytree(e2e_root, root, symlinks=True)
    shutil.copytree(e2e_home, home)
    logs.mkdir()
    _assert_readable(root)
    good_exports, good_adapter = _digests(root / "exports"), _digests(root / "models" / "lora_adapter")

    # New input, so every stage's output changes, and a short training. Killed in the middle of the run,
    # as soon as raw_corpus is stored again (cleaning is next).
    (root / "finetune.yaml").write_text((root / "finetune.yaml").read_text() + TRAINING)
    (root / "raw" / "tickets" / "billing" / "ticket_new.txt").write_text(
        "Hello, my card was charged twice for order 88123 last Tuesday. Please refund the second "
        "payment of 42.50 to the same card. Thank you.")
    raw_parquet = DataRoot(root).asset_dataset("raw_corpus") / "manifest.json"  # rewritten last, at commit
    before = raw_parquet.stat().st_mtime_ns
    first = _start(root, home, logs / "first.log")
    _kill_when(first, lambda: raw_parquet.stat().st_mtime_ns != before, "raw_corpus was stored again",
               logs / "first.log")
    _assert_readable(root)
    assert _digests(root / "exports") == good_exports

    # Killed again in the middle of training, after its first checkpoint (it holds the gpu pool's slot).
    checkpoint = DataRoot(root).staged(DataRoot(root).adapter("lora_adapter")) / "checkpoint" / "trainer_state.pt"
    second = _start(root, home, logs / "second.log")
    _kill_when(second, checkpoint.exists, "the first training checkpoint", logs / "second.log")
    _assert_readable(root)
    assert _digests(root / "models" / "lora_adapter") == good_adapter, \
        "the adapter a reader loads must stay the last finished one until a run finishes"

    # The next run frees the dead runs' slots, completes, resumes training, and brings the new ticket in.
    last = _start(root, home, logs / "last.log")
    assert last.wait(timeout=900) == 0, (logs / "last.log").read_text()[-3000:]
    # Each run found the one killed just before it: marked failed, its slots (the gpu pool's) freed.
    for log in ("second.log", "last.log"):
        assert (logs / log).read_text().count("was killed before it finished: marked failed") == 1, log
    output = (logs / "last.log").read_text()
    assert "resuming from" in output
    _assert_readable(root)
    assert not checkpoint.parent.exists()  # finished: the checkpoint went with the swap
    assert _digests(root / "models" / "lora_adapter") != good_adapter
    metrics = json.loads((root / "models" / "lora_adapter" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1
    splits = pl.concat([pl.read_ndjson(p) for p in (root / "exports" / "splits").glob("*.jsonl")],
                       how="diagonal_relaxed")
    assert splits.filter(pl.col("source_uri") == "raw/tickets/billing/ticket_new.txt").height == 1


def test_an_interrupted_write_leaves_the_previous_file_or_folder(tmp_path):
    target = tmp_path / "exports" / "splits"
    target.mkdir(parents=True)
    (target / "train.jsonl").write_text('{"old": 1}\n')
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "train.jsonl").write_text('{"new": ')  # half written when the interrupt comes
            raise KeyboardInterrupt
    assert (target / "train.jsonl").read_text() == '{"old": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["splits"]  # no temporary left beside it

    single = tmp_path / "exports" / "rejects.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(single)
    with pytest.raises(RuntimeError):
        with atomic_path(single) as tmp:
            tmp.write_bytes(b"PAR1 half")
            raise RuntimeError("disk full")
    assert pl.read_parquet(single)["a"].to_list() == [1]
