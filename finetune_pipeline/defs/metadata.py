"""What each asset shows on its page in the UI: counts, tables, text bar charts, histograms, previews and
plots, built from a stage's result and statistics. Nothing here shows record text except the start of
the kept text of the largest duplicate clusters (already cleaned and redacted); personal data never.
"""


import json

import dagster as dg
import polars as pl

from finetune_pipeline import reporting
from finetune_pipeline.cleaning.bias import ALL_LABELS
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.execution import cluster_summary
from finetune_pipeline.records import SPLITS, StageResult
from finetune_pipeline.settings import ExecutionSettings, Settings
from finetune_pipeline.shards import Manifest

NONE = dg.MetadataValue.md("_none_")


def embedding_reuse(cache: EmbeddingCache | None) -> dict:
    """Vectors a stage took from its embedding cache and vectors it computed (nothing without a cache)."""
    return {"embeddings_reused": cache.reused, "embeddings_computed": cache.computed} if cache else {}


def table(headers: list[str], rows: list[list]) -> dg.MetadataValue:
    return dg.MetadataValue.md(reporting.markdown_table(headers, rows))


def bars(counts: dict[str, int]) -> dg.MetadataValue:
    """A text bar chart, largest first: reads at a glance in the asset page."""
    if not counts:
        return NONE
    top = max(counts.values())
    rows = [[k, v, "█" * max(1, round(20 * v / top))] for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return table(["value", "count", ""], rows)


def histogram(counts: dict[str, int], label: str = "bin") -> dg.MetadataValue:
    """Bars in the bins' own order (a distribution, not a ranking)."""
    if not counts or not any(counts.values()):
        return NONE
    top = max(counts.values())
    return table([label, "count", ""], [[k, v, "█" * round(20 * v / top)] for k, v in counts.items()])


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def preview(frame: pl.DataFrame) -> dg.MetadataValue:
    """First rows without the text itself: previews must never carry personal data."""
    cols = [c for c in ("record_id", "label", "source_type", "source_uri", "locator", "split") if c in frame.columns]
    head = frame.head(8).with_columns(pl.col("text").str.len_chars().alias("chars")) if "text" in frame.columns \
        else frame.head(8)
    cols += ["chars"] if "chars" in head.columns else []
    return table(cols, head.select(cols).rows())


def label_distribution(frame: pl.DataFrame) -> dg.MetadataValue:
    return bars(dict(frame.group_by("label").len().drop_nulls().iter_rows()))


def stage_metadata(rows_in: int, result: StageResult) -> dict:
    """What every corpus stage shows: rows in, out and rejected, rejects by reason, a preview, labels, lengths.
    Kept rows given as a ShardedDataset are scanned for these (a column at a time), never collected whole."""
    kept = result.kept
    rows = kept.lazy() if isinstance(kept, pl.DataFrame) else kept.scan()
    meta = {
        "rows_in": rows_in,
        "rows_out": kept.height,
        "rows_rejected": result.rejected.height,
        "rejects_by_reason": bars(result.reasons()),
        "preview": preview(kept if isinstance(kept, pl.DataFrame) else rows.head(8).collect()),
        "dagster/row_count": kept.height,
    }
    # every corpus stage's frame has `label` (records.py)
    meta["label_distribution"] = bars(dict(rows.group_by("label").len().drop_nulls().collect().iter_rows()))
    if "text" in kept.columns and kept.height:
        # the lengths only, the texts read a part at a time (the in-memory engine read every text at once:
        # 320 MB more at 1M records)
        lengths = rows.select(pl.col("text").str.len_chars().alias("n")).collect(engine="streaming").select(
            pl.col("n").median().alias("median"), pl.col("n").max().alias("max"))
        meta["text_chars_median"] = int(lengths["median"][0])
        meta["text_chars_max"] = int(lengths["max"][0])
    return meta


def dataset_metadata(manifest: Manifest, prefix: str = "dataset_") -> dict:
    """A stored dataset's manifest, as the IO manager records it on the output: rows, shards, bytes and the
    content digest (a hash of the shards' bytes: it identifies the data without showing any of it)."""
    return {f"{prefix}rows": manifest.rows, f"{prefix}shards": len(manifest.shards),
            f"{prefix}bytes": sum(s.bytes for s in manifest.shards), f"{prefix}digest": manifest.digest}


def settings_used(settings: Settings, *sections: str) -> dict:
    """The finetune.yaml sections (launchpad overrides included) the asset ran with."""
    return {"settings_used": dg.MetadataValue.json(
        {name: (value.model_dump(mode="json") if hasattr(value, "model_dump") else value)
         for name in sections for value in [getattr(settings, name)]})}


def execution_metadata(execution: ExecutionSettings) -> dict:
    """Where the stage ran: the backend, and with Ray the cluster's nodes, CPUs and GPUs."""
    meta = {"execution_backend": execution.backend}
    if execution.backend == "ray":
        meta["ray_cluster"] = dg.MetadataValue.json(cluster_summary())
    return meta


# ---- per stage --------------------------------------------------------------------------------------------

def collection_metadata(stats, sql_sources: int) -> dict:
    return {
        "sources": stats.files + sql_sources,
        "sources_parsed": stats.parsed,
        "sources_from_cache": stats.cached,
        "by_source_type": table(["type", "sources", "records", "rejects", "parsed", "from cache"],
                                [[t, c.files, c.records, c.rejects, c.parsed, c.cached]
                                 for t, c in sorted(stats.by_source_type.items())]),
        "recognised_columns": dg.MetadataValue.md("\n".join(f"- {n}" for n in stats.recognised_columns)
                                                  or "_none: every table had its configured columns_"),
    }


def cleaning_metadata(stats, pii_policy: dict[str, str]) -> dict:
    """PII counts by type with the action taken, and erasure requests by id: never a value or a subject."""
    erased = [[request_id, n] for request_id, n in sorted(stats.erasure.removed_by_request.items())]
    return {
        "texts_changed": stats.texts_changed,
        "pii_by_type": bars(stats.pii_by_type),
        "pii_report": table(["type", "found", "action"],
                            [[kind, stats.pii_by_type.get(kind, 0), action] for kind, action in pii_policy.items()]),
        "records_with_pii": stats.records_with_pii,
        "pii_redaction_passes": dg.MetadataValue.md(
            "records needing a detector pass after the first (redaction to a fixed point): "
            + (", ".join(f"pass {k}: {n}" for k, n in sorted(stats.pii_passes.items())) or "none")
            + f"; rejected, still found after the last pass: {stats.pii_unresolved}"),
        "pii_allowed": stats.pii_allowed,  # findings privacy.allow left in the text
        "pii_denied": stats.pii_denied,  # spans privacy.deny redacted
        "quality_flags": bars(stats.quality_flags),
        "erasure_requests": table(["request", "records removed"], erased) if erased
        else dg.MetadataValue.md("_no erasure requests_"),
        "records_erased": stats.erasure.records_removed,
        "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in stats.warnings) or "_none_"),
    }


def dedup_metadata(stats) -> dict:
    largest = [[c.group_id, c.size, c.exact_duplicate, c.near_duplicate, c.semantic_duplicate, _cell(c.preview)]
               for c in stats.largest_clusters]
    meta = {
        "exact_duplicates": stats.exact_duplicates,
        "near_duplicates": stats.near_duplicates,
        "semantic_duplicates": stats.semantic_duplicates,
        "clusters_with_duplicates": stats.clusters_with_duplicates,
        "cluster_sizes": histogram(stats.cluster_sizes, "records in cluster"),
        "largest_clusters": table(["group_id", "records", "exact", "near", "semantic", "kept text (start)"], largest)
        if largest else NONE,
        "near_candidate_pairs": stats.near_candidate_pairs,
        "near_kept_apart_naming_different_things": stats.near_kept_apart,
        "near_similarity_histogram": histogram(stats.near_similarity_histogram, "estimated Jaccard from"),
    }
    if stats.semantic_nearest_histogram:
        meta["semantic_nearest_histogram"] = histogram(stats.semantic_nearest_histogram, "nearest cosine from")
    if stats.domain is not None:  # the domain relevance filter: counts and scores, never text
        d = stats.domain
        meta.update({"off_domain": d.off_domain, "domain_scored": d.scored, "domain_method": d.method,
                     "domain_policy": d.policy, "domain_threshold": d.threshold,
                     "domain_calibration": d.calibration or "absolute", "domain_reject_share": d.reject_share,
                     "domain_guard": d.guard or "not needed",
                     "domain_examples": f"{d.in_domain_examples} in-domain, {d.out_of_domain_examples} out-of-domain",
                     "domain_score_histogram": histogram(d.score_histogram,
                                                         f"relevance score (threshold {d.threshold})")})
    if stats.prompts is not None:  # conversations; record ids only, never text
        p = stats.prompts
        meta.update({"duplicate_prompts": p.duplicate_prompts, "conflicts": p.conflicts,
                     "conflict_records": p.conflict_records, "conflict_policy": p.policy,
                     "prompts_kept_apart_naming_different_things": p.prompts_kept_apart,
                     "conflicts_listed": table(["conflict_id", "record ids (first seen first)"],
                                               [[c.conflict_id, ", ".join(c.record_ids)] for c in p.conflicts_listed])
                     if p.conflicts_listed else NONE})
    return meta


def labeling_metadata(stats) -> dict:
    model, annotations = stats.model, stats.annotations
    meta = {
        "label_set": ", ".join(stats.labels),
        "by_label_source": bars(stats.by_label_source),
        "model_labeled": model.accepted,
        "label_model": model.name or "none (no record needed one)",
        "in_review": sum(stats.in_review.values()),
        "in_review_by_reason": bars({k: v for k, v in stats.in_review.items() if v}),
        **({"conflicts": bars(stats.conflicts)} if stats.conflicts else {}),
        "annotation_files": annotations.files,
        "annotation_rows": annotations.rows,
        "annotation_problems": _problems_table(annotations.problems, annotations.problems_total),
        **agreement_metadata(stats.agreement),
    }
    if model.mean_confidence is not None:
        meta["model_mean_confidence"] = model.mean_confidence
    return meta


def _problems_table(problems: list[dict], total: int) -> dg.MetadataValue:
    if not problems:
        return NONE
    more = total - len(problems)
    rows = reporting.markdown_table(["file", "where", "problem"], [[p["file"], p["where"], p["reason"]] for p in problems])
    return dg.MetadataValue.md(rows + (f"\n\n… and {more} more" if more else ""))


def _annotator_label(annotator: str) -> str:
    """Annotators by id, e-mail addresses without their domain: enough to tell people apart in the UI."""
    return annotator.split("@", 1)[0] + "@…" if "@" in annotator else annotator


def agreement_metadata(report: dict) -> dict:
    """Inter-annotator agreement as tables and an annotator-vs-consensus confusion plot."""
    if not report["records"]:
        return {"annotation_agreement": dg.MetadataValue.md(
            "_no record labeled by two or more annotators yet: agreement needs overlapping annotations_")}
    overall = table(["records (2+ annotators)", "annotations", "annotators", "Krippendorff's alpha",
                     "Fleiss' kappa", "Cohen's kappa (mean of pairs)", "pairs"],
                    [[report["records"], report["annotations"], report["annotators"],
                      _fmt(report["krippendorff_alpha"]), _fmt(report["fleiss_kappa"]),
                      _fmt(report["cohen_kappa_mean"]), report["cohen_pairs"]]])
    per_label = table(["label", "annotations", "records (consensus)", "kappa (label vs rest)", "mean agreement"],
                      [[r["label"], r["annotations"], r["records"], _fmt(r["kappa"]), _fmt(r["mean_agreement"])]
                       for r in report["per_label"]])
    per_annotator = table(["annotator", "annotations", "scored", "accuracy vs consensus", "kappa vs consensus"],
                          [[_annotator_label(r["annotator"]), r["annotations"], r["scored"], _fmt(r["accuracy"]),
                            _fmt(r["kappa"])] for r in report["per_annotator"]])
    reliability = ({"annotator_reliability": dg.MetadataValue.md(reporting.reliability_markdown(
        report["reliability"], report["confusion"]["labels"], _annotator_label))} if report.get("reliability") else {})
    return {"annotation_agreement": overall, "agreement_per_label": per_label,
            "agreement_per_annotator": per_annotator, "annotator_confusion": confusion_plot(report["confusion"]),
            **reliability}


def confusion_plot(confusion: dict) -> dg.MetadataValue:
    """A heat map (PNG, embedded) of annotator labels against the consensus, with the counts as a table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = confusion["labels"], confusion["matrix"]
    counts = reporting.markdown_table(["annotator said \\ consensus", *labels],
                                      [[label, *row] for label, row in zip(labels, matrix)])
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
    uri = reporting.png_data_uri(reporting.png_bytes(fig))
    return dg.MetadataValue.md(f"![annotator vs consensus]({uri})\n\n{counts}")


def review_metadata(review: pl.DataFrame, paths: dict) -> dict:
    """The review queue: counts by reason, its highest priorities and lowest scores (lengths, never the text)."""
    lowest = review.sort("score").head(8).select("record_id", "reason", "label", "score", pl.col("text").str.len_chars())
    top = review.filter(pl.col("priority").is_not_null()).sort("priority", descending=True).head(10)
    asked = [", ".join(_annotator_label(a) for a in json.loads(s or "[]")) for s in top["suggested_annotators"]]
    return {
        "rows": review.height,
        "by_reason": bars(dict(review.group_by("reason").len().iter_rows())),
        "highest_priority": table(
            ["record_id", "reason", "prediction", "priority", "uncertainty", "margin", "entropy", "disagreement",
             "class need", "annotators", "ask"],
            [[r["record_id"], r["reason"], r["label"] or "", *[f"{r[c]:.3f}" for c in
              ("priority", "uncertainty", "margin", "entropy", "disagreement", "class_need")],
              r["annotators_needed"], who] for r, who in zip(top.iter_rows(named=True), asked)]) if top.height else NONE,
        "lowest_scores": table(["record_id", "reason", "prediction", "score", "chars"],
                               [[r, why, label or "", "" if score is None else f"{score:.3f}", chars]
                                for r, why, label, score, chars in lowest.rows()]),
        # tasks, label_config, and pairwise_tasks, pairwise_label_config where pending pairs wait (labeling/pairwise.py)
        **{name: dg.MetadataValue.path(str(path)) for name, path in paths.items()},
        "dagster/row_count": review.height,
    }


def augmentation_metadata(stats) -> dict:
    return {
        "augmented_rows": stats.augmented_rows,
        "augmented_by_label": bars(stats.by_label),
        "augmented_by_technique": bars(stats.by_technique),
        "generated_dropped_by_reason": bars(stats.generated_dropped),
        "generator": stats.generator or "none",
        "generator_error": stats.generator_error or "none",
    }


def splits_metadata(splits: pl.DataFrame) -> dict:
    sizes = dict(splits.group_by("split").len().iter_rows())
    return {
        "split_sizes": table(["split", "rows"], [[s, sizes.get(s, 0)] for s in SPLITS]),
        "labels_per_split": table(["split", "label", "rows"], splits.group_by("split", "label").len()
                                  .sort("split", "label").rows()),
        "dagster/row_count": splits.height,
    }


def bias_metadata(report: pl.DataFrame, findings: list[str], labeled: pl.DataFrame) -> dict:
    """Mentions of demographic term groups overall and per label, and the warnings they raise."""
    overall = report.filter(pl.col("label") == ALL_LABELS)
    mentioned = report.filter((pl.col("mentions") > 0) & (pl.col("label") != ALL_LABELS)) \
        .sort("dimension", "group", "label")
    return {
        "mentions_by_group": bars({f"{r['dimension']}/{r['group']}": r["mentions"]
                                   for r in overall.iter_rows(named=True) if r["mentions"]}),
        "mentions_by_label": table(
            ["dimension", "group", "label", "records mentioning", "share of label", "share of dimension"],
            [[r["dimension"], r["group"], r["label"], r["mentions"], f"{r['share_of_records']:.1%}",
              f"{r['share_of_dimension']:.0%}"] for r in mentioned.iter_rows(named=True)]),
        "label_distribution": label_distribution(labeled),
        "warnings": dg.MetadataValue.md("\n".join(f"- {f}" for f in findings) or "_none_"),
        "dagster/row_count": report.height,
    }


def rejects_metadata(rejects: pl.DataFrame) -> dict:
    by = rejects.group_by("stage", "reason").len().sort("stage", "reason").rows()
    return {"rows": rejects.height, "by_stage_and_reason": table(["stage", "reason", "rows"], by),
            "dagster/row_count": rejects.height}
