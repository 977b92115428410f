"""Blocking asset checks: the Great Expectations suites of `finetune_pipeline.validation`, one per asset,
plus the accounting identity rows_in = rows_out + rows_rejected for each corpus stage; and one warning
(non-blocking) check on the bias report.

A failed blocking check stops every downstream asset in the run; `require_upstream_checks` in the
assets stops separately launched runs too.
"""


from typing import Callable

import dagster as dg
import polars as pl

from finetune_pipeline import validation as v
from finetune_pipeline.cleaning.bias import bias_findings
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.labeling import label_set
from finetune_pipeline.settings import Settings


def _result(*results: v.SuiteResult, extra: dict | None = None) -> dg.AssetCheckResult:
    passed = all(r.passed for r in results)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(r.summary() for r in results),
        metadata={"expectations_evaluated": sum(r.evaluated for r in results),
                  "expectations_failed": sum(len(r.failures) for r in results), **(extra or {})},
    )


def suite_check(asset: str, expectations: Callable[[Settings, pl.DataFrame], list], description: str):
    """A blocking check that runs a GX suite built from the settings on the asset's frame."""

    @dg.asset_check(asset=asset, name=f"{asset}_expectations", blocking=True, description=description)
    def _check(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
        settings = pipeline.settings()
        return _result(v.validate(current, f"{asset}_expectations", expectations(settings, current)))

    return _check


def accounting_check(asset: str, upstream: str):
    """Blocking: every upstream row is either kept or rejected at this stage (nothing lost)."""

    @dg.asset_check(asset=asset, name=f"{asset}_accounting", blocking=True,
                    additional_ins={"upstream": dg.AssetIn(upstream)},
                    description=f"rows of {upstream} = rows kept + rows rejected at {asset}")
    def _check(pipeline: PipelineResource, current: pl.DataFrame, upstream: pl.DataFrame) -> dg.AssetCheckResult:
        originals = current.filter(pl.col("augmented_from").is_null()) if "augmented_from" in current.columns \
            else current
        rejected = pipeline.stage_rejects(asset).height
        counts = pl.DataFrame({"rows_in": [upstream.height], "rows_out_plus_rejected": [originals.height + rejected]})
        return _result(v.validate(counts, f"{asset}_accounting", v.accounting_expectations()),
                       extra={"rows_in": upstream.height, "rows_out": originals.height, "rows_rejected": rejected})

    return _check


def _min(settings: Settings) -> int:
    return settings.checks.min_records


raw_corpus_expectations = suite_check(
    "raw_corpus", lambda s, df: v.corpus_expectations(_min(s)),
    "Standard record columns, unique non-null record_id, non-empty text, at least checks.min_records rows.")
cleaned_corpus_expectations = suite_check(
    "cleaned_corpus", lambda s, df: v.cleaned_expectations(_min(s), s.cleaning.min_chars, s.cleaning.max_chars),
    "Record columns plus text length within cleaning.min_chars..max_chars and text_raw kept.")
deduplicated_corpus_expectations = suite_check(
    "deduplicated_corpus", lambda s, df: v.deduplicated_expectations(_min(s)),
    "No two records with the same content hash; every record has a group_id.")
labeled_corpus_expectations = suite_check(
    "labeled_corpus", lambda s, df: v.labeled_expectations(_min(s), label_set(df, s)),
    "Every record has a label from the label set, a known label_source and a confidence in [0, 1].")
augmented_corpus_expectations = suite_check(
    "augmented_corpus", lambda s, df: v.augmented_expectations(_min(s), label_set(df, s)),
    "Unique record ids, labels from the set, augmentation columns present.")

cleaned_corpus_accounting = accounting_check("cleaned_corpus", "raw_corpus")
deduplicated_corpus_accounting = accounting_check("deduplicated_corpus", "cleaned_corpus")
labeled_corpus_accounting = accounting_check("labeled_corpus", "deduplicated_corpus")
augmented_corpus_accounting = accounting_check("augmented_corpus", "labeled_corpus")


@dg.asset_check(asset="labeled_corpus", name="labeled_corpus_no_open_review", blocking=True,
                description="No record still waiting for review reaches training: no model label under "
                            "labeling.review_threshold, no crowd label under labeling.agreement_threshold.")
def labeled_corpus_no_open_review(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    cfg = pipeline.settings().labeling
    flags = v.open_review_frame(current, cfg.review_threshold, cfg.agreement_threshold)
    return _result(v.validate(flags, "labeled_corpus_no_open_review", v.open_review_expectations()),
                   extra={"model_labels_under_threshold": int(flags["model_label_under_review_threshold"].sum()),
                          "open_disagreements": int(flags["open_disagreement"].sum())})


@dg.asset_check(asset="dataset_splits", name="dataset_splits_no_leakage", blocking=True,
                description="Split values valid, every label in every split, no record or group (near-duplicate "
                            "cluster) in two splits, augmented and synthetic rows only in train and in their "
                            "source's split, label shares per split within splits.proportion_tolerance of the whole.")
def dataset_splits_no_leakage(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    labels = label_set(current, settings)
    groups, augmented = v.leakage_frames(current)
    group_exps, aug_exps = v.leakage_expectations()
    results = [
        v.validate(current, "dataset_splits_expectations", v.split_expectations(_min(settings), labels)),
        v.validate(v.label_coverage_frame(current, labels), "dataset_splits_label_coverage",
                   v.label_coverage_expectations()),
        v.validate(groups, "dataset_splits_groups", group_exps),
        v.validate(v.proportion_frame(current, settings.splits.proportion_tolerance), "dataset_splits_proportions",
                   v.proportion_expectations()),
    ]
    if augmented.height:
        results.append(v.validate(augmented, "dataset_splits_augmented", aug_exps))
    return _result(*results)


@dg.asset_check(asset="lora_adapter", name="lora_adapter_beats_baseline", blocking=True,
                description="No NaN training loss, and the test metric beats the baseline: accuracy above the "
                            "majority class (classification), or response-token loss below the untuned base "
                            "model's (instruction).")
def lora_adapter_beats_baseline(current: dict) -> dg.AssetCheckResult:
    if current.get("task") == "instruction":
        base_loss = current["base_model_test"]["loss"]
        frame = pl.DataFrame({"nan_loss": [current["nan_loss"]], "test_loss": [current["test"]["loss"]]})
        return _result(v.validate(frame, "lora_adapter_expectations", v.instruction_adapter_expectations(base_loss)),
                       extra={"test_loss": current["test"]["loss"], "base_model_test_loss": base_loss})
    frame = pl.DataFrame({"nan_loss": [current["nan_loss"]], "test_accuracy": [current["test"]["accuracy"]],
                          "test_macro_f1": [current["test"]["macro_f1"]]})
    return _result(v.validate(frame, "lora_adapter_expectations",
                              v.adapter_expectations(current["majority_baseline"]["accuracy"])),
                   extra={"test_accuracy": current["test"]["accuracy"],
                          "baseline_accuracy": current["majority_baseline"]["accuracy"]})


@dg.asset_check(asset="bias_report", name="bias_report_representation", blocking=False,
                description="Warns (never blocks) when a demographic term group is far over- or under-represented: "
                            "one group above bias.max_group_share of its dimension's mentions, or a label whose "
                            "share differs from the corpus-wide share by more than bias.max_label_skew.")
def bias_report_representation(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    findings = bias_findings(current, pipeline.settings().bias)
    return dg.AssetCheckResult(
        passed=not findings, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(findings) or "no group far over- or under-represented",
        metadata={"findings": len(findings)},
    )


@dg.asset_check(asset="approach_comparison", name="approach_comparison_complete", blocking=True,
                description="Every configured approach has a row with a finite test metric (macro-F1, or "
                            "perplexity for instruction tasks), no NaN loss and its trainable parameters.")
def approach_comparison_complete(pipeline: PipelineResource, current: dict) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    approaches = ["instruction"] if settings.task == "instruction" else list(settings.training.compare)
    metric = "test_perplexity" if current["task"] == "instruction" else "test_macro_f1"
    rows = current["rows"]
    frame = pl.DataFrame({
        "approach": [r["approach"] for r in rows],
        "test_metric": [None if r[metric] != r[metric] or r[metric] == float("inf") else r[metric] for r in rows],
        "nan_loss": [r["nan_loss"] for r in rows],
        "trainable_parameters": [r["trainable_parameters"] for r in rows],
    }, schema={"approach": pl.String, "test_metric": pl.Float64, "nan_loss": pl.Boolean,
               "trainable_parameters": pl.Int64})
    return _result(v.validate(frame, "approach_comparison_expectations", v.comparison_expectations(approaches)),
                   extra={"approaches": ", ".join(r["approach"] for r in rows)})


ALL_CHECKS = [
    raw_corpus_expectations, cleaned_corpus_expectations, deduplicated_corpus_expectations,
    labeled_corpus_expectations, labeled_corpus_no_open_review, augmented_corpus_expectations,
    cleaned_corpus_accounting, deduplicated_corpus_accounting, labeled_corpus_accounting,
    augmented_corpus_accounting, dataset_splits_no_leakage, lora_adapter_beats_baseline, bias_report_representation,
    approach_comparison_complete,
]
