"""Training: `lora_adapter` (the task's adapter) and `approach_comparison` (every configured approach on the
same splits), in the `gpu` pool of size one, with their blocking checks. Both write their models and exports
to staging; `published_adapter` (models/<adapter_name>/ and its registry entry) and `published_comparison`
replace the published ones only after the checks passed. The task decides the approaches, the columns, the
labels and the baseline."""


import time

import dagster as dg
import polars as pl

from finetune_pipeline import atomic, exports, incremental, reporting, versions
from finetune_pipeline import validation as v
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import Refusal, check_specs, checked, gate, require_upstream_checks, suite_result
from finetune_pipeline.defs.metadata import settings_used
from finetune_pipeline.defs.resources import ExperimentTracking, PipelineResource
from finetune_pipeline.splits import cross_validation_folds
from finetune_pipeline.tasks import task_for, task_named
from finetune_pipeline.tracking import comparison_arms, training_key
from finetune_pipeline.training.results import ComparisonResult, TrainingResult


TRAINING_CODE = incremental.code_version(incremental.TRAINING_CODE, incremental.TRAINING_PACKAGES)


@gate("lora_adapter", "lora_adapter_beats_baseline",
      "No NaN training loss, the test metric beats the baseline (accuracy above the majority class for "
      "classification, response-token loss below the untuned base model's for instruction), and the "
      "headline test metric reaches checks.adapter_floor when one is set.")
def lora_adapter_beats_baseline(pipeline: PipelineResource, current: dict) -> dg.AssetCheckResult:
    settings, root = pipeline.settings(), pipeline.data_root()
    current = TrainingResult.from_dict(current)
    frame, expectations, scores = task_named(current.task).quality_gate(current, settings.checks.adapter_floor)
    candidate = root.staged(root.adapter(settings.training.adapter_name))
    result = v.validate(frame, "lora_adapter_expectations", expectations)
    refusal = Refusal(
        f"the trained adapter failed its quality gate: {result.summary()}",
        (f"the candidate adapter and its metrics are in {candidate}, for inspection; the published adapter is "
         "unchanged",
         "a NaN loss: lower training.lora.learning_rate (full.learning_rate for full fine-tuning); no gain over the baseline: more or cleaner training records, "
         "more training.epochs, or another training.base_model",
         "an adapter below checks.adapter_floor: lower the floor in finetune.yaml if it asks too much"))
    return suite_result(result, refusal=refusal,
                        extra={**scores, "candidate": dg.MetadataValue.path(str(candidate))})


@gate("approach_comparison", "approach_comparison_complete",
      "Every configured approach has a row with a finite test metric (macro-F1, or perplexity for "
      "instruction tasks), no NaN loss and its trainable parameters.")
def approach_comparison_complete(pipeline: PipelineResource, current: dict) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    task, rows = task_for(settings), ComparisonResult.from_dict(current).rows
    frame = pl.DataFrame({
        "approach": [r.approach for r in rows],
        "test_metric": [task.comparison_value(r) for r in rows],
        "nan_loss": [r.nan_loss for r in rows],
        "trainable_parameters": [r.trainable_parameters for r in rows],
    }, schema={"approach": pl.String, "test_metric": pl.Float64, "nan_loss": pl.Boolean,
               "trainable_parameters": pl.Int64})
    expectations = v.comparison_expectations(task.approaches(settings.training))
    result = v.validate(frame, "approach_comparison_expectations", expectations)
    refusal = Refusal(f"an approach of the comparison has no row, no finite test metric, a NaN loss or no trainable "
                      f"parameters: {result.summary()}",
                      ("read that approach's training log in the run (a NaN loss: lower the approach's learning rate, e.g. training.lora.learning_rate)",
                       "or take the approach out of training.compare in finetune.yaml"))
    return suite_result(result, refusal=refusal, extra={"approaches": ", ".join(r.approach for r in rows)})


