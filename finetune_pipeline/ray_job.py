"""A stage run as a Ray job (`execution.ray_jobs`): the job's driver runs on the cluster's head node, not in
the Dagster step process, so a Dagster restart (or a killed step) does not stop it, and what it writes is
committed by the job itself: complete or absent, as on every path.

Which stage, and why: `cleaned_corpus`, the longest (Presidio over every record: about 300 records/s per
core, hours at a few million records) and the one whose work is safe to finish unattended, since its output
and its cleaning cache are committed atomically; a run that starts after a restart finds the job (or its
cache) and does not clean the same records again. The stages after it decide over the whole corpus and take
minutes, and collection reads the data root's files, which a job on a remote head may not see.

The step writes a job spec (a JSON file under the data root's .pipeline/jobs/: the input and output locations,
the settings it runs with, the cache file; the job deletes it once read) and submits `python -m finetune_pipeline.ray_job SPEC` through
dagster-ray's Pipes client (finetune_pipeline/defs/ray_jobs.py). The job connects to its cluster, runs the
stage dataset to dataset (streaming.clean_dataset_on_ray: every batch on the workers), reports progress as
Pipes log lines and its statistics as the materialization's metadata (counts only, never text), and exits.
The erasure requests are read from the data root by the job, never sent through the job's environment (the
subjects are personal data; a Ray job's environment is shown in the Ray dashboard)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from finetune_pipeline.atomic import atomic_path

JOB_STAGES = ("cleaned_corpus",)
RESULT_KEY = "stage_result"  # the materialization metadata entry that carries the statistics back


@dataclass
class JobSpec:
    stage: str
    data_dir: str
    settings: dict  # Settings.model_dump(mode="json"): what the run uses, run-config overrides included
    source: str  # the input dataset's location
    kept_location: str
    rejects_location: str
    cache_file: str | None


def write_spec(path: Path, spec: JobSpec) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(asdict(spec), indent=1), encoding="utf-8")
    return path


def read_spec(path: str | Path) -> JobSpec:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("stage") not in JOB_STAGES:
        raise ValueError(f"{path}: stage {data.get('stage')!r} cannot run as a Ray job; one of {', '.join(JOB_STAGES)}")
    return JobSpec(**data)


def run_stage(spec: JobSpec, log=print) -> dict:
    """Run the spec's stage here (the job's driver) on the cluster; returns its statistics as JSON values:
    `{"stats": CleaningStats.to_dict(), "reuse": CleaningCacheReport.to_dict()}`."""
    import ray

    from finetune_pipeline.cleaning.erasure import load_erasure_requests
    from finetune_pipeline.execution import connect, ray_address
    from finetune_pipeline.settings import Settings
    from finetune_pipeline.shards import open_dataset
    from finetune_pipeline.streaming import clean_dataset_on_ray

    settings = Settings.model_validate(spec.settings)
    # the job's own runtime env (this package and the environment, set at submission) applies to its tasks:
    # connected without another one, then connect() finds the connection and sets Ray Data's options
    ray.init(address=ray_address(settings.execution) or "auto", log_to_driver=True, configure_logging=False)
    connect(settings.execution)
    source = open_dataset(spec.source)
    requests = load_erasure_requests(spec.data_dir)
    log(f"{spec.stage}: {source.rows} rows in {len(source.manifest.shards)} shards, cleaned on the cluster")
    stats, reuse = clean_dataset_on_ray(
        source, settings, requests, spec.kept_location, spec.rejects_location,
        cache_file=Path(spec.cache_file) if spec.cache_file else None,
        progress=lambda done, total: log(f"{spec.stage}: {done}/{total} batches done"))
    log(f"{spec.stage}: committed {open_dataset(spec.kept_location).rows} kept rows and "
        f"{open_dataset(spec.rejects_location).rows} rejects")
    return {"stats": stats.to_dict(), "reuse": reuse.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """The job's entrypoint: `python -m finetune_pipeline.ray_job SPEC`. Under Dagster (Pipes' environment
    set by the submitting step) progress goes to the step's log and the statistics come back as metadata;
    run by hand it prints them."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m finetune_pipeline.ray_job SPEC.json", file=sys.stderr)
        return 2
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    spec = read_spec(argv[0])
    Path(argv[0]).unlink(missing_ok=True)  # read once: the settings it holds do not stay behind

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        print(json.dumps(run_stage(spec)))
        return 0
    with open_dagster_pipes() as pipes:
        result = run_stage(spec, log=pipes.log.info)
        pipes.report_asset_materialization(metadata={RESULT_KEY: {"raw_value": result, "type": "json"}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
