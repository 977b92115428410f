"""The pipeline's assets, one per stage, each a thin call into the library plus metadata.

raw_corpus -> cleaned_corpus -> deduplicated_corpus -> labeled_corpus -> augmented_corpus
-> dataset_splits -> lora_adapter, plus rejected_records and data_card.
"""


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
from finetune_pipeline.training.lora import train_lora_classifier
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


def _histogram(counts: dict[str, int], label: str = "bin") -> dg.MetadataValue:
    """Bars in the bins' own order (a distribution, not a ranking)."""
    if not counts or not any(counts.values()):
        return dg.MetadataValue.md("_none_")
    top = max(counts.values())
    return _md_table([label, "count", ""], [[k, v, "█" * round(20 * v / top)] for k, v in counts.items()])


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


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
    result = collect_raw_corpus(pipeline.root(), pipeline.settings())
    by_type = result.stats["by_source_type"]
    context.add_output_metadata({
        **stage_metadata(result.kept.height + result.rejected.height, result),
        "files": result.stats["files"],
        "by_source_type": _md_table(["type", "files", "records", "rejects"],
                                    [[t, s["files"], s["records"], s["rejects"]] for t, s in sorted(by_type.items())]),
    })
    return result


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
          description="Exact duplicates (same text after case and whitespace folding), near duplicates (MinHash + "
                      "LSH over word 3-grams, estimated Jaccard >= 0.7, clusters by connected components) and, "
                      "when dedup.semantic is on, paraphrases (MiniLM embeddings, cosine >= 0.9) removed. The "
                      "record seen first (ingested_at, source_uri, locator) is kept; rejects name it in "
                      "duplicate_of, and `group_id` names the cluster.")
def deduplicated_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                        cleaned_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "cleaned_corpus")
    result = deduplicate(cleaned_corpus, pipeline.settings())
    stats = result.stats
    largest = [[c["group_id"], c["size"], c["exact_duplicate"], c["near_duplicate"], c["semantic_duplicate"],
                _cell(c["preview"])] for c in stats["largest_clusters"]]
    context.add_output_metadata({
        **stage_metadata(cleaned_corpus.height, result),
        "exact_duplicates": stats["exact_duplicates"],
        "near_duplicates": stats["near_duplicates"],
        "semantic_duplicates": stats["semantic_duplicates"],
        "clusters_with_duplicates": stats["clusters_with_duplicates"],
        "cluster_sizes": _histogram(stats["cluster_sizes"], "records in cluster"),
        "largest_clusters": _md_table(["group_id", "records", "exact", "near", "semantic", "kept text (start)"],
                                      largest) if largest else dg.MetadataValue.md("_none_"),
        "near_candidate_pairs": stats["near_candidate_pairs"],
        "near_similarity_histogram": _histogram(stats["near_similarity_histogram"], "estimated Jaccard from"),
        **({"semantic_nearest_histogram": _histogram(stats["semantic_nearest_histogram"], "nearest cosine from")}
           if stats["semantic_nearest_histogram"] else {}),
    })
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
          description="Originals plus minority-class training records oversampled up to "
                      "augmentation.oversample_ratio of the largest class. Only records that will be in train "
                      "are augmented; copies carry `augmented_from` and `augmentation`.")
def augmented_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     labeled_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "labeled_corpus")
    result = augment_corpus(labeled_corpus, pipeline.settings())
    meta = stage_metadata(labeled_corpus.height, result)
    meta["rows_out"] = labeled_corpus.height  # originals out; augmented rows are added, not counted as originals
    context.add_output_metadata({**meta, "augmented_rows": result.stats["augmented_rows"],
                                 "augmented_by_label": _bars(result.stats["by_label"])})
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


@dg.asset(group_name="training", kinds={"pytorch", "peft"}, owners=OWNERS, pool="gpu",
          description="A LoRA adapter (PEFT) on the base encoder for sequence classification, trained on the "
                      "train split with early stopping on validation and evaluated on test. Saved as "
                      "safetensors under models/<adapter_name>/ with the tokenizer, metrics.json and a model card.")
def lora_adapter(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                 dataset_splits: pl.DataFrame) -> dict:
    require_upstream_checks(context, "dataset_splits")
    settings = pipeline.settings()
    labels = label_set(dataset_splits, settings)
    parts = {name: (dataset_splits.filter(pl.col("split") == name)["text"].to_list(),
                    dataset_splits.filter(pl.col("split") == name)["label"].to_list()) for name in SPLITS}
    snapshot = exports.content_digest(dataset_splits)
    output = pipeline.models_dir() / settings.training.adapter_name
    metrics = train_lora_classifier(parts, labels, settings.training, output, data_snapshot=snapshot,
                                    log=context.log.info)
    test, base = metrics["test"], metrics["majority_baseline"]
    context.add_output_metadata({
        "adapter_path": dg.MetadataValue.path(str(output)),
        "evaluation": _md_table(["approach", "test accuracy", "test macro-F1", "trainable params"],
                                [["lora", f"{test['accuracy']:.3f}", f"{test['macro_f1']:.3f}",
                                  f"{metrics['trainable_parameters']:,}"],
                                 ["majority class", f"{base['accuracy']:.3f}", f"{base['macro_f1']:.3f}", 0]]),
        "epochs_run": metrics["epochs_run"],
        "device": metrics["device"],
        "wall_time_s": metrics["wall_time_s"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "data_snapshot": snapshot,
    })
    return metrics


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
                      "data found by type, split sizes and labels, and the evaluation.")
def data_card(context: dg.AssetExecutionContext, pipeline: PipelineResource, rejected_records: pl.DataFrame,
              dataset_splits: pl.DataFrame, lora_adapter: dict) -> dict:
    counts = pipeline.stage_counts()
    pii = pipeline.stage_stats("cleaned_corpus").get("pii_by_type", {})
    text = exports.data_card(counts, rejected_records, dataset_splits, pii, lora_adapter)
    path = exports.write_text(text, pipeline.exports_dir() / "report.md")
    context.add_output_metadata({"report": dg.MetadataValue.md(text), "path": dg.MetadataValue.path(str(path))})
    return {"path": str(path), "stage_counts": counts}
