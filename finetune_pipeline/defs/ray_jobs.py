"""A stage submitted as a Ray job (`execution.ray_jobs`; the job's side is finetune_pipeline/ray_job.py, which
says which stages can and why) through dagster-ray's Pipes client: the job's log lines and statistics come
back into the step, and the step goes on as if it had run the stage itself (the datasets are committed).

The client does not forward a termination: a Dagster restart, or a step killed or cancelled, leaves the job
running on the cluster, where it finishes and commits. A later run of the stage first waits for a job still
running on the same data root, then submits its own (which reuses the cleaning cache the first one wrote);
`ray job stop ID` stops a job (its id is in the step's log and in the asset's metadata)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg

from finetune_pipeline import execution, ray_job
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.settings import ExecutionSettings

JOB_API_PORT = 8265  # `ray start --head`'s dashboard (the job API) by default
JOB_LOG_LINES = 15  # of a failed job's log, in the step's failure (the traceback's end)


def job_api_address(settings: ExecutionSettings) -> str:
    """The cluster's job API: `execution.ray_job_address`, else port 8265 on `ray_address`'s host."""
    if settings.ray_job_address:
        return settings.ray_job_address
    address = execution.ray_address(settings)
    if not address:
        raise dg.Failure(description=(
            "execution.ray_jobs runs stages as Ray jobs, which must outlive the Dagster run: they need a cluster "
            "started apart from it. Start one (`ray start --head --dashboard-host 127.0.0.1`) and set "
            "execution.ray_address (or $RAY_ADDRESS) to it, or empty execution.ray_jobs in finetune.yaml."))
    host = urlparse(address if "://" in address else f"ray://{address}").hostname or "127.0.0.1"
    return f"http://{host}:{JOB_API_PORT}"


def log_excerpt(message: str, lines: int = JOB_LOG_LINES) -> str:
    """dagster-ray's error for a failed job: its status line, then up to 20,000 characters of the job's log;
    kept: the status line and the log's last `lines` lines (the traceback's end)."""
    first, *log = message.splitlines() or [""]
    return "\n".join([first, *(["..."] if len(log) > lines else []), *log[-lines:]])


def _running_jobs(client, data_dir: str, stage: str) -> list:
    return [job for job in client.list_jobs()
            if (job.metadata or {}).get("finetune.stage") == stage
            and (job.metadata or {}).get("finetune.data_root") == data_dir and not job.status.is_terminal()]


def run_as_ray_job(context: dg.AssetExecutionContext, pipeline: PipelineResource, stage: str, source,
                   kept_location: Path, rejects_location: Path, cache_file: Path | None) -> tuple[dict, str, str]:
    """Run `stage` as a Ray job on the configured cluster and wait for it. Returns the job's result (see
    `ray_job.run_stage`), the job's id and the job API's address. Fails the step, naming the job, the cause
    and what to do, when the job API cannot be reached or the job fails."""
    from dagster_ray.core.pipes import PipesRayJobClient

    settings = pipeline.settings()
    api = job_api_address(settings.execution)
    root = pipeline.data_root()
    data_dir = str(root.path.resolve())
    client = PipesRayJobClient(address=api, forward_termination=False, poll_interval=1.0)
    try:
        earlier = _running_jobs(client.client, data_dir, stage)
        while earlier:  # e.g. submitted by a run that Dagster lost in a restart: it writes the same datasets
            context.log.info(f"{stage}: Ray job {earlier[0].submission_id} of an earlier run is still running on "
                             f"this data root; waiting for it to finish first")
            time.sleep(2.0)
            earlier = _running_jobs(client.client, data_dir, stage)
    except (OSError, RuntimeError) as exc:  # requests' ConnectionError is an OSError
        raise dg.Failure(description=(
            f"{stage}: the Ray job API at {api} cannot be reached ({type(exc).__name__}: {exc}). Start the head "
            f"with its dashboard (`ray start --head --dashboard-host 127.0.0.1`), set execution.ray_job_address "
            f"to its address, or take {stage} out of execution.ray_jobs to run it from the step.")) from None
    # on the data root, which the job reads too (its erasure requests): a job needs to see it
    spec_path = ray_job.write_spec(root.path / ".pipeline" / "jobs" / f"{stage}-{context.run_id}.json",
                                   ray_job.JobSpec(stage=stage, data_dir=data_dir,
                                                   settings=settings.model_dump(mode="json"),
                                                   source=str(source.location), kept_location=str(kept_location),
                                                   rejects_location=str(rejects_location),
                                                   cache_file=str(cache_file) if cache_file else None))
    python = settings.execution.ray_job_python or sys.executable
    # the package's folder, uploaded by the job client (the job runs this step's code), and the offline flags and
    # the like (no secrets): what every connection ships
    runtime_env = execution.ray_init_options()["runtime_env"]
    try:
        invocation = client.run(context=context, submit_job_params={
            "entrypoint": f"{shlex.quote(python)} -m finetune_pipeline.ray_job {shlex.quote(str(spec_path))}",
            "runtime_env": runtime_env,
            "metadata": {"finetune.stage": stage, "finetune.data_root": data_dir, "dagster.run_id": context.run_id},
        })
    except RuntimeError as exc:  # the job failed or was stopped: Ray's message names the error
        spec_path.unlink(missing_ok=True)  # the job removes it once read; not when it never started
        raise dg.Failure(description=(
            f"{stage}: the Ray job failed; the previous {stage} stays as it was. {log_excerpt(str(exc))}\n"
            f"Its whole log: `ray job logs <job id in the step's log> --address {api}`. Fix the cause and run again, or take "
            f"{stage} out of execution.ray_jobs to run it from the step.")) from None
    except OSError as exc:  # the job API stopped answering (requests' errors are OSErrors)
        raise dg.Failure(description=(
            f"{stage}: the Ray job API at {api} stopped answering while the job ran ({type(exc).__name__}: {exc}). "
            f"The job may still be running on the cluster: `ray job list --address {api}` once the head answers; "
            f"run again then: the next run waits for it and reuses what it cleaned.")) from None
    job_id = invocation.metadata["Ray Job ID"]
    reported = invocation.get_materialize_result().metadata[ray_job.RESULT_KEY]
    return reported.value, getattr(job_id, "value", job_id), api
