"""The approaches compared on the same splits: test metric, trainable parameters, wall time, peak memory.

Classification runs lora, full and feature (as configured in `training.compare`) and reports accuracy
and macro-F1 against the majority-class baseline; instruction tasks report loss and perplexity on test.
Each approach's model goes under `<output_root>/<approach>/`. The approaches run one after another in
this process, so on the CPU "peak memory" is the process's peak resident memory while that approach
ran (it includes what earlier ones left allocated); on CUDA it is torch's peak allocated memory.
Imports no dagster.
"""

from __future__ import annotations

import base64
import gc
import io
import json
import math
from pathlib import Path

from finetune_pipeline.exports import atomic_path, write_text
from finetune_pipeline.settings import Approach, TrainingSettings
from finetune_pipeline.training.classify import train_classifier
from finetune_pipeline.training.feature import train_feature_classifier
from finetune_pipeline.training.instruction import train_instruction

CLASSIFICATION_COLUMNS = ["approach", "test_accuracy", "test_macro_f1", "trainable_parameters",
                          "wall_time_s", "peak_memory_mb", "epochs_run"]
INSTRUCTION_COLUMNS = ["approach", "test_loss", "test_perplexity", "trainable_parameters",
                       "wall_time_s", "peak_memory_mb", "epochs_run"]


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
    row = {"approach": metrics["approach"], "trainable_parameters": metrics["trainable_parameters"],
           "total_parameters": metrics["total_parameters"], "wall_time_s": metrics["wall_time_s"],
           "peak_memory_mb": metrics["peak_memory_mb"], "epochs_run": metrics.get("epochs_run", 1),
           "device": metrics["device"], "nan_loss": metrics["nan_loss"]}
    if metrics["approach"] == "instruction":
        return {**row, "test_loss": metrics["test"]["loss"], "test_perplexity": metrics["test"]["perplexity"],
                "base_model_test_loss": metrics["base_model_test"]["loss"]}
    return {**row, "test_accuracy": metrics["test"]["accuracy"], "test_macro_f1": metrics["test"]["macro_f1"]}


def compare_approaches(splits: dict[str, tuple[list[str], list[str]]], labels: list[str], cfg: TrainingSettings,
                       output_root: str | Path, approaches: list[Approach] | None = None,
                       data_snapshot: str = "", log=print, trained: dict[str, dict] | None = None) -> dict:
    """Run each approach (default `cfg.compare`) on the same splits; {"rows", "baseline", ...}.

    `trained`: metrics of approaches already trained on these splits with these settings (the pipeline's
    `lora_adapter`), reused instead of training them a second time."""
    approaches = list(approaches or cfg.compare)
    trained = trained or {}
    rows = []
    for approach in approaches:
        if approach in trained:
            log(f"approach_comparison: {approach} (already trained on these splits, reused)")
            rows.append(comparison_row(trained[approach]))
            continue
        log(f"approach_comparison: {approach}")
        metrics = run_approach(approach, splits, labels, cfg, Path(output_root) / approach, data_snapshot, log)
        rows.append(comparison_row(metrics))
        gc.collect()  # let the next approach's peak memory start from what is really still in use
    instruction = approaches == ["instruction"]
    result = {"task": "instruction" if instruction else "classification", "rows": rows,
              "data_snapshot": data_snapshot,
              "split_sizes": {name: len(columns[0]) for name, columns in splits.items()}}
    if not instruction:
        from finetune_pipeline.training.evaluate import majority_baseline

        result["majority_baseline"] = majority_baseline(list(splits["train"][1]), list(splits["test"][1]))
    return result


def _fmt(value, column: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if column == "trainable_parameters":
        return f"{value:,}"
    if column in ("test_accuracy", "test_macro_f1", "test_loss"):
        return f"{value:.3f}"
    if column in ("test_perplexity", "wall_time_s", "peak_memory_mb"):
        return f"{value:.1f}" if column != "peak_memory_mb" else f"{value:.0f}"
    return str(value)


HEADERS = {"approach": "approach", "test_accuracy": "test accuracy", "test_macro_f1": "test macro-F1",
           "test_loss": "test loss", "test_perplexity": "test perplexity", "trainable_parameters": "trainable params",
           "wall_time_s": "wall time (s)", "peak_memory_mb": "peak memory (MB)", "epochs_run": "epochs"}


def comparison_markdown(result: dict) -> str:
    """The comparison as a markdown table (plus the majority-class baseline row for classification)."""
    columns = INSTRUCTION_COLUMNS if result["task"] == "instruction" else CLASSIFICATION_COLUMNS
    lines = ["| " + " | ".join(HEADERS[c] for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row[c], c) for c in columns) + " |" for row in result["rows"]]
    if "majority_baseline" in result:
        b = result["majority_baseline"]
        lines.append(f"| majority class | {b['accuracy']:.3f} | {b['macro_f1']:.3f} | 0 | - | - | - |")
    return "\n".join(lines)


def comparison_plot_png(result: dict) -> bytes:
    """Bar charts: the test metric and the wall time per approach (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["approach"] for r in result["rows"]]
    metric, label = ("test_perplexity", "test perplexity (lower is better)") if result["task"] == "instruction" \
        else ("test_macro_f1", "test macro-F1")
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.bar(names, [r[metric] for r in result["rows"]], color="#4c72b0")
    left.set_title(label)
    if "majority_baseline" in result:
        left.axhline(result["majority_baseline"]["macro_f1"], color="grey", linestyle="--", label="majority class")
        left.legend(loc="lower right", fontsize=8)
    right.bar(names, [r["wall_time_s"] for r in result["rows"]], color="#dd8452")
    right.set_title("wall time (s)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def write_comparison(result: dict, exports_dir: str | Path) -> dict[str, Path]:
    """exports/approach_comparison.json, .md and .png, each written whole (temporary file, then rename)."""
    exports_dir = Path(exports_dir)
    paths = {ext: exports_dir / f"approach_comparison.{ext}" for ext in ("json", "md", "png")}
    write_text(json.dumps(result, indent=2), paths["json"])
    write_text("# Approach comparison (test split)\n\n" + comparison_markdown(result) + "\n", paths["md"])
    with atomic_path(paths["png"]) as tmp:
        tmp.write_bytes(comparison_plot_png(result))
    return paths


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
