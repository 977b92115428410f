"""The approaches compared on the same splits: test metric, trainable parameters, wall time, peak memory.

Classification runs lora, full and feature (as configured in `training.compare`) and reports accuracy
and macro-F1 against the majority-class baseline; instruction tasks report loss and perplexity on test.
Given the folds of train + validation (cross_validation.py), every approach is also trained once per fold
and the result gains `cross_validation`: mean and standard deviation of the fold metric per approach, and
whether LoRA's difference from each other approach is larger than the fold-to-fold spread; with
`training.lora_search.enabled`, LoRA's settings are first chosen on those folds and the LoRA row is trained
with them. Each approach's model goes under `<output_root>/<approach>/` (the fold runs' models are
deleted). The approaches run one after another in this process, so on the CPU "peak memory" is the
process's peak resident memory while that approach ran (it includes what earlier ones left allocated); on
CUDA it is torch's peak allocated memory.
Imports no dagster.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from finetune_pipeline.atomic import write_bytes, write_text
from finetune_pipeline.reporting import (comparison_markdown, comparison_plot_png, cross_validation_markdown,
                                         model_card)
from finetune_pipeline.settings import Approach, TrainingSettings
from finetune_pipeline.tasks import TASKS, Task, task_named
from finetune_pipeline.training import cross_validation as cv
from finetune_pipeline.training.evaluate import majority_baseline
from finetune_pipeline.training.results import ComparisonResult, ComparisonRow, CrossValidationResult, TrainingResult


def task_training(approach: Approach) -> Task:
    """The kind whose recipes train `approach` (each approach belongs to one kind)."""
    for task in TASKS.values():
        if approach in task.recipes:
            return task
    known = ", ".join(a for task in TASKS.values() for a in task.recipes)
    raise ValueError(f"training.approach: no kind of task trains '{approach}' (known: {known})")


def run_approach(approach: Approach, splits: dict[str, tuple[list[str], list[str]]], labels: list[str],
                 cfg: TrainingSettings, output_dir: Path, data_snapshot: str = "", log=print,
                 task: Task | None = None) -> TrainingResult:
    """Train one approach by its kind's recipe (`Task.train`); `splits` holds the task's (inputs, targets)."""
    task = task or task_training(approach)
    return task.train(approach, splits, labels, cfg, output_dir, data_snapshot, log)


def comparison_row(result: TrainingResult) -> ComparisonRow:
    """One approach's row: its task's test scores, parameters, wall time (s), peak memory (MiB), epochs."""
    return ComparisonRow.from_dict({
        "approach": result.approach, "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters, "wall_time_s": result.wall_time_s,
        "peak_memory_mb": result.peak_memory_mb, "epochs_run": result.epochs, "device": result.device,
        "nan_loss": result.nan_loss, **task_named(result.task).comparison_scores(result)})


def compare_approaches(splits: dict[str, tuple[list[str], list[str]]], labels: list[str], cfg: TrainingSettings,
                       output_root: str | Path, approaches: list[Approach] | None = None,
                       data_snapshot: str = "", log=print,
                       trained: dict[str, TrainingResult | dict] | None = None,
                       folds: list[dict[str, tuple[list[str], list[str]]]] | None = None) -> ComparisonResult:
    """Run each approach (default `cfg.compare`) on the same splits.

    `trained`: results of approaches already trained on these splits with these settings (the pipeline's
    `lora_adapter`), reused instead of training them a second time. `folds`: per fold of train + validation
    its splits (`cross_validation.fold_splits`); given, the result also holds `cross_validation`."""
    approaches = list(approaches or cfg.compare)
    trained = {approach: TrainingResult.from_dict(result) for approach, result in (trained or {}).items()}
    configs = {approach: cfg for approach in approaches}
    search = None
    if folds and labels and cfg.lora_search.enabled and "lora" in approaches:
        log(f"approach_comparison: LoRA settings searched on {len(folds)} validation folds")
        search = cv.search_lora(folds, labels, cfg, run_approach, log)
        configs["lora"] = cv.with_lora_settings(cfg, search["chosen"])
        if configs["lora"] != cfg:
            trained.pop("lora", None)  # lora_adapter trained the configured values, not the chosen ones
    runs = []
    for approach in approaches:
        if approach in trained:
            log(f"approach_comparison: {approach} (already trained on these splits, reused)")
            runs.append(trained[approach])
            continue
        log(f"approach_comparison: {approach}")
        output_dir = Path(output_root) / approach
        runs.append(run_approach(approach, splits, labels, configs[approach], output_dir, data_snapshot, log))
        if approach == "lora" and search:
            _record_search(runs[-1], search, output_dir)
        gc.collect()  # let the next approach's peak memory start from what is really still in use
    task = task_named(runs[0].task if runs else None)
    result = ComparisonResult(task=task.name, rows=[comparison_row(run) for run in runs], data_snapshot=data_snapshot,
                              split_sizes={name: len(columns[0]) for name, columns in splits.items()})
    if labels:  # a label set has a majority class: the baseline every classifier is held against
        result.majority_baseline = majority_baseline(list(splits["train"][1]), list(splits["test"][1]))
    if folds:
        result.cross_validation = _cross_validate(approaches, folds, labels, configs, task, search, log)
    return result


def _cross_validate(approaches: list[Approach], folds: list, labels: list[str], configs: dict, task, search,
                    log) -> CrossValidationResult:
    """Every approach once per fold (LoRA's chosen settings' fold scores reused from the search)."""
    started = time.perf_counter()
    metric = task.fold_metric
    scores, wall = {}, {}
    for approach in approaches:
        if approach == "lora" and search:
            scores[approach], wall[approach] = search["scores"], 0.0
            continue
        log(f"approach_comparison: {approach} on {len(folds)} folds")
        scores[approach], wall[approach] = cv.fold_scores(approach, folds, labels, configs[approach], metric,
                                                           run_approach, log)
    summary = cv.summarize(scores, wall, task, [len(fold["validation"][0]) for fold in folds])
    if search:
        summary.lora_search = {k: search[k] for k in ("chosen", "lora_alpha", "mean", "tried", "wall_time_s")}
    summary.wall_time_s = round(time.perf_counter() - started, 1)
    return summary


def _record_search(result: TrainingResult, search: dict, output_dir: Path) -> None:
    """The LoRA settings chosen on the validation folds, in the comparison's LoRA metrics.json and model card."""
    result.lora_search = {"chosen": search["chosen"], "lora_alpha": search["lora_alpha"],
                          "folds": search["folds"], "mean_fold_macro_f1": search["mean"],
                          "settings_tried": len(search["tried"])}
    write_text(result.to_json(), output_dir / "metrics.json")
    write_text(model_card(result), output_dir / "README.md")


def write_comparison(result: ComparisonResult | dict, exports_dir: str | Path) -> dict[str, Path]:
    """exports/approach_comparison.json, .md and .png, each written whole (temporary file, then rename)."""
    result = ComparisonResult.from_dict(result)
    exports_dir = Path(exports_dir)
    paths = {ext: exports_dir / f"approach_comparison.{ext}" for ext in ("json", "md", "png")}
    write_text(result.to_json(), paths["json"])
    cross = ("\n## Cross-validated (folds of train + validation)\n\n" + cross_validation_markdown(result) + "\n"
             if result.cross_validation else "")
    write_text("# Approach comparison (test split)\n\n" + comparison_markdown(result) + "\n" + cross, paths["md"])
    write_bytes(comparison_plot_png(result), paths["png"])
    return paths
