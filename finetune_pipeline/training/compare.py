"""The approaches compared on the same splits: test metric, trainable parameters, wall time, peak memory.

Classification runs lora, full and feature (as configured in `training.compare`) and reports accuracy
and macro-F1 against the majority-class baseline; instruction tasks report loss and perplexity on test.
Each approach's model goes under `<output_root>/<approach>/`. The approaches run one after another in
this process, so on the CPU "peak memory" is the process's peak resident memory while that approach
ran (it includes what earlier ones left allocated); on CUDA it is torch's peak allocated memory.
Imports no dagster.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from finetune_pipeline.atomic import write_bytes, write_text
from finetune_pipeline.reporting import comparison_markdown, comparison_plot_png
from finetune_pipeline.settings import Approach, TrainingSettings
from finetune_pipeline.tasks import task_named
from finetune_pipeline.training.classify import train_classifier
from finetune_pipeline.training.evaluate import majority_baseline
from finetune_pipeline.training.feature import train_feature_classifier
from finetune_pipeline.training.instruction import train_instruction


def run_approach(approach: Approach, splits: dict[str, tuple[list[str], list[str]]], labels: list[str],
                 cfg: TrainingSettings, output_dir: Path, data_snapshot: str = "", log=print) -> dict:
    """Train one approach; `splits` holds (texts, labels), or (prompts, responses) for instruction."""
    if approach == "feature":
        return train_feature_classifier(splits, labels, cfg, output_dir, data_snapshot, log)
    if approach == "instruction":
        pairs = {name: list(zip(*columns)) for name, columns in splits.items()}
        return train_instruction(pairs, cfg, output_dir, data_snapshot, log)
    return train_classifier(splits, labels, cfg, output_dir, approach=approach, data_snapshot=data_snapshot, log=log)


def comparison_row(metrics: dict) -> dict:
    """One approach's row: its task's test scores, parameters, wall time (s), peak memory (MiB), epochs."""
    return {"approach": metrics["approach"], "trainable_parameters": metrics["trainable_parameters"],
            "total_parameters": metrics["total_parameters"], "wall_time_s": metrics["wall_time_s"],
            "peak_memory_mb": metrics["peak_memory_mb"], "epochs_run": metrics.get("epochs_run", 1),
            "device": metrics["device"], "nan_loss": metrics["nan_loss"],
            **task_named(metrics.get("task")).comparison_scores(metrics)}


def compare_approaches(splits: dict[str, tuple[list[str], list[str]]], labels: list[str], cfg: TrainingSettings,
                       output_root: str | Path, approaches: list[Approach] | None = None,
                       data_snapshot: str = "", log=print, trained: dict[str, dict] | None = None) -> dict:
    """Run each approach (default `cfg.compare`) on the same splits; {"task", "rows", ...}.

    `trained`: metrics of approaches already trained on these splits with these settings (the pipeline's
    `lora_adapter`), reused instead of training them a second time."""
    approaches = list(approaches or cfg.compare)
    trained = trained or {}
    runs = []
    for approach in approaches:
        if approach in trained:
            log(f"approach_comparison: {approach} (already trained on these splits, reused)")
            runs.append(trained[approach])
            continue
        log(f"approach_comparison: {approach}")
        runs.append(run_approach(approach, splits, labels, cfg, Path(output_root) / approach, data_snapshot, log))
        gc.collect()  # let the next approach's peak memory start from what is really still in use
    task = task_named(runs[0].get("task") if runs else None)
    result = {"task": task.name, "rows": [comparison_row(metrics) for metrics in runs],
              "data_snapshot": data_snapshot,
              "split_sizes": {name: len(columns[0]) for name, columns in splits.items()}}
    if labels:  # a label set has a majority class: the baseline every classifier is held against
        result["majority_baseline"] = majority_baseline(list(splits["train"][1]), list(splits["test"][1]))
    return result


def write_comparison(result: dict, exports_dir: str | Path) -> dict[str, Path]:
    """exports/approach_comparison.json, .md and .png, each written whole (temporary file, then rename)."""
    exports_dir = Path(exports_dir)
    paths = {ext: exports_dir / f"approach_comparison.{ext}" for ext in ("json", "md", "png")}
    write_text(json.dumps(result, indent=2), paths["json"])
    write_text("# Approach comparison (test split)\n\n" + comparison_markdown(result) + "\n", paths["md"])
    write_bytes(comparison_plot_png(result), paths["png"])
    return paths
