"""The pipeline's assets, one per stage, each a thin call into the library plus metadata.

raw_corpus -> cleaned_corpus -> deduplicated_corpus -> labeled_corpus -> augmented_corpus
-> dataset_splits -> lora_adapter, plus approach_comparison, rejected_records and data_card.
"""


import time

import dagster as dg
import polars as pl

from finetune_pipeline import exports
from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.labeling import apply_labels, label_set
from finetune_pipeline.records import CORPUS_STAGES, SPLITS, StageResult
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline.splits import assign_splits, kfold_assignments
from finetune_pipeline.training import registry
from finetune_pipeline.training.compare import (comparison_markdown, compare_approaches, png_data_uri, run_approach,
                                                write_comparison)
from finetune_pipeline.defs.checks import ALL_CHECKS
from finetune_pipeline.defs.resources import PipelineResource

OWNERS = ["team:data-engineering"]


# ---- metadata helpers -------------------------------------------------------------------------------

def _md_table(headers: list[str], rows: list[list]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _bars(counts: dict[str, int]) -> dg.MetadataValue:
    """A text bar chart: reads at a glance in the asset page."""
    if not counts:
        return dg.MetadataValue.md("_none_")
    top = max(counts.values())
    rows = [[k, v, "█" * max(1, round(20 * v / top))] for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return _md_table(["value", "count", ""], rows)


def _preview(frame: pl.DataFrame) -> dg.MetadataValue:
    """First rows without the text itself: previews must never carry personal data."""
    cols = [c for c in ("record_id", "label", "source_type", "source_uri", "locator", "split") if c in frame.columns]
    head = frame.head(8).with_columns(pl.col("text").str.len_chars().alias("chars")) if "text" in frame.columns \
        else frame.head(8)
    cols += ["chars"] if "chars" in head.columns else []
    return _md_table(cols, head.select(cols).rows())


def stage_metadata(rows_in: int, result: StageResult) -> dict:
    kept = result.kept
    meta = {
        "rows_in": rows_in,
        "rows_out": kept.height,
        "rows_rejected": result.rejected.height,
        "rejects_by_reason": _bars(result.reasons()),
        "preview": _preview(kept),
        "dagster/row_count": kept.height,
    }
    if "label" in kept.columns:
        meta["label_distribution"] = _bars(dict(kept.group_by("label").len().drop_nulls().iter_rows()))
    if "text" in kept.columns and kept.height:
        lengths = kept["text"].str.len_chars()
        meta["text_chars_median"] = int(lengths.median())
        meta["text_chars_max"] = int(lengths.max())
    return meta


def require_upstream_checks(context: dg.AssetExecutionContext, upstream: str) -> None:
    """Refuse to run when the latest evaluation of a blocking check on `upstream` failed.

    Within one run Dagster already skips downstream steps of a failed blocking check; this guard
    covers runs launched separately (e.g. materializing only a downstream asset).
    """
    key = dg.AssetKey(upstream)
    # All checks, not just those of this run's job subset: a run of one downstream asset must see them.
    for check_key in (k for checks_def in ALL_CHECKS for k in checks_def.check_keys):
        if check_key.asset_key != key:
            continue
        record = context.instance.get_latest_asset_check_evaluation_record(check_key)
        evaluation = record.evaluation if record else None
        if evaluation is not None and not evaluation.passed:
            raise dg.Failure(
                description=f"blocked: check '{check_key.name}' on {upstream} failed in run {record.run_id}. "
                            f"Fix the data or settings and re-materialize {upstream} (with its checks) first.",
            )


# ---- the stages ---------------------------------------------------------------------------------------

@dg.asset(group_name="collection", kinds={"polars", "unstructured"}, owners=OWNERS,
          description="Every file under raw/ (txt, md, html, pdf, docx, eml, csv, jsonl, parquet, SQLite) and "
                      "every SQL source in finetune.yaml, parsed into records with provenance. Unreadable "
                      "inputs become rejects naming the file and the reason.")
def raw_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> StageResult:
    result = collect_raw_corpus(pipeline.root(), pipeline.settings(), cache_dir=pipeline.parse_cache_dir(),
                                progress=_progress_logger(context))
    by_type = result.stats["by_source_type"]
    context.add_output_metadata({
        **stage_metadata(result.kept.height + result.rejected.height, result),
        "sources": result.stats["files"] + len(pipeline.settings().sources.sql),
        "sources_parsed": result.stats["parsed"],
        "sources_from_cache": result.stats["cached"],
        "by_source_type": _md_table(
            ["type", "sources", "records", "rejects", "parsed", "from cache"],
            [[t, s["files"], s["records"], s["rejects"], s["parsed"], s["cached"]] for t, s in sorted(by_type.items())]),
    })
    return result


def _progress_logger(context: dg.AssetExecutionContext, every_s: float = 5.0):
    """Per-source progress in the run log: every source for small folders, else one line per `every_s`."""
    last = [0.0]

    def report(done: int, total: int, uri: str, status: str) -> None:
        now = time.monotonic()
        if total <= 50 or done == total or now - last[0] >= every_s:
            last[0] = now
            context.log.info(f"[{done}/{total}] {uri} ({status})")
    return report


@dg.asset(group_name="cleaning", kinds={"polars"}, owners=OWNERS,
          description="Text repaired (ftfy), control characters and markup remnants removed, unicode and "
                      "whitespace normalised, personal data redacted by the privacy policy, and too short/long "
                      "texts rejected. `text_raw` keeps the original for audit.")
def cleaned_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                   raw_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "raw_corpus")
    result = clean_corpus(raw_corpus, pipeline.settings())
    context.add_output_metadata({**stage_metadata(raw_corpus.height, result),
                                 "texts_changed": result.stats["texts_changed"],
                                 "pii_by_type": _bars(result.stats["pii_by_type"])})
    return result


@dg.asset(group_name="cleaning", kinds={"polars"}, owners=OWNERS,
          description="Exact duplicates (same normalised text) and near duplicates (MinHash + LSH over word "
                      "n-grams) removed; the first record by source order is kept and `group_id` names the cluster.")
def deduplicated_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                        cleaned_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "cleaned_corpus")
    result = deduplicate(cleaned_corpus, pipeline.settings())
    context.add_output_metadata({**stage_metadata(cleaned_corpus.height, result),
                                 "exact_duplicates": result.stats["exact_duplicates"],
                                 "near_duplicates": result.stats["near_duplicates"],
                                 "clusters_with_duplicates": result.stats["clusters_with_duplicates"]})
    return result


