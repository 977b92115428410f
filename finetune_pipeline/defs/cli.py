"""Command line: `finetune-pipeline run` materializes every asset headless (or `--select`ed ones) and prints a
summary, refusing before any step a selection that reads a failed blocking check (a failed check prints its cause,
the records and what to do); `finetune-pipeline explain RECORD_ID` tells what every stage did to one record;
`finetune-pipeline build-base-model` builds an instruction root's small local base model when finetune.yaml
asks for it and it is missing (`make run` calls it first); `finetune-pipeline adapters list|show|merge` reads
the adapters registry (models/registry.json); `finetune-pipeline versions` lists the kept versions of the splits
and adapters and `finetune-pipeline rollback VERSION` makes one current again."""

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import CORPUS_STAGES
from finetune_pipeline.reporting import domain_summary, evaluation_text, reject_share_summary


def _summary(root: DataRoot, failed_steps: frozenset[str] = frozenset()) -> str:
    """Rows per stage, rejects per reason, split sizes, where the exports and adapters are, the evaluation.
    `failed_steps`: steps that failed in this run, whose stored statistics are an earlier run's."""
    lines = ["", "== finetune-pipeline summary ==", f"data root: {root.path}", ""]
    counts = PipelineResource(data_dir=str(root.path)).stage_counts()
    lines += _table(("stage", "in", "out", "rejected", "added"),
                    [(c["stage"], c["rows_in"], c["rows_out"], c["rows_rejected"], c["augmented"]) for c in counts])
    if len(counts) < len(CORPUS_STAGES):
        lines.append(f"({len(CORPUS_STAGES) - len(counts)} stage(s) not materialized)")
    recognised = PipelineResource(data_dir=str(root.path)).stage_stats("raw_corpus").get("recognised_columns", [])
    if recognised:
        lines += ["", "columns recognised (not configured):", *(f"  {note}" for note in recognised)]
    lines += reject_share_summary(root, counts)
    dedup = PipelineResource(data_dir=str(root.path)).stage_stats("deduplicated_corpus")
    if "deduplicated_corpus" in failed_steps:  # the stored statistics are an earlier run's
        lines += ["", "domain filter: deduplicated_corpus failed in this run (see FAILED STEP below)"]
    elif dedup:
        from finetune_pipeline.dedup import DedupStats

        lines += ["", "domain filter: " + domain_summary(DedupStats.from_dict(dedup).domain)]
    if root.rejects_export.exists():
        import polars as pl

        frame = pl.read_parquet(root.rejects_export)
        lines += ["", "rejects by stage and reason:"]
        lines += ["  " + line for line in _table(
            ("stage", "reason", "records"), frame.group_by("stage", "reason").len().sort("stage", "reason").rows())]
    if root.splits_export.exists():
        sizes = {p.stem: sum(1 for _ in p.open()) for p in sorted(root.splits_export.glob("*.jsonl"))}
        lines += ["", "splits: " + ", ".join(f"{k} {v}" for k, v in sizes.items()), f"exports: {root.exports}"]
    tasks = root.review / "tasks.json"
    if tasks.exists():
        lines.append(f"review queue: {len(json.loads(tasks.read_text()))} Label Studio task(s) in {tasks}")
    for metrics_path in sorted(root.models.glob("*/metrics.json")):
        lines += [f"adapter: {metrics_path.parent}", "", evaluation_text(json.loads(metrics_path.read_text()))]
    comparison = root.comparison_export("md")
    if comparison.exists():
        lines += ["", "approach comparison (test split):", *comparison.read_text().splitlines()[2:]]
    if root.report.exists():
        lines += ["", f"data card: {root.report}"]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    """`rows` under `header` in columns as wide as their widest value (a million records never runs into the next
    column): words left-aligned, counts right-aligned, two spaces between."""
    cells = [tuple(str(v) for v in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    counts = [bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(header))]
    return ["  ".join(v.rjust(w) if count else v.ljust(w) for v, w, count in zip(row, widths, counts)).rstrip()
            for row in cells]


RUN_HOST_TAG, RUN_PID_TAG = "finetune-pipeline/host", "finetune-pipeline/pid"


def fail_dead_runs(instance) -> list[str]:
    """Mark this host's earlier `finetune-pipeline run`s whose process is gone (killed, power cut) as
    failed and free the concurrency slots they held: otherwise a run killed in `lora_adapter` keeps the
    `gpu` pool's one slot and every later run waits on it forever. Returns the run ids it failed."""
    from dagster import DagsterRunStatus, RunsFilter

    failed = []
    alive = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
    for record in instance.get_run_records(RunsFilter(statuses=list(alive), tags={RUN_HOST_TAG: socket.gethostname()})):
        run = record.dagster_run
        pid = int(run.tags.get(RUN_PID_TAG, "0"))
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        instance.report_run_failed(run, f"its process (pid {pid}) is gone: killed or crashed; marked failed by "
                                        f"the next `finetune-pipeline run`")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


def _job(defs, select: str | None):
    """The refresh_all job, or an asset job of `select` (Dagster's asset selection syntax)."""
    import dagster as dg

    if not select:
        return defs.resolve_job_def("refresh_all")
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("selected", selection=select)])) \
        .resolve_job_def("selected")


