"""What a Dagster step costs to start: the README's headless command (`dagster asset materialize`) on a copy of the
sample data root, with the project's executor (steps forked from a server that preloaded Dagster and Great
Expectations, `finetune_pipeline/definitions.py`) against Dagster's own executor (each step a spawned interpreter
that imports everything again), on the same definitions otherwise. The two run in turn, each
`--runs` times, every run on a fresh copy of the root and a fresh DAGSTER_HOME; prints each run's wall time and the
medians.

    .venv/bin/python scripts/bench_step_start.py --select '*split_assignment' --runs 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Dagster's own executor (each step spawned), on the same definitions otherwise.
SPAWN = ("import dagster as dg\n\nfrom finetune_pipeline.definitions import definitions_for\n\n"
         "defs = definitions_for(executor=dg.multi_or_in_process_executor)\n")


def one_run(select: str, work: Path, spawn: bool) -> float:
    shutil.rmtree(work, ignore_errors=True)
    root, home = work / "data", work / "home"
    shutil.copytree(REPO / "data", root, ignore=lambda folder, names: {"exports", "models", ".pipeline"} & set(names)
                    if Path(folder) == REPO / "data" else set())
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    code = ["-m", "finetune_pipeline.definitions"]
    if spawn:
        (work / "spawn_definitions.py").write_text(SPAWN)
        code = ["-f", str(work / "spawn_definitions.py")]
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", *code, "--select", select]
    env = {**os.environ, "FINETUNE_DATA_DIR": str(root), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "DO_NOT_TRACK": "true"}
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--select", default="*split_assignment", help="assets, in Dagster's selection syntax")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="step-start-"))
    times: dict[str, list[float]] = {"forkserver (preloaded)": [], "spawn (Dagster's default)": []}
    try:
        for run in range(args.runs):
            for name in times:
                seconds = one_run(args.select, work / "run", spawn=name.startswith("spawn"))
                times[name].append(seconds)
                print(f"run {run + 1} {name:<28} {seconds:6.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, values in times.items():
        print(f"{name:<28} median {statistics.median(values):6.1f} s  (min {min(values):.1f}, max {max(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
