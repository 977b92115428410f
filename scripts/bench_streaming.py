r"""Streaming benchmark (issue 36): the data-preparation stages on the local streaming path, each stage in its
own process, with its wall time, records per second and the step process's peak resident memory.

Run from the repository root:

  .venv/bin/python scripts/bench_streaming.py --records 100000 --out /tmp/stream100k
  .venv/bin/python scripts/bench_streaming.py --records 1000000 --out /tmp/stream1m

The data root is bench_soak.py's (its generator: Faker support tickets, 4 % exact and 4 % edited copies,
1 % without a label, plus the sample's ticket documents), with `privacy.detector: patterns` (Presidio's
spaCy NER cleans about 83 records/s on 2 cores: 1M records would take over 3 hours) and no domain filter
(MiniLM on every record; not what this measures). Each stage reads the previous stage's sharded dataset
under the data root's .pipeline/assets/ and writes its own (`streaming.py`), in shards of
`execution.shard_rows` (`--shard-rows`, default the setting's 50,000):

  raw_corpus -> cleaned_corpus -> deduplicated_corpus -> labeled_corpus -> split_assignment ->
  augmented_corpus -> dataset_splits -> export

A stage's peak RSS is the step process's high-water mark (/proc/self/status VmHWM, read as it ends); the
cleaning stage's process-pool workers (execution.workers) and the sentence encoder's own process
(execution.encoder_process_min_texts, `--encoder-process-min-texts`) are other processes, reported apart
(`workers MiB`: getrusage RUSAGE_CHILDREN, the largest of them). Results are appended to
<out>/results.jsonl as each stage ends (poll it during a long run) and printed as a table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")

STAGES = ["raw_corpus", "cleaned_corpus", "deduplicated_corpus", "labeled_corpus", "split_assignment",
          "augmented_corpus", "dataset_splits", "export"]
OVERRIDES = "privacy: {detector: patterns}\ndomain: {description: null, examples_dir: null}\n"


def _settings(root: Path, shard_rows: int | None):
    from finetune_pipeline.settings import load_settings

    execution = {**({"shard_rows": shard_rows} if shard_rows else {}),
                 **({"encoder_process_min_texts": json.loads(os.environ["BENCH_ENCODER_PROCESS_MIN_TEXTS"])}
                    if "BENCH_ENCODER_PROCESS_MIN_TEXTS" in os.environ else {})}
    return load_settings(root, overrides=OVERRIDES + (f"execution: {json.dumps(execution)}\n" if execution else ""))


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(stage: str, root: Path, shard_rows: int | None) -> dict:
    """One stage on the streaming path, in this process; its figures."""
    import polars as pl

    from finetune_pipeline import shards, streaming
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.records import empty_rejects

    settings = _settings(root, shard_rows)
    from finetune_pipeline.allocator import set_mmap_threshold

    set_mmap_threshold(settings.execution.malloc_mmap_threshold)  # as the asset's step process does
    layout = DataRoot(root)
    rows = streaming.batch_rows(settings)

    def writers(name: str):
        return (shards.DatasetWriter(layout.asset_dataset(name), shard_rows=rows),
                shards.DatasetWriter(layout.rejects_dataset(name), shard_rows=rows))

    def dataset(name: str):
        return shards.open_dataset(layout.asset_dataset(name))

    assignment_file = layout.asset_values / "split_assignment.parquet"
    rows_in = None
    if stage == "raw_corpus":
        from finetune_pipeline.sources import collect_sources

        kept, rejected = writers(stage)  # each source's rows written as it is read, as the asset does
        collect_sources(root, settings, lambda k, r: (kept.write(k), rejected.write(r)), cache_dir=None)
        kept.commit(), rejected.commit()
    elif stage == "cleaned_corpus":
        from finetune_pipeline.cleaning.erasure import load_erasure_requests

        source = dataset("raw_corpus")
        rows_in = source.rows
        kept, rejected = writers(stage)
        streaming.clean_dataset(source, settings, load_erasure_requests(root), kept, rejected,
                                cache_file=layout.cleaning_cache)
        kept.commit(), rejected.commit()
    elif stage == "deduplicated_corpus":
        source = dataset("cleaned_corpus")
        rows_in = source.rows
        kept, rejected = writers(stage)
        streaming.deduplicate_dataset(source, settings, kept, rejected)
        kept.commit(), rejected.commit()
    elif stage == "labeled_corpus":
        from finetune_pipeline.labeling.annotations import load_annotations

        source = dataset("deduplicated_corpus")
        rows_in = source.rows
        annotations, problems = load_annotations(layout.annotations)
        kept, rejected = writers(stage)
        streaming.label_dataset(source, settings, kept, rejected, annotations, problems)
        kept.commit(), rejected.commit()
    elif stage == "split_assignment":
        source = dataset("labeled_corpus")
        rows_in = source.rows
        assignment, _ = streaming.split_assignment_dataset(source, settings)
        assignment_file.parent.mkdir(parents=True, exist_ok=True)
        assignment.write_parquet(assignment_file)
    elif stage == "augmented_corpus":
        source = dataset("labeled_corpus")
        rows_in = source.rows
        kept, rejected = writers(stage)
        streaming.augment_dataset(source, settings, kept, assignment=pl.read_parquet(assignment_file))
        rejected.write(empty_rejects())  # augmentation rejects nothing
        kept.commit(), rejected.commit()
    elif stage == "dataset_splits":
        source = dataset("augmented_corpus")
        rows_in = source.rows
        writer = shards.DatasetWriter(layout.asset_dataset(stage), shard_rows=rows)
        streaming.apply_split_dataset(source, pl.read_parquet(assignment_file), writer, rows=rows)
        writer.commit()
    elif stage == "export":
        from finetune_pipeline import exports
        from finetune_pipeline.tasks import task_for

        source = dataset("dataset_splits")
        rows_in = source.rows
        exports.export_splits(source.scan(), layout.splits_export, task_for(settings))  # one split at a time
    else:
        raise SystemExit(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    out = dataset(stage).rows if stage not in ("split_assignment", "export") else None
    rejected = shards.open_dataset(layout.rejects_dataset(stage)).rows \
        if shards.is_dataset(layout.rejects_dataset(stage)) and stage not in ("split_assignment", "export") else 0
    return {"stage": stage, "rows_in": rows_in, "rows_out": out, "rows_rejected": rejected,
            "peak_mib": round(_peak_mib(), 1),
            "workers_peak_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", default="/tmp/stream")
    parser.add_argument("--shard-rows", type=int, default=None, help="execution.shard_rows (default: the setting's)")
    parser.add_argument("--from-stage", choices=STAGES, default=None,
                        help="reuse the data root under --out and start at this stage")
    parser.add_argument("--to-stage", choices=STAGES, default=None, help="stop after this stage")
    parser.add_argument("--encoder-process-min-texts", default=None,
                        help="execution.encoder_process_min_texts: a number, or null (default: the setting's)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # a child: run one stage
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.encoder_process_min_texts is not None:  # the children read it from their environment
        os.environ["BENCH_ENCODER_PROCESS_MIN_TEXTS"] = args.encoder_process_min_texts
    if args.stage:
        print("RESULT " + json.dumps(run_stage(args.stage, Path(args.root), args.shard_rows)), flush=True)
        return 0

    out = Path(args.out)
    root = out / "data"
    results_file = out / "results.jsonl"
    if args.from_stage is None:
        shutil.rmtree(root, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        results_file.unlink(missing_ok=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'scripts'); import bench_soak; "
                        f"bench_soak.generate(__import__('pathlib').Path({str(root)!r}), {args.records})"],
                       cwd=ROOT, check=True)
        print(f"generated {args.records:,} records in {time.perf_counter() - started:.0f} s under {root}", flush=True)
    stages = STAGES[STAGES.index(args.from_stage):] if args.from_stage else STAGES
    if args.to_stage:
        stages = stages[:stages.index(args.to_stage) + 1]
    rows = []
    for stage in stages:
        command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--root", str(root)]
        if args.shard_rows:
            command += ["--shard-rows", str(args.shard_rows)]
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not found:
            print(f"{stage} failed (exit {done.returncode}):\n{done.stderr[-4000:]}", file=sys.stderr)
            return 1
        result = {**json.loads(found[-1][len("RESULT "):]), "wall_s": round(seconds, 1), "records": args.records}
        n = result["rows_in"] or (result["rows_out"] or 0) + (result["rows_rejected"] or 0)
        result["records_per_s"] = round(n / seconds, 1) if seconds else None
        with results_file.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
        rows.append(result)

    import psutil

    print(f"\n{platform.node()} · {psutil.cpu_count()} cores · {psutil.virtual_memory().total / 2**30:.0f} GiB · "
          f"{args.records:,} records generated · privacy.detector patterns · streaming")
    print("| stage | records in | out | rejected | wall s | records/s | step peak RSS MiB | pool workers' peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = [json.loads(line) for line in results_file.read_text().splitlines()]  # --from-stage: earlier ones too
    for r in rows:
        print(f"| {r['stage']} | {r['rows_in'] if r['rows_in'] is not None else '-'} | "
              f"{r['rows_out'] if r['rows_out'] is not None else '-'} | {r['rows_rejected']} | {r['wall_s']:.1f} | "
              f"{r['records_per_s']:,.0f} | {r['peak_mib']:,.0f} | "
              f"{r['workers_peak_mib']:,.0f} |")
    print(f"| total | | | | {sum(r['wall_s'] for r in rows):.1f} | | {max(r['peak_mib'] for r in rows):,.0f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
