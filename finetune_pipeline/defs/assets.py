"""The pipeline's assets, one per stage, each a thin call into the library plus metadata.

raw_corpus -> cleaned_corpus -> deduplicated_corpus -> labeled_corpus -> augmented_corpus
-> dataset_splits -> lora_adapter, plus review_queue (beside labeled_corpus), approach_comparison,
bias_report, rejected_records and data_card.
"""


import time
import warnings

import dagster as dg
import polars as pl

from finetune_pipeline import execution, exports
from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.bias import ALL_LABELS, bias_findings, bias_report
from finetune_pipeline.cleaning.erasure import ErasureFileError, load_erasure_requests
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.labeling import apply_labels, label_set
from finetune_pipeline.labeling.annotations import load_annotations
from finetune_pipeline.labeling.review import write_review_export
from finetune_pipeline.raw_inventory import inventory, inventory_version
from finetune_pipeline.records import CORPUS_STAGES, SPLITS, StageResult
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline.splits import assign_splits, kfold_assignments
from finetune_pipeline.defs.checks import ALL_CHECKS
from finetune_pipeline.defs.resources import PipelineResource, RayCluster

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


def settings_used(pipeline: PipelineResource, *sections: str) -> dict:
    """The finetune.yaml sections (launchpad overrides included) this asset ran with, for its metadata."""
    settings = pipeline.settings()
    return {"settings_used": dg.MetadataValue.json(
        {name: (value.model_dump(mode="json") if hasattr(value, "model_dump") else value)
         for name in sections for value in [getattr(settings, name)]})}


def execution_metadata(pipeline: PipelineResource) -> dict:
    """Where the stage ran: the backend, and with Ray the cluster's nodes, CPUs and GPUs."""
    cfg = pipeline.settings().execution
    meta = {"execution_backend": cfg.backend}
    if cfg.backend == "ray":
        meta["ray_cluster"] = dg.MetadataValue.json(execution.cluster_summary())
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
        if evaluation is not None and not evaluation.passed and evaluation.severity != dg.AssetCheckSeverity.WARN:
            raise dg.Failure(
                description=f"blocked: check '{check_key.name}' on {upstream} failed in run {record.run_id}. "
                            f"Fix the data or settings and re-materialize {upstream} (with its checks) first.",
            )


# ---- the stages ---------------------------------------------------------------------------------------

RAW_FILES = dg.AssetKey("raw_files")


# observable_source_asset is marked beta in dagster 1.13; its behaviour here is tested (test_automation.py).
warnings.filterwarnings("ignore", message=".*observable_source_asset.*", category=dg.BetaWarning)


@dg.observable_source_asset(
    key=RAW_FILES, group_name="collection", owners=OWNERS,
    description="The files under raw/ (any depth). Its data version is a hash of every path and content "
                "hash, so when raw/ changes, raw_corpus and everything downstream show as stale in the UI.")
def raw_files(pipeline: PipelineResource) -> dg.DataVersion:
    return dg.DataVersion(inventory_version(inventory(pipeline.root() / "raw")))


@dg.asset(group_name="collection", kinds={"polars", "unstructured"}, owners=OWNERS, deps=[RAW_FILES],
          description="Every file under raw/ (txt, md, html, pdf, docx, eml, csv, jsonl, parquet, SQLite) and "
                      "every SQL source in finetune.yaml, parsed into records with provenance. Unreadable "
                      "inputs become rejects naming the file and the reason.")