@dg.asset(group_name="training", kinds={"pytorch", "peft"}, owners=OWNERS, pool="gpu", code_version=TRAINING_CODE,
          check_specs=check_specs("lora_adapter"),
          description="The task's adapter, trained on the train split with early stopping on validation and "
                      "evaluated on test: PEFT LoRA on the base encoder for sequence classification (the head saved "
                      "with it), or LoRA on `training.instruction.base_model` for instruction tasks (chat template, loss on "
                      "responses only, packing). Resumes from its checkpoint after a killed run. Saved as "
                      "safetensors with the tokenizer, metrics.json and a model card under "
                      ".pipeline/staging/models/<adapter_name>/, the candidate published_adapter publishes.")
def lora_adapter(context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking,
                 dataset_splits: pl.DataFrame):
    require_upstream_checks(context, "dataset_splits")
    settings, root = pipeline.settings(), pipeline.data_root()
    task, cfg = task_for(settings), settings.training
    snapshot = exports.content_digest(dataset_splits)
    output = root.staged(root.adapter(cfg.adapter_name))
    approach, labels = task.trained_approach(cfg), task.labels(dataset_splits, settings)
    key = incremental.training_key(approach, task.name, cfg.model_dump(), labels, snapshot)
    stored = incremental.reusable(output, key) if settings.execution.incremental else None
    reused = stored is not None
    if reused:
        context.log.info(f"lora_adapter: data snapshot {snapshot} and training settings unchanged; "
                         "the candidate trained on them is kept, nothing is trained")
        result = TrainingResult.from_dict(stored)
    else:
        from finetune_pipeline.training.compare import run_approach  # torch: only a step that trains pays the import

        incremental.forget(output)
        result = run_approach(approach, task.training_splits(dataset_splits), labels, cfg, output,
                              data_snapshot=snapshot, log=context.log.info, task=task)
        incremental.remember(output, key, result.to_dict())
    tracked = _track(context, tracking, result, key, reused, output)
    context.add_output_metadata({**settings_used(settings, "task", "training"), **_reuse_metadata(reused, key, snapshot),
        "candidate_path": dg.MetadataValue.path(str(output)),
        "evaluation": dg.MetadataValue.md(reporting.evaluation_markdown(result)),
        "epochs_run": result.epochs,  # the feature approach fits once: no epochs
        "resumed_from_epoch": result.resumed_from_epoch or 0,
        "device": result.device,
        "wall_time_s": result.wall_time_s,
        "peak_memory_mb": result.peak_memory_mb,
        "data_snapshot": snapshot,
        **tracking.metadata(tracked),
    }, output_name="result")
    # a kept candidate keeps its data version
    # the step's output stays the JSON-shaped dict (what Dagster stores); readers take it back with from_dict
    yield from checked(context, pipeline, "lora_adapter", dg.Output(result.to_dict(), data_version=dg.DataVersion(key)))


def _track(context, tracking: ExperimentTracking, result: TrainingResult, key: str, reused: bool, model_dir):
    """The MLflow run of the trained adapter: logged after training; a kept candidate links the run that
    trained it (logged now only when the store has none, e.g. tracking was switched on since)."""
    tracker = tracking.tracker(context)
    found = tracker.find(key, "lora_adapter") if reused else None
    return found or tracker.log_training(result, asset="lora_adapter", model_dir=model_dir, tags={
        "finetune.training_key": key, "dagster.run_id": context.run_id})


def _reuse_metadata(reused: bool, key: str, snapshot: str) -> dict:
    """Whether the step trained, and why not when it did not."""
    why = (f"data snapshot {snapshot}, training settings and training code unchanged since the candidate was "
           "made: it is kept" if reused else
           "trained: no candidate made on this data snapshot with these training settings and code")
    return {"trained": not reused, "training_decision": why, "training_key": key}


@dg.asset(group_name="training", kinds={"pytorch", "peft", "sklearn"}, owners=OWNERS, pool="gpu",
          code_version=TRAINING_CODE, check_specs=check_specs("approach_comparison"),
          description="The fine-tuning approaches of `training.compare` (LoRA, full fine-tuning, feature-based: "
                      "frozen embeddings + logistic regression; instruction tuning for instruction tasks) trained "
                      "on the same splits: test accuracy and macro-F1 (or loss and perplexity), trainable "
                      "parameters, wall time and peak memory, as a table and a plot. Written to staging "
                      "(models/comparison/<approach>/, exports/approach_comparison.json/.md/.png under "
                      ".pipeline/staging/); published_comparison publishes them. The approach lora_adapter "
                      "trained is reused from it, not trained twice. With folds (splits.k_folds >= 2, or fewer "
                      "train + validation records than splits.cv_below_records) every approach is also "
                      "cross-validated: mean ± std of the fold metric, LoRA against each approach paired by fold; "
                      "training.lora_search chooses LoRA's settings on those folds first.")
