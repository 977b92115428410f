"""Reporting: the bias report (with its warning check), every rejected record, and the run's data card."""


import dagster as dg
import polars as pl

from finetune_pipeline import atomic, reporting
from finetune_pipeline.cleaning import CleaningStats
from finetune_pipeline.cleaning.bias import bias_findings, bias_report
from finetune_pipeline.dedup import DedupStats
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import check_specs, checked, gate, require_upstream_checks
from finetune_pipeline.defs.metadata import bias_metadata, rejects_metadata, settings_used
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.records import CORPUS_STAGES


@gate("bias_report", "bias_report_representation", blocking=False,
      description="Warns (never blocks) when a demographic term group is far over- or under-represented: one "
                  "group above bias.max_group_share of its dimension's mentions, or a label whose share differs "
                  "from the corpus-wide share by more than bias.max_label_skew.")
def bias_report_representation(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    findings = bias_findings(current, pipeline.settings().bias)
    return dg.AssetCheckResult(
        passed=not findings, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(findings) or "no group far over- or under-represented",
        metadata={"findings": len(findings)},
    )


@dg.asset(name="bias_report", group_name="reporting", kinds={"polars"}, owners=OWNERS,
          check_specs=check_specs("bias_report"),
          description="Bias report: per label, how many records mention common demographic term "
                      "groups (gender, age, nationality, religion), with the label distribution. A non-blocking "
                      "check warns when a group is far over- or under-represented (rule: finetune.yaml `bias`).")
def bias_report_table(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      labeled_corpus: pl.DataFrame):
    require_upstream_checks(context, "labeled_corpus")
    settings = pipeline.settings()
    report = bias_report(labeled_corpus)
    findings = bias_findings(report, settings.bias)
    context.add_output_metadata({**settings_used(settings, "bias"),
                                 **bias_metadata(report, findings, labeled_corpus)}, output_name="result")
    yield from checked(context, pipeline, "bias_report", report)


@dg.asset(group_name="reporting", kinds={"polars"}, owners=OWNERS,
          deps=list(CORPUS_STAGES),
          description="Every rejected input, with the stage and the reason, from all stages; exported to "
                      "exports/rejects.parquet.")
def rejected_records(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> pl.DataFrame:
    require_upstream_checks(context, *CORPUS_STAGES)
    rejects = pl.concat([pipeline.stage_rejects(stage) for stage in CORPUS_STAGES])
    atomic.write_parquet(rejects, pipeline.data_root().rejects_export)
    context.add_output_metadata(rejects_metadata(rejects))
    return rejects


@dg.asset(group_name="reporting", kinds={"markdown"}, owners=OWNERS,
          description="The run's data card (exports/report.md): rows per stage, rejects by reason, personal "
                      "data found by type, split sizes and labels, the evaluation and the approach comparison.")
def data_card(context: dg.AssetExecutionContext, pipeline: PipelineResource, rejected_records: pl.DataFrame,
              dataset_splits: pl.LazyFrame, lora_adapter: dict, approach_comparison: dict) -> dict:
    require_upstream_checks(context, "dataset_splits", "lora_adapter", "approach_comparison")
    # the split sizes and labels per split: three columns, never the texts
    dataset_splits = dataset_splits.select([c for c in ("split", "label", "augmented_from")
                                            if c in dataset_splits.collect_schema().names()]).collect()
    counts = pipeline.stage_counts()
    cleaning = CleaningStats.from_dict(pipeline.stage_stats("cleaned_corpus"))
    text = reporting.data_card(counts, rejected_records, dataset_splits, cleaning.pii_by_type, lora_adapter,
                               pii_policy=pipeline.settings().privacy.policy, erasure=cleaning.erasure,
                               comparison=approach_comparison,
                               domain=DedupStats.from_dict(pipeline.stage_stats("deduplicated_corpus")).domain,
                               agreement=pipeline.stage_stats("labeled_corpus").get("agreement"),
                               redaction={k: getattr(cleaning, k) for k in ("pii_passes", "pii_unresolved",
                                                                            "pii_allowed", "pii_denied")})
    path = atomic.write_text(text, pipeline.data_root().report)
    context.add_output_metadata({"report": dg.MetadataValue.md(text), "path": dg.MetadataValue.path(str(path))})
    return {"path": str(path), "stage_counts": counts}