@dg.asset(group_name="labeling", kinds={"polars"}, owners=OWNERS,
          description="Records with a label from the label set (from a column or the parent folder). "
                      "Unlabeled records and labels outside the set are rejected with that reason.")
def labeled_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                   deduplicated_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "deduplicated_corpus")
    result = apply_labels(deduplicated_corpus, pipeline.settings())
    context.add_output_metadata({**stage_metadata(deduplicated_corpus.height, result),
                                 "label_set": ", ".join(result.stats["labels"])})
    return result


@dg.asset(group_name="augmentation", kinds={"polars"}, owners=OWNERS,
          description="Originals plus augmented training rows: each label topped up to its target by paraphrases "
                      "and capped synthetic examples (when on; OpenAI-compatible endpoint, local model or rule "
                      "variations, filtered with reasons), then copies. Only records that will be in train are "
                      "augmented; new rows carry `augmented_from`, `augmentation` and `augmentation_model`.")
def augmented_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     labeled_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "labeled_corpus")
    result = augment_corpus(labeled_corpus, pipeline.settings())
    meta = stage_metadata(labeled_corpus.height, result)
    meta["rows_out"] = labeled_corpus.height  # originals out; augmented rows are added, not counted as originals
    stats = result.stats
    context.add_output_metadata({**meta, "augmented_rows": stats["augmented_rows"],
                                 "augmented_by_label": _bars(stats["by_label"]),
                                 "augmented_by_technique": _bars(stats["by_technique"]),
                                 "generated_dropped_by_reason": _bars(stats["generated_dropped"]),
                                 "generator": stats["generator"] or "none",
                                 "generator_error": stats["generator_error"] or "none"})
    if stats["generator_error"]:
        context.log.warning(f"generator failed, gaps filled by copies: {stats['generator_error']}")
    return result