def approach_comparison(context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking,
                        dataset_splits: pl.DataFrame, lora_adapter: dict):
    require_upstream_checks(context, "dataset_splits", "lora_adapter")
    settings, root = pipeline.settings(), pipeline.data_root()
    task = task_for(settings)
    snapshot, labels = exports.content_digest(dataset_splits), task.labels(dataset_splits, settings)
    approaches, folder = task.approaches(settings.training), root.staged(root.comparison_models)
    # the folds come from the split settings (k_folds, cv_below_records, cv_folds): part of the key too
    key = incremental.digest([incremental.training_key(a, task.name, settings.training.model_dump(), labels, snapshot)
                              for a in approaches], settings.splits.model_dump())
    staged_exports = root.staged(root.exports)
    reused = incremental.reusable(folder, key) if settings.execution.incremental else None
    paths = {suffix: staged_exports / f"approach_comparison.{suffix}" for suffix in ("json", "md", "png")}
    if reused is not None and not all(p.exists() for p in paths.values()):
        reused = None  # a staged export went missing: make the comparison again
    if reused is not None:
        result = ComparisonResult.from_dict(reused)
        context.log.info(f"approach_comparison: data snapshot {snapshot} and training settings unchanged; "
                         "the comparison made on them is kept, nothing is trained")
    else:
        from finetune_pipeline.training.compare import compare_approaches, write_comparison  # torch: only here
        from finetune_pipeline.training.cross_validation import fold_splits

        incremental.forget(folder)
        started = time.perf_counter()
        folds = fold_splits(dataset_splits, cross_validation_folds(dataset_splits, settings.splits, task), task)
        trained = TrainingResult.from_dict(lora_adapter)
        result = compare_approaches(task.training_splits(dataset_splits), labels, settings.training, folder,
                                    approaches, data_snapshot=snapshot, log=context.log.info,
                                    trained={trained.approach: trained}, folds=folds)
        result.total_wall_time_s = round(time.perf_counter() - started, 1)
        paths = write_comparison(result, staged_exports)
        incremental.remember(folder, key, result.to_dict())
    tracker = tracking.tracker(context)
    tracked = tracker.find(key, "approach_comparison") if reused is not None else None
    if tracked is None:  # each approach's result and card from its folder; the reused LoRA from lora_adapter
        arms, arm_dirs = comparison_arms(folder, approaches, TrainingResult.from_dict(lora_adapter),
                                         root.staged(root.adapter(settings.training.adapter_name)))
        tracked = tracker.log_comparison(result, asset="approach_comparison", arms=arms, arm_dirs=arm_dirs,
                                         exports=list(paths.values()),
                                         tags={"finetune.training_key": key, "dagster.run_id": context.run_id})
    context.add_output_metadata({**_reuse_metadata(reused is not None, key, snapshot), **tracking.metadata(tracked),
        "comparison": dg.MetadataValue.md(reporting.comparison_markdown(result)),
        "plot": dg.MetadataValue.md(f"![approach comparison]({reporting.png_data_uri(paths['png'].read_bytes())})"),
        "total_wall_time_s": result.total_wall_time_s,
        "device": result.rows[0].device if result.rows else "none",
        "path": dg.MetadataValue.path(str(paths["md"])),
        **_cross_validation_metadata(result),
    }, output_name="result")
    yield from checked(context, pipeline, "approach_comparison",
                       dg.Output(result.to_dict(), data_version=dg.DataVersion(key)))


