"""Cross-validation of the approach comparison (seed 1.5: k-fold for smaller data sets), and LoRA's settings
chosen on the validation folds.

Fold i of train + validation (`splits.cross_validation_folds`: stratified, group-aware, the test split never
in a fold) is in turn the validation data of a run trained on the other folds, with the augmented rows
derived from their records (those derived from fold i's records are left out). The fold both stops the run
early (and picks the feature approach's C) and scores it: the same for every approach, so the approaches
compare fairly, but the fold scores are slightly optimistic. The held-out test split is never handed to
these runs; the comparison's test row stays the unbiased figure.

Per approach: the mean and standard deviation (ddof 1) of the fold metric (macro-F1, or response-token loss
for instruction tasks). LoRA against each other approach, paired by fold: d_i = LoRA_i - other_i. The
difference counts as larger than the fold-to-fold spread when |mean(d)| > std(d) (ddof 1), which is the
paired t statistic |t| > sqrt(k); the paired t-test's two-sided p-value is reported beside it.
Imports no dagster.
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Callable

import numpy as np
import polars as pl

from finetune_pipeline.settings import Approach, TrainingSettings
from finetune_pipeline.tasks import Splits, Task
from finetune_pipeline.training.results import CrossValidationResult, TrainingResult

# trains one approach on splits into a folder and returns its result: compare.run_approach's signature
Trainer = Callable[..., TrainingResult]
SPREAD_RULE = ("LoRA's difference from an approach is larger than the fold-to-fold spread when |mean of the "
               "per-fold differences (LoRA - other)| > their standard deviation (paired by fold, ddof 1), i.e. "
               "|t| > sqrt(k) for the paired t statistic")
SEARCHED = ("lora_r", "learning_rate", "epochs", "target_modules")  # LoraSearchSettings' dimensions, in order
# a searched dimension -> its field of training.lora (epochs: of training)
_LORA_FIELD = {"lora_r": "r", "learning_rate": "learning_rate", "target_modules": "target_modules"}


def fold_splits(frame: pl.DataFrame, folds: pl.DataFrame, task: Task) -> list[Splits]:
    """Per fold the task's (inputs, targets) splits: train = the other folds' records and the augmented rows
    derived from them; validation and test = the fold's original records. `frame` is `dataset_splits`'
    output, `folds` its `record_id, fold` (`splits.cross_validation_folds`); its test split is never used."""
    if folds.is_empty():
        return []
    pool = frame.filter(pl.col("split").is_in(["train", "validation"]))
    source = pl.coalesce("augmented_from", "record_id") if "augmented_from" in pool.columns else pl.col("record_id")
    pool = (pool.with_columns(source.alias("_source"))
            .join(folds.select(pl.col("record_id").alias("_source"), "fold"), on="_source", how="inner"))
    original = pl.col("augmented_from").is_null() if "augmented_from" in pool.columns else pl.lit(True)
    result = []
    for i in range(int(folds["fold"].max()) + 1):
        held = pool.filter((pl.col("fold") == i) & original)
        part = pl.concat([pool.filter(pl.col("fold") != i).with_columns(pl.lit("train").alias("split")),
                          held.with_columns(pl.lit("validation").alias("split")),
                          held.with_columns(pl.lit("test").alias("split"))])
        result.append(task.training_splits(part.drop("_source", "fold")))
    return result


def fold_scores(approach: Approach, folds: list[Splits], labels: list[str], cfg: TrainingSettings,
                metric: str, train: Trainer, log=print, fold_metrics: list[dict] | None = None
                ) -> tuple[list[float], float]:
    """(the metric on each fold's held-out records, total wall time in s) of `approach` trained once per
    fold by `train`. The models go to a temporary folder, deleted after each fold. `fold_metrics`, when
    given, receives each fold's whole held-out metrics dict."""
    cfg = cfg.model_copy(update={"instruction": cfg.instruction.model_copy(update={"generation_samples": 0}),
                                 "resume": False})  # no greedy answers per fold
    scores, started = [], time.perf_counter()
    for i, splits in enumerate(folds):
        with tempfile.TemporaryDirectory(prefix=f"cv-{approach}-") as folder:
            result = TrainingResult.from_dict(train(approach, splits, labels, cfg, folder, log=lambda message: None))
        if fold_metrics is not None:
            fold_metrics.append(dict(result.test))
        scores.append(float(result.test[metric]))  # the fold's records stand in as its "test"
        log(f"cross-validation: {approach} fold {i + 1}/{len(folds)}: {metric} {scores[-1]:.4f}")
    return scores, round(time.perf_counter() - started, 1)


def paired_difference(lora: list[float], other: list[float], higher_is_better: bool = True) -> dict:
    """LoRA against another approach over the same folds: mean and std (ddof 1) of d_i = lora_i - other_i,
    whether |mean| > std (`SPREAD_RULE`), which side is better, and the paired t-test's two-sided p-value."""
    from scipy import stats

    d = np.asarray(lora, dtype=float) - np.asarray(other, dtype=float)
    mean, std = float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    if std > 0:
        p_value = float(stats.ttest_rel(lora, other).pvalue)
    else:  # identical differences on every fold: certain when non-zero, nothing when zero
        p_value = 1.0 if mean == 0 else 0.0
    larger = bool(abs(mean) > std) if not math.isnan(std) else False
    better = "same" if mean == 0 else ("lora" if (mean > 0) == higher_is_better else "other")
    return {"mean_difference": mean, "std_difference": std, "larger_than_spread": larger, "better": better,
            "p_value": p_value}


def summarize(scores: dict[str, list[float]], wall_times: dict[str, float], task: Task,
              fold_sizes: list[int]) -> CrossValidationResult:
    """The cross-validation part of the comparison result: per approach mean, std and fold scores; LoRA
    against each other approach (`paired_difference`)."""
    key = task.fold_metric
    higher = next(m for m in task.metrics if m.key == key).higher_is_better
    rows = [{"approach": a, "mean": float(np.mean(s)), "std": float(np.std(s, ddof=1)) if len(s) > 1 else 0.0,
             "scores": s, "wall_time_s": wall_times.get(a, 0.0)} for a, s in scores.items()]
    reference = "lora" if "lora" in scores else None
    versus = [{"approach": a, **paired_difference(scores[reference], s, higher)}
              for a, s in scores.items() if reference and a != reference]
    return CrossValidationResult(folds=len(fold_sizes), fold_sizes=fold_sizes, metric=key, higher_is_better=higher,
                                 rows=rows, lora_versus=versus, rule=SPREAD_RULE)


def with_lora_settings(cfg: TrainingSettings, chosen: dict) -> TrainingSettings:
    """`cfg` with LoRA's rank, learning rate, epochs and target modules from `chosen`; lora_alpha scales
    with the rank, so the LoRA scale alpha / r stays as configured."""
    alpha = max(1, round(cfg.lora.alpha * chosen["lora_r"] / cfg.lora.r))
    lora = cfg.lora.model_copy(update={**{field: chosen[name] for name, field in _LORA_FIELD.items()},
                                       "target_modules": list(chosen["target_modules"]), "alpha": alpha})
    return cfg.model_copy(update={"lora": lora, "epochs": chosen["epochs"]})


def search_lora(folds: list[Splits], labels: list[str], cfg: TrainingSettings, train: Trainer, log=print) -> dict:
    """LoRA's rank, learning rate, epochs and target modules chosen on the validation folds (classification):
    one dimension at a time (`SEARCHED`), each value of `cfg.lora_search` tried with the others at the best
    so far, kept when its mean fold macro-F1 is higher, or equal with a lower mean fold log loss (the
    held-out cross-entropy: on data where every setting reaches the same macro-F1 it still says which one
    is surer of the right labels); a full tie keeps what was there. Returns the chosen settings, their fold
    scores and every setting tried."""
    space = cfg.lora_search
    best = {"lora_r": cfg.lora.r, "learning_rate": cfg.lora.learning_rate, "epochs": cfg.epochs,
            "target_modules": list(cfg.lora.target_modules)}
    tried: list[dict] = []

    def score(candidate: dict) -> dict:
        for entry in tried:
            if entry["settings"] == candidate:
                return entry
        per_fold: list[dict] = []
        scores, wall = fold_scores("lora", folds, labels, with_lora_settings(cfg, candidate), "macro_f1", train,
                                  log, per_fold)
        losses = [m["log_loss"] for m in per_fold if "log_loss" in m]
        entry = {"settings": candidate, "scores": scores, "mean": float(np.mean(scores)),
                 "mean_log_loss": float(np.mean(losses)) if len(losses) == len(scores) else None,
                 "wall_time_s": wall}
        tried.append(entry)
        loss = f", mean fold log loss {entry['mean_log_loss']:.4f}" if entry["mean_log_loss"] is not None else ""
        log(f"lora_search: {candidate}: mean fold macro-F1 {entry['mean']:.4f}{loss}")
        return entry

    def better(entry: dict, top: dict) -> bool:
        if entry["mean"] != top["mean"]:
            return entry["mean"] > top["mean"]
        return None not in (entry["mean_log_loss"], top["mean_log_loss"]) and \
            entry["mean_log_loss"] < top["mean_log_loss"]

    top = score(best)
    for name in SEARCHED:
        for value in getattr(space, name):
            entry = score({**top["settings"], name: value})
            if better(entry, top):
                top = entry
    return {"chosen": top["settings"], "lora_alpha": with_lora_settings(cfg, top["settings"]).lora.alpha,
            "scores": top["scores"], "mean": top["mean"], "mean_log_loss": top["mean_log_loss"],
            "folds": len(folds), "tried": tried,
            "wall_time_s": round(sum(t["wall_time_s"] for t in tried), 1)}