def run(data_dir: str | None, select: str | None = None, instance=None) -> int:
    """Materialize every asset (or the `select`ed ones, with their checks) and print the summary; refuse,
    before any step runs, a selection that would build on a failed blocking check."""
    from dagster import DagsterInstance

    from finetune_pipeline.definitions import definitions_for
    from finetune_pipeline.defs.run_gate import failed_gates, job_asset_keys, refusal
    from finetune_pipeline.settings import SettingsError, load_settings

    root = DataRoot.resolve(data_dir)
    from finetune_pipeline.tasks import task_for

    try:  # a bad finetune.yaml stops here, before any stage runs or writes
        task_for(load_settings(root))
    except SettingsError as err:
        print(f"{err}\nfix finetune.yaml and run again; nothing was run or written", file=sys.stderr)
        return 2
    if instance is None:
        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    for run_id in fail_dead_runs(instance):
        print(f"run {run_id} was killed before it finished: marked failed, its concurrency slots freed",
              file=sys.stderr)
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # step progress, not debug chatter
    tags = {RUN_HOST_TAG: socket.gethostname(), RUN_PID_TAG: str(os.getpid())}
    defs = definitions_for(root)
    try:
        job = _job(defs, select)
    except Exception as err:  # an unknown asset or a selection that does not parse
        while err.__cause__ or err.__context__:  # Dagster wraps the reason (e.g. the unknown key)
            err = err.__cause__ or err.__context__
        print(f"--select {select!r}: {err}\nname assets as in the UI, e.g. --select published_splits; "
              "nothing was run", file=sys.stderr)
        return 2
    if failed := failed_gates(instance, defs.resolve_asset_graph(), job_asset_keys(job)):
        print(f"run refused before it started: {refusal(failed)}", file=sys.stderr)
        return 1
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config, tags=tags)
    print(_summary(root, frozenset(e.step_key for e in result.all_events if e.is_step_failure)))
    not_passed = [e.asset_check_evaluation_data for e in result.all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed]
    from dagster import AssetCheckSeverity

    failed_checks = [ev for ev in not_passed if ev.severity != AssetCheckSeverity.WARN]
    for evaluation in not_passed:
        kind = "FAILED CHECK" if evaluation in failed_checks else "WARNING"
        print(f"\n{kind} {evaluation.check_name} on {evaluation.asset_key.to_user_string()}: "
              f"{evaluation.description}", file=sys.stderr)
        if evaluation in failed_checks:
            print(refusal_text(evaluation.metadata), file=sys.stderr)
    if not result.success or failed_checks:
        # a step failed by its own blocking check is reported by the FAILED CHECK lines above
        failures = [e for e in result.all_events if e.is_step_failure
                    and e.step_failure_data.error.cls_name != "DagsterAssetCheckFailedError"]
        for event in failures:
            print(f"\nFAILED STEP {event.step_key}: {_failure_text(event.step_failure_data)}", file=sys.stderr)
        print("\nrun did not complete: see the failures above", file=sys.stderr)
        return 1
    return 0


