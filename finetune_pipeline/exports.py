"""Exports under `$FINETUNE_DATA_DIR/exports/`: the splits (DatasetDict + JSONL), folds, rejects and
the data card. Every export is written to a temporary path and renamed into place, so a reader never
loads a half-written file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from finetune_pipeline.records import SPLITS

# Columns exported per record: the corpus columns minus run-specific ones (ingest time), so the same
# inputs give byte-identical exports.
EXPORT_COLUMNS = ["record_id", "text", "label", "label_source", "label_confidence", "label_model", "label_agreement",
                  "split", "group_id",
                  "source_uri", "source_type", "locator", "content_sha256", "augmented_from", "augmentation",
                  "augmentation_model", "prompt", "response", "messages"]


def with_messages(frame: pl.DataFrame) -> pl.DataFrame:
    """Instruction records (prompt/response) also in chat form: `messages` = [user, assistant], the
    conversational format TRL's SFTTrainer takes as is. Other frames are returned unchanged."""
    if not {"prompt", "response"} <= set(frame.columns) or frame["prompt"].null_count() == frame.height:
        return frame
    return frame.with_columns(pl.concat_list(
        pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content")),
        pl.struct(pl.lit("assistant").alias("role"), pl.col("response").alias("content")),
    ).alias("messages"))


@contextmanager
def atomic_path(target: Path):
    """Yield a temporary sibling path; on success it replaces `target` (file or folder)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def export_splits(splits: pl.DataFrame, exports_dir: Path) -> Path:
    """`exports/splits/`: a `datasets.DatasetDict` (load_from_disk) plus `<split>.jsonl` files; instruction
    records also carry `messages` (chat form)."""
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one bar per shard and split drowns the run log

    splits = with_messages(splits)
    columns = [c for c in EXPORT_COLUMNS if c in splits.columns]
    target = exports_dir / "splits"
    with atomic_path(target) as tmp:
        parts = {}
        for name in SPLITS:
            part = splits.filter(pl.col("split") == name).select(columns).sort("record_id")
            parts[name] = Dataset(part.to_arrow())
        DatasetDict(parts).save_to_disk(str(tmp))
        for name in SPLITS:
            splits.filter(pl.col("split") == name).select(columns).sort("record_id").write_ndjson(tmp / f"{name}.jsonl")
    return target


def write_parquet(frame: pl.DataFrame, target: Path) -> Path:
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp)
    return target


def write_text(text: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def data_card(stage_counts: list[dict], rejects: pl.DataFrame, splits: pl.DataFrame | None,
              pii_by_type: dict[str, int], training: dict | None, pii_policy: dict[str, str] | None = None,
              erasure: dict | None = None, comparison: dict | None = None) -> str:
    """The run's data card (`report.md`): counts, rejects by reason, label distribution per split,
    PII counts by type and the action taken (never values), erasure requests honoured (request ids,
    never subjects), the evaluation and the approach comparison."""
    lines = ["# Data card", "", "## Rows per stage", "", "| stage | in | out | rejected | augmented rows added |",
             "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['rows_in']} | {s['rows_out']} | {s['rows_rejected']} | {s.get('augmented', 0)} |"
              for s in stage_counts]
    lines += ["", "## Rejects by stage and reason", "", "| stage | reason | count |", "|---|---|---|"]
    if not rejects.is_empty():
        for stage, reason, n in rejects.group_by("stage", "reason").len().sort("stage", "reason").iter_rows():
            lines.append(f"| {stage} | {reason} | {n} |")
    lines += ["", "## Personal data found (by type; values never shown)", ""]
    if pii_policy:
        lines += ["| type | found | action |", "|---|---|---|"]
        lines += [f"| {kind} | {pii_by_type.get(kind, 0)} | {action} |" for kind, action in pii_policy.items()]
    else:
        lines += [f"- {kind}: {n}" for kind, n in sorted(pii_by_type.items())] or ["- none found"]
    if erasure is not None:
        removed = erasure.get("removed_by_request", {})
        lines += ["", "## Erasure requests (right to erasure; subjects never shown)", ""]
        if removed:
            lines += ["| request | status | records removed |", "|---|---|---|"]
            lines += [f"| {request_id} | honoured | {n} |" for request_id, n in sorted(removed.items())]
        else:
            lines.append("- no requests in erasure_requests.csv")
    if splits is not None and not splits.is_empty():
        sizes = dict(splits.group_by("split").len().iter_rows())
        lines += ["", "## Split sizes", "", "| split | rows |", "|---|---|"]
        lines += [f"| {name} | {sizes.get(name, 0)} |" for name in SPLITS]
        lines += ["", "## Labels per split", "", "| split | label | originals | augmented |", "|---|---|---|---|"]
        table = (splits.with_columns(pl.col("augmented_from").is_not_null().alias("aug"))
                 .group_by("split", "label").agg((~pl.col("aug")).sum().alias("orig"), pl.col("aug").sum().alias("augm"))
                 .sort("split", "label"))
        lines += [f"| {s} | {label} | {o} | {a} |" for s, label, o, a in table.iter_rows()]
    if training and training.get("task") == "instruction":
        t, b = training["test"], training["base_model_test"]
        lines += ["", "## Evaluation (test split, response tokens)", "",
                  "| model | loss | perplexity | trainable params |", "|---|---|---|---|",
                  f"| {training['approach']} (LoRA) | {t['loss']:.4f} | {t['perplexity']:.2f} | "
                  f"{training['trainable_parameters']:,} |",
                  f"| base model | {b['loss']:.4f} | {b['perplexity']:.2f} | 0 |"]
    elif training:
        t, b = training["test"], training["majority_baseline"]
        lines += ["", "## Evaluation (test split)", "", "| approach | accuracy | macro-F1 | trainable params |",
                  "|---|---|---|---|",
                  f"| {training['approach']} | {t['accuracy']:.3f} | {t['macro_f1']:.3f} | {training['trainable_parameters']:,} |",
                  f"| majority class | {b['accuracy']:.3f} | {b['macro_f1']:.3f} | 0 |"]
    if comparison:
        from finetune_pipeline.training.compare import comparison_markdown

        device = comparison["rows"][0]["device"] if comparison["rows"] else "none"
        lines += ["", "## Approach comparison (same splits, test split)", "",
                  f"Device: {device}. Peak memory: on the CPU the process's resident memory while the approach "
                  "ran; on CUDA torch's peak allocation.", "", comparison_markdown(comparison)]
    return "\n".join(lines) + "\n"


def content_digest(splits: pl.DataFrame) -> str:
    """A short hash of what the splits contain (ids, texts, labels, splits): the data snapshot id."""
    import hashlib

    rows = splits.select("record_id", "content_sha256", "label", "split").sort("record_id").write_csv()
    return hashlib.sha256(rows.encode()).hexdigest()[:16]