def _cross_validation_metadata(result: ComparisonResult) -> dict:
    """The mean ± std table over folds, its wall time and LoRA's chosen settings (when searched)."""
    cross = result.cross_validation
    if not cross:
        return {"cross_validation": "off (splits.k_folds < 2 and at least splits.cv_below_records records)"}
    search = cross.lora_search
    return {"cross_validation": dg.MetadataValue.md(reporting.cross_validation_markdown(result)),
            "cross_validation_wall_time_s": cross.wall_time_s,
            "lora_settings_chosen": dg.MetadataValue.json({**search["chosen"], "lora_alpha": search["lora_alpha"]})
            if search else "configured (training.lora_search.enabled: false)"}


@dg.asset(group_name="training", kinds={"peft"}, owners=OWNERS,
          description="The published adapter, versioned: the lora_adapter candidate kept as a new version under "
                      "models/versions/<adapter_name>/<time>-<digest>/ (its card naming the dataset version it "
                      "was trained on), added at the head of its models/registry.json history and made current "
                      "(models/<adapter_name> names it), only after lora_adapter's blocking checks passed; the "
                      "last publish.keep versions are kept. A worse-than-baseline candidate leaves the current "
                      "adapter and the registry as they were.")
def published_adapter(context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking,
                      lora_adapter: dict) -> dict:
    require_upstream_checks(context, "lora_adapter")
    from finetune_pipeline.training import registry  # torch: only the training steps pay the import

    settings, root = pipeline.settings(), pipeline.data_root()
    name = settings.training.adapter_name
    snapshot = TrainingResult.from_dict(lora_adapter).data_snapshot or ""
    dataset_version = versions.find_dataset_version(root, snapshot)

    def register(version: versions.Version) -> None:  # before it is current: the registry lists it first
        if registry.history(root.models, name)[:1] and registry.history(root.models, name)[0].get(
                "version") == version.version:
            return  # an unchanged candidate: its entry heads the history already
        registry.register(root.models, name, versions.versions_dir(root, versions.ADAPTER, name) / version.version
                          / versions.ADAPTER, lora_adapter, version=version.version,
                          dataset_version=version.dataset_version)

    version, new = versions.publish(root, versions.ADAPTER, root.staged(root.adapter(name)), run_id=context.run_id,
                                    keep=settings.publish.keep, name=name, data_snapshot=snapshot,
                                    dataset_version=dataset_version, before_current=register)
    entry = registry.get(root.models, name)
    context.add_output_metadata({"adapter_path": dg.MetadataValue.path(str(root.adapter(name))),
                                 "registry": dg.MetadataValue.path(str(root.registry)),
                                 "data_snapshot": entry["data_snapshot"], "version": version.version,
                                 "new_version": new, "dataset_version": version.dataset_version or "none"})
    context.add_output_metadata(_register(context, tracking, root.adapter(name), entry))
    return entry


def _register(context, tracking: ExperimentTracking, adapter_dir, entry: dict) -> dict:
    """The published adapter as a version of the MLflow registered model (its files logged into the run that
    trained it), tagged with its dataset version, data snapshot and this Dagster run; the metadata naming it."""
    tracker = tracking.tracker(context)
    key = training_key(adapter_dir)
    trained = tracker.find(key, "lora_adapter") if key else None
    registered = tracker.register_adapter(adapter_dir, run=trained, dataset_version=entry.get("dataset_version") or "",
                                          data_snapshot=entry["data_snapshot"], adapter_version=entry.get("version"),
                                          tags={"dagster.run_id": context.run_id})
    if registered is None:
        return tracking.metadata(None)
    run, version = registered
    return {**tracking.metadata(run), "mlflow_model": tracker.registered_model, "mlflow_model_version": version}


@dg.asset(group_name="training", kinds={"pytorch"}, owners=OWNERS, deps=["approach_comparison"],
          description="The published comparison: models/comparison/ and exports/approach_comparison.json/.md/.png "
                      "replaced by approach_comparison's candidates only after its blocking check passed.")
def published_comparison(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dict:
    require_upstream_checks(context, "approach_comparison")
    root = pipeline.data_root()
    atomic.publish(root.staged(root.comparison_models), root.comparison_models)
    for suffix in ("json", "md", "png"):
        atomic.publish(root.staged(root.comparison_export(suffix)), root.comparison_export(suffix))
    context.add_output_metadata({"path": dg.MetadataValue.path(str(root.comparison_export("md")))})
    return {"path": str(root.comparison_export("md"))}
