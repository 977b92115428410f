r"""Incremental reruns: a full run, an unchanged rerun and a rerun with about 1 % new records, timed per stage.

Run from the repository root (any checkout: the code measured is the one the script lies in):

  .venv/bin/python scripts/bench_incremental.py --data data --out /tmp/bench-incr

It copies the data root (raw/, annotations/, finetune.yaml, erasure_requests.csv; no outputs) to
--out/root, then runs `finetune-pipeline run` (what `make run` calls: every asset and check, in one
process) three times with one fresh DAGSTER_HOME:
  1. full: nothing cached;
  2. unchanged: the same inputs again;
  3. new records: --new-share (default 1 %) new .txt records added under raw/new/ (at least one), each a
     variation of an existing text record with a new sentence, so it is kept and labeled like the rest.
For each run it prints the wall time of the command and the time of each step (STEP_START to
STEP_SUCCESS in Dagster's event log), and writes them all as JSON to --out/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ("raw", "annotations", "finetune.yaml", "erasure_requests.csv")


def copy_inputs(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in INPUTS:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name)
        elif path.exists():
            shutil.copy2(path, target / name)


def add_new_records(root: Path, share: float, seed: int = 11) -> int:
    """Write max(1, share * kept records) new .txt files under raw/new/, built from the kept texts."""
    import polars as pl

    kept = pl.read_parquet(root / ".pipeline" / "assets" / "deduplicated_corpus.parquet")
    texts = [t for t in kept["text"].to_list() if t]
    n = max(1, round(share * len(texts)))
    rng = random.Random(seed)
    folder = root / "raw" / "new"
    folder.mkdir(parents=True, exist_ok=True)
    words = ["Also", "the", "order", "came", "on", "a", "Tuesday", "after", "three", "weeks", "of", "waiting",
             "and", "nobody", "answered", "my", "second", "message", "either"]
    for i in range(n):
        base = rng.choice(texts)
        extra = " ".join(rng.sample(words, 8)).capitalize() + "."
        (folder / f"new_{i:04d}.txt").write_text(f"{extra} {base} {' '.join(rng.sample(words, 10))}.\n")
    return n


def step_times(dagster_home: Path) -> dict[str, float]:
    """Seconds per step of the latest run in this instance (STEP_START to STEP_SUCCESS or STEP_FAILURE)."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    starts, times = {}, {}
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            times[event.step_key] = round(entry.timestamp - starts.get(event.step_key, entry.timestamp), 2)
    return times


def run_once(root: Path, dagster_home: Path, log: Path) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "FINETUNE_DATA_DIR": str(root), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "DO_NOT_TRACK": "true",
           "UNSTRUCTURED_DISABLE_NOTICE": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run([str(ROOT / ".venv" / "bin" / "finetune-pipeline"), "run", "--data-dir", str(root)],
                              cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    wall = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        print(f"run failed (exit {proc.returncode}); see {log}", file=sys.stderr)
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="the data root whose inputs are copied")
    parser.add_argument("--out", default="/tmp/bench-incremental", help="work folder (replaced)")
    parser.add_argument("--new-share", type=float, default=0.01, help="new records in the third run, as a share")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    root, home = out / "root", out / "dagster_home"
    copy_inputs(Path(args.data).resolve(), root)
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "load_before": os.getloadavg(), "code": str(ROOT), "runs": []}
    for name in ("full", "unchanged", "new_records"):
        added = add_new_records(root, args.new_share) if name == "new_records" else 0
        wall = run_once(root, home, out / f"{name}.log")
        steps = subprocess.run([sys.executable, __file__, "--steps-of", str(home)], capture_output=True, text=True)
        times = json.loads(steps.stdout) if steps.returncode == 0 else {}
        results["runs"].append({"run": name, "new_records": added, "wall_s": wall, "steps_s": times,
                                "load_after": os.getloadavg()})
        print(f"{name}: {wall} s" + (f" ({added} new records)" if added else ""))
        for step, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
            print(f"  {step:<40}{seconds:>8.1f}")
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--steps-of":
        print(json.dumps(step_times(Path(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