def _failure_text(data) -> str:
    """A failed step's reason: a stage's own dg.Failure description (e.g. the domain filter's guard) as it
    wrote it, else the innermost error's message, without Dagster's class-name prefix."""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description.strip()
    error = data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()  # "ValueError: ..." (traceback.format_exception_only)


def refusal_text(metadata: dict) -> str:
    """A failed check's cause, records and remedies (gates.Refusal, from its metadata) as indented lines."""
    values = {key: getattr(value, "value", value) for key, value in metadata.items()}
    lines = []
    if values.get("cause"):
        lines.append(f"  cause: {values['cause']}")
    if values.get("records"):
        total = values.get("records_concerned")
        lines.append(f"  records ({total} in all; record_id, source file, locator):" if total else "  records:")
        for row in str(values["records"]).splitlines()[2:]:  # the markdown table, without its header
            cells = [c.strip() or "-" for c in row.strip().strip("|").split("|")]
            lines.append("    " + "  ".join(cells))
    if values.get("remedies"):
        lines.append("  what to do:")
        lines += [f"    {line}" for line in str(values["remedies"]).splitlines()]
    return "\n".join(lines)


def explain_command(data_dir: str | None, record: str) -> int:
    """Print what every stage did to one record (`finetune_pipeline.explain`)."""
    from finetune_pipeline.explain import ExplainError, explain

    try:
        print("\n".join(explain(DataRoot.resolve(data_dir), record)))
    except ExplainError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def build_base_model(data_dir: str | None) -> int:
    """Build the instruction base model when `training.build_base_model.enabled` and its folder is missing;
    fail clearly when a named local model folder is missing; nothing for classification roots."""
    from finetune_pipeline.settings import SettingsError, load_settings
    from finetune_pipeline.training.tiny_lm import BaseModelMissing, ensure_base_model

    root = DataRoot.resolve(data_dir)
    try:
        ensure_base_model(root, load_settings(root))
    except SettingsError as err:
        print(f"{err}\nfix finetune.yaml and run again", file=sys.stderr)
        return 2
    except BaseModelMissing as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def adapters_command(args) -> int:
    """List, show or merge registered adapters; the registry module does the work."""
    from finetune_pipeline.training import registry

    root = DataRoot.resolve(args.data_dir)
    models = root.models
    try:
        if args.adapters_command == "list":
            entries = registry.list_adapters(models)
            if not entries:
                print(f"no adapters registered in {root.registry}")
            for e in entries:
                scores = ", ".join(f"{k} {v:.3f}" for k, v in e["metrics"].items())
                print(f"{e['task']:<20}{e['approach']:<13}{e['created']:<27}{e['data_snapshot']:<18}{scores}")
                print(f"{'':<20}base {e['base_model']}; path {registry.adapter_path(models, e)}")
        elif args.adapters_command == "show":
            entry = registry.get(models, args.task)
            print(json.dumps({**entry, "absolute_path": str(registry.adapter_path(models, entry))}, indent=2))
        elif args.adapters_command == "merge":
            out = registry.merge(models, args.task, Path(args.out_dir))
            print(f"merged {args.task} into its base model: {out} (safetensors; load with transformers, no PEFT)")
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 1
    return 0