def raw_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster) -> StageResult:
    result = collect_raw_corpus(pipeline.root(), pipeline.settings(), cache_dir=pipeline.parse_cache_dir(),
                                progress=_progress_logger(context))
    by_type = result.stats["by_source_type"]
    context.add_output_metadata({**settings_used(pipeline, "sources"), **execution_metadata(pipeline),
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


def pii_report(stats: dict, policy: dict) -> dg.MetadataValue:
    """Counts by type and the action taken; never a value."""
    found = stats.get("pii_by_type", {})
    return _md_table(["type", "found", "action"], [[kind, found.get(kind, 0), action] for kind, action in policy.items()])


def erasure_report(erasure: dict) -> dg.MetadataValue:
    """Request ids and how many records each removed; never the subject."""
    rows = [[request_id, n] for request_id, n in sorted(erasure.get("removed_by_request", {}).items())]
    return _md_table(["request", "records removed"], rows) if rows else dg.MetadataValue.md("_no erasure requests_")


@dg.asset(group_name="cleaning", kinds={"polars"}, owners=OWNERS,
          description="Records named by erasure_requests.csv removed; text repaired (ftfy), control characters, "
                      "markup, boilerplate and page headers removed, unicode/whitespace/quotes/punctuation "
                      "normalised; personal data redacted, dropped or kept by the privacy policy (Presidio + "
                      "patterns); Gopher/C4 quality filters and language ID reject with their own reason. "
                      "`text_raw` keeps the original for audit, `quality_flags` the flags raised.")
def cleaned_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster,
                   raw_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "raw_corpus")
    settings = pipeline.settings()
    try:
        requests = load_erasure_requests(pipeline.root())
    except ErasureFileError as exc:
        raise dg.Failure(description=f"{exc}. Erasure requests cannot be skipped: fix the file and re-run.") from None
    result = clean_corpus(raw_corpus, settings, requests)
    stats = result.stats
    context.add_output_metadata({**settings_used(pipeline, "cleaning", "privacy"), **execution_metadata(pipeline),
                                 **stage_metadata(raw_corpus.height, result),
                                 "texts_changed": stats["texts_changed"],
                                 "pii_by_type": _bars(stats["pii_by_type"]),
                                 "pii_report": pii_report(stats, settings.privacy.model_dump(
                                     exclude={"detector", "min_score", "single_word_names"})),
                                 "records_with_pii": stats["records_with_pii"],
                                 "quality_flags": _bars(stats["quality_flags"]),
                                 "erasure_requests": erasure_report(stats["erasure"]),
                                 "records_erased": stats["erasure"]["records_removed"]})
    return result


@dg.asset(group_name="cleaning", kinds={"polars"}, owners=OWNERS,
          description="Exact duplicates (same text after case and whitespace folding), near duplicates (MinHash + "
                      "LSH over word 3-grams, estimated Jaccard >= 0.7, clusters by connected components) and, "
                      "when dedup.semantic is on, paraphrases (MiniLM embeddings, cosine >= 0.9) removed. The "
                      "record seen first (ingested_at, source_uri, locator) is kept; rejects name it in "
                      "duplicate_of, and `group_id` names the cluster.")
def deduplicated_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster,
                        cleaned_corpus: pl.DataFrame) -> StageResult:
    require_upstream_checks(context, "cleaned_corpus")
    result = deduplicate(cleaned_corpus, pipeline.settings())
    stats = result.stats
    largest = [[c["group_id"], c["size"], c["exact_duplicate"], c["near_duplicate"], c["semantic_duplicate"],
                _cell(c["preview"])] for c in stats["largest_clusters"]]
    context.add_output_metadata({**settings_used(pipeline, "dedup"), **execution_metadata(pipeline),
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


@dg.multi_asset(
    outs={
        "labeled_corpus": dg.AssetOut(
            group_name="labeling", kinds={"polars"}, owners=OWNERS,
            description="Records with a label from the label set. Precedence: expert annotator > crowd consensus "
                        "(Dawid-Skene or majority) or a single annotator > column/folder label > model label "
                        "(zero-shot by embedding similarity, or a classifier once enough human labels exist). "
                        "Model labels under labeling.review_threshold and crowd labels under "
                        "labeling.agreement_threshold are rejected as in_review and wait in review_queue."),
        "review_queue": dg.AssetOut(
            group_name="labeling", kinds={"polars", "labelstudio"}, owners=OWNERS,
            description="Records waiting for a person: low-confidence model labels, open annotator disagreements "
                        "and an audit sample of accepted model labels. Exported as Label Studio import tasks "
                        "(exports/review/tasks.json, lowest score first, with the prediction) and a labeling "
                        "config (exports/review/label_config.xml)."),
    },
)
def labeling(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster,
             deduplicated_corpus: pl.DataFrame):
    require_upstream_checks(context, "deduplicated_corpus")
    settings = pipeline.settings()
    annotations, problems = load_annotations(pipeline.annotations_dir())
    result = apply_labels(deduplicated_corpus, settings, annotations, problems)
    for problem in problems:
        context.log.warning(f"annotations/{problem['file']} {problem['where']}: {problem['reason']}")
    paths = write_review_export(result.review_queue, result.stats["labels"], pipeline.exports_dir() / "review")

    stats = result.stats
    model = stats["model"]
    yield dg.Output(result, "labeled_corpus", metadata={
        **stage_metadata(deduplicated_corpus.height, result),
        "label_set": ", ".join(stats["labels"]),
        **settings_used(pipeline, "labels", "labeling"), **execution_metadata(pipeline),
        "by_label_source": _bars(stats["by_label_source"]),
        "model_labeled": model["accepted"],
        **({"model_mean_confidence": model["mean_confidence"]} if model["mean_confidence"] is not None else {}),
        "label_model": model["name"] or "none (no record needed one)",
        "in_review": sum(stats["in_review"].values()),
        "in_review_by_reason": _bars({k: v for k, v in stats["in_review"].items() if v}),
        "annotation_files": stats["annotations"]["files"],
        "annotation_rows": stats["annotations"]["rows"],
        "annotation_problems": _problems_table(stats["annotations"]),
        **agreement_metadata(stats["agreement"]),
    })
    review = result.review_queue
    yield dg.Output(review, "review_queue", metadata={
        "rows": review.height,
        "by_reason": _bars(dict(review.group_by("reason").len().iter_rows())),
        "lowest_scores": _md_table(["record_id", "reason", "prediction", "score", "chars"],
                                   [[r, why, label, f"{score:.3f}", chars] for r, why, label, score, chars in
                                    review.sort("score").head(8).select(
                                        "record_id", "reason", "label", "score",
                                        pl.col("text").str.len_chars()).rows()]),
        "tasks": dg.MetadataValue.path(str(paths["tasks"])),
        "label_config": dg.MetadataValue.path(str(paths["label_config"])),
        "dagster/row_count": review.height,
    })


def _problems_table(annotations: dict) -> dg.MetadataValue:
    problems = annotations["problems"]
    if not problems:
        return dg.MetadataValue.md("_none_")
    more = annotations["problems_total"] - len(problems)
    table = _md_table(["file", "where", "problem"], [[p["file"], p["where"], p["reason"]] for p in problems]).value
    return dg.MetadataValue.md(table + (f"\n\n… and {more} more" if more else ""))


def _annotator_label(annotator: str) -> str:
    """Annotators by id, e-mail addresses without their domain: enough to tell people apart in the UI."""
    return annotator.split("@", 1)[0] + "@…" if "@" in annotator else annotator


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def agreement_metadata(report: dict) -> dict:
    """Inter-annotator agreement as tables and an annotator-vs-consensus confusion plot."""
    if not report["records"]:
        return {"annotation_agreement": dg.MetadataValue.md(
            "_no record labeled by two or more annotators yet: agreement needs overlapping annotations_")}
    overall = _md_table(["records (2+ annotators)", "annotations", "annotators", "Krippendorff's alpha",
                         "Fleiss' kappa", "Cohen's kappa (mean of pairs)", "pairs"],
                        [[report["records"], report["annotations"], report["annotators"],
                          _fmt(report["krippendorff_alpha"]), _fmt(report["fleiss_kappa"]),
                          _fmt(report["cohen_kappa_mean"]), report["cohen_pairs"]]])
    per_label = _md_table(["label", "annotations", "records (consensus)", "kappa (label vs rest)", "mean agreement"],
                          [[r["label"], r["annotations"], r["records"], _fmt(r["kappa"]), _fmt(r["mean_agreement"])]
                           for r in report["per_label"]])
    per_annotator = _md_table(["annotator", "annotations", "scored", "accuracy vs consensus", "kappa vs consensus"],
                              [[_annotator_label(r["annotator"]), r["annotations"], r["scored"], _fmt(r["accuracy"]),
                                _fmt(r["kappa"])] for r in report["per_annotator"]])
    return {"annotation_agreement": overall, "agreement_per_label": per_label,
            "agreement_per_annotator": per_annotator, "annotator_confusion": _confusion_plot(report["confusion"])}


def _confusion_plot(confusion: dict) -> dg.MetadataValue:
    """A heat map (PNG, embedded) of annotator labels against the consensus, with the counts as a table."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = confusion["labels"], confusion["matrix"]
    table = _md_table(["annotator said \\ consensus", *labels],
                      [[label, *row] for label, row in zip(labels, matrix)]).value
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(labels), 1.0 + 0.8 * len(labels)), dpi=80)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("consensus")
    ax.set_ylabel("annotator")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(j, i, n, ha="center", va="center", color="white" if n > top / 2 else "black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    image = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![annotator vs consensus](data:image/png;base64,{image})\n\n{table}")


@dg.asset(name="bias_report", group_name="reporting", kinds={"polars"}, owners=OWNERS,
          description="Bias report: per label, how many records mention common demographic term "
                      "groups (gender, age, nationality, religion), with the label distribution. A non-blocking "
                      "check warns when a group is far over- or under-represented (rule: finetune.yaml `bias`).")
def bias_report_table(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      labeled_corpus: pl.DataFrame) -> pl.DataFrame:
    require_upstream_checks(context, "labeled_corpus")
    report = bias_report(labeled_corpus)
    overall = report.filter(pl.col("label") == ALL_LABELS)
    mentioned = report.filter((pl.col("mentions") > 0) & (pl.col("label") != ALL_LABELS)).sort("dimension", "group",
                                                                                                  "label")
    findings = bias_findings(report, pipeline.settings().bias)
    context.add_output_metadata({**settings_used(pipeline, "bias"),
        "mentions_by_group": _bars({f"{r['dimension']}/{r['group']}": r["mentions"]
                                    for r in overall.iter_rows(named=True) if r["mentions"]}),
        "mentions_by_label": _md_table(
            ["dimension", "group", "label", "records mentioning", "share of label", "share of dimension"],
            [[r["dimension"], r["group"], r["label"], r["mentions"], f"{r['share_of_records']:.1%}",
              f"{r['share_of_dimension']:.0%}"] for r in mentioned.iter_rows(named=True)]),
        "label_distribution": _bars(dict(labeled_corpus.group_by("label").len().drop_nulls().iter_rows())),
        "warnings": dg.MetadataValue.md("\n".join(f"- {f}" for f in findings) or "_none_"),
        "dagster/row_count": report.height,
    })
    return report


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
    context.add_output_metadata({**settings_used(pipeline, "augmentation"), **meta, "augmented_rows": stats["augmented_rows"],
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
    context.add_output_metadata({**settings_used(pipeline, "splits"),
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
    from finetune_pipeline.training import registry  # torch: only the training steps pay the import
    from finetune_pipeline.training.compare import run_approach

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
    context.add_output_metadata({**settings_used(pipeline, "task", "training"),
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
                      "models/comparison/<approach>/; exports/approach_comparison.json/.md/.png. The approach "
                      "lora_adapter trained is reused from it, not trained twice.")
def approach_comparison(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                        dataset_splits: pl.DataFrame, lora_adapter: dict) -> dict:
    require_upstream_checks(context, "dataset_splits")
    from finetune_pipeline.training.compare import (comparison_markdown, compare_approaches, png_data_uri,
                                                    write_comparison)  # torch: only this step pays the import
    settings = pipeline.settings()
    approaches = ["instruction"] if settings.task == "instruction" else list(settings.training.compare)
    started = time.perf_counter()
    result = compare_approaches(training_splits(dataset_splits, settings.task), _labels(dataset_splits, settings),
                                settings.training, pipeline.models_dir() / "comparison", approaches,
                                data_snapshot=exports.content_digest(dataset_splits), log=context.log.info,
                                trained={lora_adapter["approach"]: lora_adapter})
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
    cleaning = pipeline.stage_stats("cleaned_corpus")
    policy = pipeline.settings().privacy.model_dump(exclude={"detector", "min_score", "single_word_names"})
    text = exports.data_card(counts, rejected_records, dataset_splits, cleaning.get("pii_by_type", {}), lora_adapter,
                             pii_policy=policy, erasure=cleaning.get("erasure"), comparison=approach_comparison)
    path = exports.write_text(text, pipeline.exports_dir() / "report.md")
    context.add_output_metadata({"report": dg.MetadataValue.md(text), "path": dg.MetadataValue.path(str(path))})
    return {"path": str(path), "stage_counts": counts}