@dg.asset(group_name="splits", kinds={"polars", "huggingface"}, owners=OWNERS,
          description="Stratified, group-aware train/validation/test split (default 0.8/0.1/0.1, seeded); "
                      "augmented rows stay in their source's split (train). Exported to exports/splits/ as a "
                      "datasets.DatasetDict and JSONL, plus exports/folds.parquet when k-fold is on.")
def dataset_splits(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                   augmented_corpus: pl.DataFrame) -> pl.DataFrame:
    require_upstream_checks(context, "augmented_corpus")
    settings = pipeline.settings()
    splits = assign_splits(augmented_corpus, settings.splits)
    target = exports.export_splits(splits, pipeline.exports_dir())
    if settings.splits.k_folds >= 2:
        folds = kfold_assignments(splits.filter(pl.col("split") == "train"), settings.splits.k_folds,
                                  settings.splits.seed)
        exports.write_parquet(folds, pipeline.exports_dir() / "folds.parquet")
    sizes = dict(splits.group_by("split").len().iter_rows())
    table = splits.group_by("split", "label").len().sort("split", "label").rows()
    context.add_output_metadata({
        "split_sizes": _md_table(["split", "rows"], [[s, sizes.get(s, 0)] for s in SPLITS]),
        "labels_per_split": _md_table(["split", "label", "rows"], table),
        "export_path": dg.MetadataValue.path(str(target)),
        "dagster/row_count": splits.height,
    })
    return splits


def training_splits(splits: pl.DataFrame, task: str) -> dict[str, tuple[list[str], list[str]]]:
    """Per split: (texts, labels) for classification, (prompts, responses) for instruction tasks."""
    columns = ("prompt", "response") if task == "instruction" else ("text", "label")
    parts = {}
    for name in SPLITS:
        part = splits.filter(pl.col("split") == name)
        parts[name] = (part[columns[0]].to_list(), part[columns[1]].to_list())
    return parts


def _labels(splits: pl.DataFrame, settings) -> list[str]:
    return [] if settings.task == "instruction" else label_set(splits, settings)


@dg.asset(group_name="training", kinds={"pytorch", "peft"}, owners=OWNERS, pool="gpu",
          description="The task's adapter, trained on the train split with early stopping on validation and "
                      "evaluated on test: PEFT LoRA on the base encoder for sequence classification (the head saved "
                      "with it), or LoRA on `instruction_base_model` for instruction tasks (chat template, loss on "
                      "responses only, packing). Resumes from its checkpoint after a killed run. Saved as "
                      "safetensors under models/<adapter_name>/ with the tokenizer, metrics.json and a model "
                      "card, and listed in models/registry.json.")
