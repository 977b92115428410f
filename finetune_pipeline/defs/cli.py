"""Command line: `finetune-pipeline run` materializes every asset headless and prints a summary."""

import argparse
import json
import os
import sys
from pathlib import Path

from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.records import CORPUS_STAGES


def _summary(data_dir: Path) -> str:
    lines = ["", "== finetune-pipeline summary ==", f"data root: {data_dir}", ""]
    lines.append(f"{'stage':<22}{'in':>6}{'out':>6}{'rejected':>10}{'added':>7}")
    counts = PipelineResource(data_dir=str(data_dir)).stage_counts()
    for c in counts:
        lines.append(f"{c['stage']:<22}{c['rows_in']:>6}{c['rows_out']:>6}{c['rows_rejected']:>10}{c['augmented']:>7}")
    if len(counts) < len(CORPUS_STAGES):
        lines.append(f"({len(CORPUS_STAGES) - len(counts)} stage(s) not materialized)")
    rejects = data_dir / "exports" / "rejects.parquet"
    if rejects.exists():
        import polars as pl

        frame = pl.read_parquet(rejects)
        lines += ["", "rejects by stage and reason:"]
        for stage, reason, n in frame.group_by("stage", "reason").len().sort("stage", "reason").iter_rows():
            lines.append(f"  {stage:<22}{reason:<28}{n:>5}")
    splits = data_dir / "exports" / "splits"
    if splits.exists():
        sizes = {p.stem: sum(1 for _ in p.open()) for p in sorted(splits.glob("*.jsonl"))}
        lines += ["", "splits: " + ", ".join(f"{k} {v}" for k, v in sizes.items()), f"exports: {splits.parent}"]
    tasks = data_dir / "exports" / "review" / "tasks.json"
    if tasks.exists():
        lines.append(f"review queue: {len(json.loads(tasks.read_text()))} Label Studio task(s) in {tasks}")
    adapters = sorted((data_dir / "models").glob("*/metrics.json"))
    for metrics_path in adapters:
        m = json.loads(metrics_path.read_text())
        t, b = m["test"], m["majority_baseline"]
        lines += [f"adapter: {metrics_path.parent}", "",
                  f"{'approach':<16}{'test acc':>10}{'macro-F1':>10}{'trainable params':>18}",
                  f"{m['approach']:<16}{t['accuracy']:>10.3f}{t['macro_f1']:>10.3f}{m['trainable_parameters']:>18,}",
                  f"{'majority class':<16}{b['accuracy']:>10.3f}{b['macro_f1']:>10.3f}{0:>18}"]
    report = data_dir / "exports" / "report.md"
    if report.exists():
        lines += ["", f"data card: {report}"]
    return "\n".join(lines)


def run(data_dir: str | None) -> int:
    if data_dir:
        os.environ["FINETUNE_DATA_DIR"] = str(Path(data_dir).resolve())
    from dagster import DagsterInstance

    from finetune_pipeline.definitions import defs
    from finetune_pipeline.settings import resolve_data_dir

    root = resolve_data_dir()
    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # step progress, not debug chatter
    result = defs.resolve_job_def("refresh_all").execute_in_process(instance=instance, raise_on_error=False,
                                                               run_config=run_config)
    print(_summary(root))
    failed_checks = [e.asset_check_evaluation_data for e in result.all_events
                     if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed]
    for evaluation in failed_checks:
        print(f"\nFAILED CHECK {evaluation.check_name} on {evaluation.asset_key.to_user_string()}: "
              f"{evaluation.description}", file=sys.stderr)
    if not result.success or failed_checks:
        failures = [e for e in result.all_events if e.is_step_failure]
        for event in failures:
            print(f"\nFAILED STEP {event.step_key}: {event.step_failure_data.error.message.strip()}", file=sys.stderr)
        print("\nrun did not complete: see the failures above", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="materialize every asset on the data root and print a summary")
    run_parser.add_argument("--data-dir", help="data root (default: $FINETUNE_DATA_DIR or data/)")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.data_dir)
    return 2


if __name__ == "__main__":
    sys.exit(main())
