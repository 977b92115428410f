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
`--reuse` runs again in an --out an earlier invocation left (or a copy of one): the same stored state,
rerun by another checkout's copy of the script. For each run it prints the wall time of the command and the time of each step (STEP_START to
STEP_SUCCESS in Dagster's event log), and writes them all as JSON to --out/bench.json.

`--executor multiprocess` runs `dagster asset materialize -m finetune_pipeline.definitions --select ...`
instead: Dagster's multiprocess executor, a process per step, as runs from the UI, the schedule and the
sensors execute (each step's time then includes its process start).
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
INPUTS = ("raw", "annotations", "domain", "finetune.yaml", "erasure_requests.csv")


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


def add_generated_records(root: Path, records: int, out: Path) -> int:
    """Generate `records` support tickets with bench_soak's Faker generator (seed 7) into raw/exports/bench-*.jsonl."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_soak import generate

    gen = out / "generated"
    shutil.rmtree(gen, ignore_errors=True)
    generate(gen, records)
    parts = sorted((gen / "raw" / "exports").glob("part-*.jsonl"))
    for part in parts:
        shutil.copy2(part, root / "raw" / "exports" / f"bench-{part.name}")
    return sum(1 for part in parts for _ in part.open())


NEW_FILE = "bench-new-records.jsonl"


def add_new_records(root: Path, share: float, seed: int = 20261202) -> int:
    """Write max(1, share * kept records) genuinely new tickets to raw/exports/bench-new-records.jsonl.

    Fresh Faker tickets (another seed than the bulk, no copies of anything): each its own paragraphs, so
    they survive deduplication (main() counts how many are kept)."""
    from faker import Faker
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_soak import VOCAB

    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.stored import stored_frame

    kept = stored_frame(DataRoot(root), "deduplicated_corpus")
    n = max(1, round(share * kept.height))
    fake = Faker("en_US")
    Faker.seed(seed)
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = rng.choice(list(VOCAB))
        terms = rng.sample(VOCAB[label], 3)
        text = " ".join([f"Good morning, my question is about the {terms[0]}.", fake.paragraph(nb_sentences=4),
                         f"Please look at the {terms[1]} and tell me what happens with the {terms[2]}.",
                         fake.sentence(nb_words=14), f"Regards, {fake.name()}"])
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    with (root / "raw" / "exports" / NEW_FILE).open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return n


def stage_counts(root: Path) -> dict[str, int]:
    """Rows of each stored corpus stage, and how many of them come from the new-records file."""
    import polars as pl

    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.stored import stored_frame

    counts = {}
    for name in ("raw_corpus", "cleaned_corpus", "deduplicated_corpus", "labeled_corpus", "dataset_splits"):
        frame = stored_frame(DataRoot(root), name)
        if frame is not None:
            counts[name] = frame.height
            if "source_uri" in frame.columns:
                counts[f"{name}_new"] = frame.filter(pl.col("source_uri").str.contains(NEW_FILE, literal=True)).height
    return counts


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


def run_once(root: Path, dagster_home: Path, log: Path, until: str | None, executor: str = "in_process") -> float:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "FINETUNE_DATA_DIR": str(root), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "DO_NOT_TRACK": "true",
           "UNSTRUCTURED_DISABLE_NOTICE": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with log.open("w") as handle:
        if executor == "multiprocess":
            command = [str(ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m",
                       "finetune_pipeline.definitions", "--select", f"*{until}" if until else "*"]
        else:
            command = [str(ROOT / ".venv" / "bin" / "finetune-pipeline"), "run", "--data-dir", str(root)] \
                + (["--select", f"*{until}"] if until else [])
        proc = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    wall = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        print(f"run failed (exit {proc.returncode}); see {log}", file=sys.stderr)
        sys.exit(1)
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="the data root whose inputs are copied")
    parser.add_argument("--out", default="/tmp/bench-incremental", help="work folder (replaced)")
    parser.add_argument("--records", type=int, default=0,
                        help="generated tickets added to the copy (bench_soak's generator), e.g. 14000")
    parser.add_argument("--new-fraction", "--new-share", dest="new_share", type=float, default=0.01,
                        help="new records in the third run, as a share of the kept records")
    parser.add_argument("--until", default=None,
                        help="materialize only this asset and everything upstream (e.g. dataset_splits)")
    parser.add_argument("--executor", choices=("in_process", "multiprocess"), default="in_process",
                        help="in_process: `finetune-pipeline run` (make run); multiprocess: `dagster asset "
                             "materialize`, a process per step, as the UI, schedule and sensors run")
    parser.add_argument("--runs", nargs="+", choices=("full", "unchanged", "new_records"),
                        default=["full", "unchanged", "new_records"], help="which runs, in order")
    parser.add_argument("--reuse", action="store_true",
                        help="run in the --out a previous invocation left (its root, caches and Dagster instance, "
                             "copied or not) instead of making a new one: e.g. the same stored state rerun by "
                             "another checkout")
    parser.add_argument("--json", default="bench.json", help="results file name under --out")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    root, home = out / "root", out / "dagster_home"
    if args.reuse:
        if not (root / "finetune.yaml").exists() or not home.is_dir():
            parser.error(f"--reuse: {out} holds no root/ and dagster_home/ from an earlier run")
        generated = args.records
    else:
        copy_inputs(Path(args.data).resolve(), root)
        generated = add_generated_records(root, args.records, out) if args.records else 0
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "generated_records": generated, "until": args.until, "executor": args.executor, "code": str(ROOT),
               "runs": []}
    print(f"data root {root}: sample inputs + {generated} generated records; until {args.until or 'everything'}")
    for name in args.runs:
        added = add_new_records(root, args.new_share) if name == "new_records" else 0
        load_before = os.getloadavg()
        wall = run_once(root, home, out / f"{name}.log", args.until, args.executor)
        load_after = os.getloadavg()
        steps = subprocess.run([sys.executable, __file__, "--steps-of", str(home)], capture_output=True, text=True)
        times = json.loads(steps.stdout) if steps.returncode == 0 else {}
        counts = stage_counts(root)
        results["runs"].append({"run": name, "new_records": added, "wall_s": wall, "steps_s": times,
                                "counts": counts, "load_before": load_before, "load_after": load_after})
        print(f"{name}: {wall} s, load before {load_before}, after {load_after}"
              + (f" ({added} new records)" if added else ""))
        print(f"  counts {counts}")
        clean_s = times.get("cleaned_corpus")
        if name == "full" and clean_s and counts.get("raw_corpus"):
            print(f"  cleaning: {counts['raw_corpus']} records in {clean_s} s = {counts['raw_corpus'] / clean_s:.0f}/s")
        if added:
            print(f"  new records kept: {counts.get('deduplicated_corpus_new')} of {added} after dedup, "
                  f"{counts.get('dataset_splits_new')} in dataset_splits")
        for step, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
            print(f"  {step:<40}{seconds:>8.1f}")
        print(f"  sum of steps {sum(times.values()):.1f} s", flush=True)
        (out / args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--steps-of":
        print(json.dumps(step_times(Path(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