def lora_adapter(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                 dataset_splits: pl.DataFrame) -> dict:
    require_upstream_checks(context, "dataset_splits")
    settings = pipeline.settings()
    cfg = settings.training
    approach = "instruction" if settings.task == "instruction" else cfg.approach
    snapshot = exports.content_digest(dataset_splits)
    output = pipeline.models_dir() / cfg.adapter_name
    metrics = run_approach(approach, training_splits(dataset_splits, settings.task), _labels(dataset_splits, settings),
                           cfg, output, data_snapshot=snapshot, log=context.log.info)
    registry.register(pipeline.models_dir(), cfg.adapter_name, output, metrics)
    test = metrics["test"]
    if approach == "instruction":
        base = metrics["base_model_test"]
        evaluation = _md_table(["model", "test loss", "test perplexity", "trainable params"],
                               [["instruction (LoRA)", f"{test['loss']:.4f}", f"{test['perplexity']:.2f}",
                                 f"{metrics['trainable_parameters']:,}"],
                                ["base model", f"{base['loss']:.4f}", f"{base['perplexity']:.2f}", 0]])
    else:
        base = metrics["majority_baseline"]
        evaluation = _md_table(["approach", "test accuracy", "test macro-F1", "trainable params"],
                               [[approach, f"{test['accuracy']:.3f}", f"{test['macro_f1']:.3f}",
                                 f"{metrics['trainable_parameters']:,}"],
                                ["majority class", f"{base['accuracy']:.3f}", f"{base['macro_f1']:.3f}", 0]])
    context.add_output_metadata({
        "adapter_path": dg.MetadataValue.path(str(output)),
        "registry": dg.MetadataValue.path(str(pipeline.models_dir() / registry.REGISTRY_FILE)),
        "evaluation": evaluation,
        "epochs_run": metrics["epochs_run"],
        "resumed_from_epoch": metrics.get("resumed_from_epoch") or 0,
        "device": metrics["device"],
        "wall_time_s": metrics["wall_time_s"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "data_snapshot": snapshot,
    })
    return metrics


@dg.asset(group_name="training", kinds={"pytorch", "peft", "sklearn"}, owners=OWNERS, pool="gpu",
          description="The fine-tuning approaches of `training.compare` (LoRA, full fine-tuning, feature-based: "
                      "frozen embeddings + logistic regression; instruction tuning for instruction tasks) trained "
                      "on the same splits: test accuracy and macro-F1 (or loss and perplexity), trainable "
                      "parameters, wall time and peak memory, as a table and a plot. Models under "
                      "models/comparison/<approach>/; exports/approach_comparison.json/.md/.png.")
def approach_comparison(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                        dataset_splits: pl.DataFrame) -> dict:
    require_upstream_checks(context, "dataset_splits")
    settings = pipeline.settings()
    approaches = ["instruction"] if settings.task == "instruction" else list(settings.training.compare)
    started = time.perf_counter()
    result = compare_approaches(training_splits(dataset_splits, settings.task), _labels(dataset_splits, settings),
                                settings.training, pipeline.models_dir() / "comparison", approaches,
                                data_snapshot=exports.content_digest(dataset_splits), log=context.log.info)
    result["total_wall_time_s"] = round(time.perf_counter() - started, 1)
    paths = write_comparison(result, pipeline.exports_dir())
    context.add_output_metadata({
        "comparison": dg.MetadataValue.md(comparison_markdown(result)),
        "plot": dg.MetadataValue.md(f"![approach comparison]({png_data_uri(paths['png'].read_bytes())})"),
        "total_wall_time_s": result["total_wall_time_s"],
        "device": result["rows"][0]["device"] if result["rows"] else "none",
        "path": dg.MetadataValue.path(str(paths["md"])),
    })
    return result


@dg.asset(group_name="reporting", kinds={"polars"}, owners=OWNERS,
          deps=list(CORPUS_STAGES),
          description="Every rejected input, with the stage and the reason, from all stages; exported to "
                      "exports/rejects.parquet.")
def rejected_records(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> pl.DataFrame:
    frames = [pipeline.stage_rejects(stage) for stage in CORPUS_STAGES]
    rejects = pl.concat(frames)
    exports.write_parquet(rejects, pipeline.exports_dir() / "rejects.parquet")
    by = rejects.group_by("stage", "reason").len().sort("stage", "reason").rows()
    context.add_output_metadata({"rows": rejects.height,
                                 "by_stage_and_reason": _md_table(["stage", "reason", "rows"], by),
                                 "dagster/row_count": rejects.height})
    return rejects


@dg.asset(group_name="reporting", kinds={"markdown"}, owners=OWNERS,
          description="The run's data card (exports/report.md): rows per stage, rejects by reason, personal "
                      "data found by type, split sizes and labels, the evaluation and the approach comparison.")
def data_card(context: dg.AssetExecutionContext, pipeline: PipelineResource, rejected_records: pl.DataFrame,
              dataset_splits: pl.DataFrame, lora_adapter: dict, approach_comparison: dict) -> dict:
    counts = pipeline.stage_counts()
    pii = pipeline.stage_stats("cleaned_corpus").get("pii_by_type", {})
    text = exports.data_card(counts, rejected_records, dataset_splits, pii, lora_adapter,
                             comparison=approach_comparison)
    path = exports.write_text(text, pipeline.exports_dir() / "report.md")
    context.add_output_metadata({"report": dg.MetadataValue.md(text), "path": dg.MetadataValue.path(str(path))})
    return {"path": str(path), "stage_counts": counts}
