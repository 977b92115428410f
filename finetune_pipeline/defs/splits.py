"""Splits: `dataset_splits`, the stratified group-aware train/validation/test split and its exports, with
the blocking leakage check."""


import dagster as dg
import polars as pl

from finetune_pipeline import atomic, exports
from finetune_pipeline import validation as v
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import blocking_check, labels_and_records, require_upstream_checks, suite_result
from finetune_pipeline.defs.metadata import settings_used, splits_metadata
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.splits import assign_splits, kfold_assignments
from finetune_pipeline.tasks import task_for


@dg.asset(group_name="splits", kinds={"polars", "huggingface"}, owners=OWNERS,
          description="Stratified, group-aware train/validation/test split (default 0.8/0.1/0.1, seeded); "
                      "augmented rows stay in their source's split (train). Exported to exports/splits/ as a "
                      "datasets.DatasetDict and JSONL, plus exports/folds.parquet when k-fold is on.")
def dataset_splits(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                   augmented_corpus: pl.DataFrame) -> pl.DataFrame:
    require_upstream_checks(context, "augmented_corpus")
    settings, root = pipeline.settings(), pipeline.data_root()
    task = task_for(settings)
    splits = assign_splits(augmented_corpus, settings.splits, task)
    target = exports.export_splits(splits, root.splits_export, task)
    if settings.splits.k_folds >= 2:
        folds = kfold_assignments(splits.filter(pl.col("split") == "train"), settings.splits.k_folds,
                                  settings.splits.seed, task=task)
        atomic.write_parquet(folds, root.folds)
    context.add_output_metadata({**settings_used(settings, "splits"), **splits_metadata(splits),
                                 "export_path": dg.MetadataValue.path(str(target))})
    return splits


@blocking_check("dataset_splits", "dataset_splits_no_leakage",
                "Split values valid, every label in every split, no record or group (near-duplicate cluster) in two "
                "splits, augmented and synthetic rows only in train and in their source's split, label shares per "
                "split within splits.proportion_tolerance of the whole.")
def dataset_splits_no_leakage(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    task = task_for(settings)
    labels, records = labels_and_records(settings, current)
    groups, augmented = v.leakage_frames(current)
    group_exps, aug_exps = v.leakage_expectations()
    results = [
        v.validate(current, "dataset_splits_expectations",
                   v.split_expectations(settings.checks.min_records, labels, records)),
        v.validate(groups, "dataset_splits_groups", group_exps),
        v.validate(v.proportion_frame(current, settings.splits.proportion_tolerance, task.stratify_column(current)),
                   "dataset_splits_proportions", v.proportion_expectations()),
    ]
    if task.labeled:  # every label in every split
        results.insert(1, v.validate(v.label_coverage_frame(current, labels), "dataset_splits_label_coverage",
                                     v.label_coverage_expectations()))
    if augmented.height:
        results.append(v.validate(augmented, "dataset_splits_augmented", aug_exps))
    return suite_result(*results)
