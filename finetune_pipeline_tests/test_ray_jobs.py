"""`execution.ray_jobs`: what needs no cluster (the settings' rules, the job API's address, the job spec).
The job itself runs against a real cluster in test_ray_backend.py
(`test_a_ray_job_stage_outlives_its_killed_dagster_run_and_the_next_run_waits_for_it`)."""

import json

import dagster as dg
import pytest
from pydantic import ValidationError

from finetune_pipeline import ray_job
from finetune_pipeline.defs.ray_jobs import job_api_address
from finetune_pipeline.settings import ExecutionSettings


def test_ray_jobs_need_the_ray_backend_streaming_and_a_known_stage():
    assert ExecutionSettings(backend="ray", ray_jobs=["cleaned_corpus"]).ray_jobs == ["cleaned_corpus"]
    with pytest.raises(ValidationError, match="need backend: ray and streaming: true"):
        ExecutionSettings(ray_jobs=["cleaned_corpus"])
    with pytest.raises(ValidationError, match="need backend: ray and streaming: true"):
        ExecutionSettings(backend="ray", streaming=False, ray_jobs=["cleaned_corpus"])
    with pytest.raises(ValidationError, match="cleaned_corpus"):  # the stages that can: named in the error
        ExecutionSettings(backend="ray", ray_jobs=["labeled_corpus"])


def test_the_job_api_is_port_8265_on_the_clusters_host_unless_named(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    jobs = {"backend": "ray", "ray_jobs": ["cleaned_corpus"]}
    assert job_api_address(ExecutionSettings(**jobs, ray_address="10.0.0.5:6379")) == "http://10.0.0.5:8265"
    assert job_api_address(ExecutionSettings(**jobs, ray_address="ray://head.svc:10001")) == "http://head.svc:8265"
    assert job_api_address(ExecutionSettings(**jobs, ray_address="10.0.0.5:6379",
                                             ray_job_address="https://ray.example:443")) == "https://ray.example:443"
    monkeypatch.setenv("RAY_ADDRESS", "192.168.1.9:6379")
    assert job_api_address(ExecutionSettings(**jobs)) == "http://192.168.1.9:8265"
    monkeypatch.delenv("RAY_ADDRESS")
    # a cluster started for the run dies with it: a job needs one started apart, and the error says how
    with pytest.raises(dg.Failure, match="ray start --head") as refused:
        job_api_address(ExecutionSettings(**jobs))
    assert "execution.ray_address" in refused.value.description and "ray_jobs" in refused.value.description


def test_the_job_spec_round_trips_and_names_only_stages_that_can_run_as_jobs(tmp_path):
    spec = ray_job.JobSpec(stage="cleaned_corpus", data_dir=str(tmp_path), settings={"task": "classification"},
                           source="/data/.pipeline/assets/raw_corpus", kept_location="/k", rejects_location="/r",
                           cache_file=None)
    path = ray_job.write_spec(tmp_path / "jobs" / "spec.json", spec)
    assert ray_job.read_spec(path) == spec
    path.write_text(json.dumps({**json.loads(path.read_text()), "stage": "dataset_splits"}))
    with pytest.raises(ValueError, match="cannot run as a Ray job; one of cleaned_corpus"):
        ray_job.read_spec(path)
    assert ray_job.main([]) == 2  # usage


def test_a_job_api_that_does_not_answer_fails_the_step_with_the_address_and_what_to_do(tmp_path):
    from finetune_pipeline.defs.ray_jobs import run_as_ray_job
    from finetune_pipeline.defs.resources import PipelineResource

    pipeline = PipelineResource(data_dir=str(tmp_path), settings_yaml=(
        "execution: {backend: ray, ray_address: '127.0.0.1:1', ray_jobs: [cleaned_corpus], "
        "ray_job_address: 'http://127.0.0.1:1'}"))
    with dg.build_asset_context() as context, pytest.raises(dg.Failure) as refused:
        run_as_ray_job(context, pipeline, "cleaned_corpus", None, tmp_path / "kept", tmp_path / "rejected", None)
    message = refused.value.description
    assert "http://127.0.0.1:1 cannot be reached" in message and "ray start --head" in message
    assert "take cleaned_corpus out of execution.ray_jobs" in message
    assert not (tmp_path / ".pipeline" / "jobs").exists() or not list((tmp_path / ".pipeline" / "jobs").iterdir())


def test_a_failed_job_fails_the_step_with_the_end_of_its_log_and_leaves_no_spec(tmp_path, monkeypatch):
    from dagster_ray.core.pipes import PipesRayJobClient

    from finetune_pipeline.defs import ray_jobs
    from finetune_pipeline.defs.resources import PipelineResource
    from finetune_pipeline.shards import write_dataset

    import polars as pl

    traceback = [f"  frame {i}" for i in range(40)] + ["ValueError: a shard is damaged"]
    message = "[pipes] Ray job pipes-abc failed with status FAILED. Message:\n" + "\n".join(traceback)

    def failing_run(self, *, context, submit_job_params, extras=None):
        spec = submit_job_params["entrypoint"].rsplit(" ", 1)[-1]
        assert ray_job.read_spec(spec).stage == "cleaned_corpus"  # written before the submission
        raise RuntimeError(message)

    monkeypatch.setattr(PipesRayJobClient, "client", None)  # no job API: no earlier job to wait for
    monkeypatch.setattr(ray_jobs, "_running_jobs", lambda client, data_dir, stage: [])
    monkeypatch.setattr(PipesRayJobClient, "run", failing_run)
    write_dataset(pl.DataFrame({"record_id": ["a"]}), tmp_path / "raw")
    from finetune_pipeline.shards import open_dataset

    pipeline = PipelineResource(data_dir=str(tmp_path), settings_yaml=(
        "execution: {backend: ray, ray_address: '127.0.0.1:1', ray_jobs: [cleaned_corpus]}"))
    with dg.build_asset_context() as context, pytest.raises(dg.Failure) as refused:
        ray_jobs.run_as_ray_job(context, pipeline, "cleaned_corpus", open_dataset(tmp_path / "raw"),
                                tmp_path / "kept", tmp_path / "rejected", None)
    text = refused.value.description
    assert "the Ray job failed; the previous cleaned_corpus stays as it was" in text
    assert "pipes-abc failed with status FAILED" in text and "ValueError: a shard is damaged" in text
    assert "frame 0" not in text and "..." in text  # the log's end, not all of it
    assert "ray job logs" in text and "http://127.0.0.1:8265" in text
    assert not list((tmp_path / ".pipeline" / "jobs").glob("*.json"))  # the spec goes with the failed job
    assert ray_jobs.log_excerpt("status only") == "status only"