def versions_command(data_dir: str | None) -> int:
    """Every kept version of the splits and of each adapter, oldest first; `*` marks the current one."""
    from finetune_pipeline import versions

    root = DataRoot.resolve(data_dir)
    rows = versions.every_version(root)
    if not rows:
        print(f"no versions kept under {root.exports / 'versions'} or {root.models / 'versions'}: nothing "
              "published yet")
        return 0
    print(f"  {'kind':<9}{'name':<16}{'version':<27}{'published':<27}{'digest':<18}{'run id':<38}trained on")
    for v, is_current in rows:
        print(f"{'*' if is_current else ' '} {v.kind:<9}{v.name:<16}{v.version:<27}{v.published:<27}"
              f"{v.digest[:16]:<18}{v.run_id:<38}{v.dataset_version or ('-' if v.kind == versions.SPLITS else 'none')}"
              + (f"  (records erased by {', '.join(v.erased_requests)})" if v.erased_requests else ""))
    return 0


def rollback_command(data_dir: str | None, version: str, kind: str | None) -> int:
    """Make a kept version current again (`versions.rollback`: one atomic swap)."""
    from finetune_pipeline import versions

    root = DataRoot.resolve(data_dir)
    try:
        chosen = versions.find(root, version, kind)
        before = versions.current(root, chosen.kind, chosen.name)
        versions.rollback(root, chosen.version, chosen.kind)
    except versions.VersionError as err:
        print(err, file=sys.stderr)
        return 1
    where = versions.published_path(root, chosen.kind, chosen.name)
    print(f"{chosen.kind} {chosen.name}: {chosen.version} is current (was {before or 'none'}); {where} names it")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="materialize every asset on the data root and print a summary")
    run_parser.add_argument("--data-dir", help="data root (default: $FINETUNE_DATA_DIR or data/)")
    run_parser.add_argument("--select", help="only these assets, with their checks, in Dagster's asset selection "
                            "syntax (e.g. published_splits, '+dataset_splits'); refused before it starts when it "
                            "would build on a failed blocking check")
    explain = sub.add_parser("explain", help="what every stage did to one record and why (from the stored stage "
                             "values; the redacted text only, never the original)")
    explain.add_argument("record_id", help="a record id, or its first characters when they are unique")
    explain.add_argument("--data-dir", help="data root (default: $FINETUNE_DATA_DIR or data/)")
    build = sub.add_parser("build-base-model", help="build the instruction base model finetune.yaml asks for "
                           "(training.build_base_model) when it is missing; does nothing otherwise")
    build.add_argument("--data-dir", help="data root (default: $FINETUNE_DATA_DIR or data/)")
    adapters = sub.add_parser("adapters", help="the adapters registry: list, show, merge")
    adapters.add_argument("--data-dir", help="data root (default: $FINETUNE_DATA_DIR or data/)")
    adapters_sub = adapters.add_subparsers(dest="adapters_command", required=True)
    adapters_sub.add_parser("list", help="every registered adapter: task, approach, created, data snapshot, metrics")
    show = adapters_sub.add_parser("show", help="one task's registry entry as JSON")
    show.add_argument("task")
    merge = adapters_sub.add_parser("merge", help="merge a task's adapter into its base model and save it")
    merge.add_argument("task")
    merge.add_argument("out_dir")
    listing = sub.add_parser("versions", help="every kept version of the splits and adapters: kind, name, "
                             "version, time, content digest, run id, the dataset version an adapter was trained on; "
                             "* marks the current one")
    listing.add_argument("--data-dir", help="data root (default: $FINETUNE_DATA_DIR or data/)")
    back = sub.add_parser("rollback", help="make a kept version (of the splits or an adapter) current again, "
                          "atomically")
    back.add_argument("version", help="a version as `versions` lists it, or its first characters when unique")
    back.add_argument("--kind", choices=["splits", "adapter"], help="when the name matches both kinds")
    back.add_argument("--data-dir", help="data root (default: $FINETUNE_DATA_DIR or data/)")
    args = parser.parse_args(argv)
    if args.command == "versions":
        return versions_command(args.data_dir)
    if args.command == "rollback":
        return rollback_command(args.data_dir, args.version, args.kind)
    if args.command == "run":
        return run(args.data_dir, args.select)
    if args.command == "explain":
        return explain_command(args.data_dir, args.record_id)
    if args.command == "build-base-model":
        return build_base_model(args.data_dir)
    if args.command == "adapters":
        return adapters_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
