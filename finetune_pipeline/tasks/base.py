"""The contract every kind of data fulfils (`Task`), and the pieces kinds share (`Metric`).

A kind of task owns what differs between kinds: its record columns, the text units cleaning and the PII
policy see, what dedup and the domain filter compare, its split grouping and stratification, its export
forms, its training recipes, metrics, gate and card sections. Stages receive the task (`task_for(settings)`
in `finetune_pipeline.tasks`) and call it; they never branch on its name, flags or the columns present.
Imports no dagster and no torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import polars as pl

from finetune_pipeline.records import SPLITS
from finetune_pipeline.settings import Approach, Settings, TrainingSettings

# split name -> (inputs, targets): (texts, labels) or (prompts, responses)
Splits = dict[str, tuple[list[str], list[str]]]


@dataclass(frozen=True)
class Metric:
    """A test metric: its key in metrics["test"], how people name it, how it prints."""

    key: str
    label: str
    digits: int  # decimals in evaluation tables
    higher_is_better: bool
    comparison_digits: int  # decimals in the approach-comparison table

    def format(self, value: float) -> str:
        return "nan" if value != value else f"{value:.{self.digits}f}"


def _score(scores: dict, metric: Metric) -> float:
    """A metric's value; NaN in results saved before the metric existed."""
    return scores.get(metric.key, float("nan"))


class Task(ABC):
    """What a kind of task decides: columns, approaches, labels, metric, baseline, evaluation rows."""

    name: str
    input_column: str
    target_column: str
    metrics: tuple[Metric, ...]  # shown in evaluation tables, in order
    headline: Metric  # what the approach comparison ranks and plots
    baseline_name: str
    evaluated_on: str  # what the test scores are computed over, in words
    base_model_setting: str  # the TrainingSettings field naming the model it tunes (None there: the default)
    labeled: bool  # every record needs a label from the label set (labeling rejects the rest)
    conversational: bool  # records are conversations, read by the conversation readers (sources/conversations.py)

    # ---- reading and cleaning: what sources/, cleaning/ and domain.py ask (one helper's section)

    # ---- dedup, labeling, augmentation, splits, exports: what those stages ask (one helper's section)

    # ---- training, evaluation, gate, cards: what training/, reporting.py and the registry ask

    # The approaches this kind can train, each with its recipe (`train` dispatches); `trained_approach`
    # and `approaches` pick among them. Adapter approaches save a PEFT adapter the registry can load.
    recipes: tuple[Approach, ...]
    adapter_approaches: tuple[Approach, ...]
    fold_metric: str  # the `Metric.key` cross-validation scores each fold by (one of `metrics`)
    hub_categories: tuple[str, ...]  # the dataset card's Hugging Face task_categories

    @abstractmethod
    def train(self, approach: Approach, splits: Splits, labels: list[str], cfg: TrainingSettings,
              output_dir, data_snapshot: str = "", log=print) -> dict:
        """Train `approach` (one of `recipes`) on `splits` into `output_dir`; its metrics (metrics.json)."""

    @abstractmethod
    def configured_base_model(self, training: TrainingSettings) -> str | None:
        """The model this kind tunes as `training` names it (None: the kind's shipped default)."""

    def saved_base_model(self, metrics: dict) -> str | None:
        """The base model a saved run names in its settings (what the registry loads; None: the default)."""
        return metrics["settings"].get(self.base_model_setting)

    def buildable_base_model(self, training: TrainingSettings) -> str | None:
        """The base model folder `build_base_model` may build for this kind (training/tiny_lm.py); None: none."""
        return None

    @abstractmethod
    def untrained_model(self, entry: dict):
        """The base model a registry `entry`'s adapter goes on, freshly loaded (imports torch)."""

    @abstractmethod
    def model_card(self, metrics: dict) -> str:
        """The README.md saved beside a model this kind trained."""

    @abstractmethod
    def card_sections(self, splits: pl.DataFrame, agreement: dict) -> list[str]:
        """The dataset card's lines on what the records hold (labels and agreement, or conversations)."""

    @abstractmethod
    def approaches(self, training: TrainingSettings) -> list[Approach]:
        """The approaches `approach_comparison` runs."""

    @abstractmethod
    def trained_approach(self, training: TrainingSettings) -> Approach:
        """The approach `lora_adapter` trains."""

    def labels(self, frame: pl.DataFrame, settings: Settings) -> list[str]:
        """The label set the model predicts (empty for tasks without labels)."""
        return []

    def record_expectations(self, labels: list[str]) -> list | None:
        """What each record of the labeled, augmented and split corpus must carry, as GX expectations for
        `validation.labeled_expectations` & co.; None: the label expectations those suites hold by default."""
        return None

    @abstractmethod
    def stratify_column(self, frame: pl.DataFrame) -> str:
        """The column whose values each split keeps in proportion (splits.py, the proportion check)."""

    def training_splits(self, frame: pl.DataFrame) -> Splits:
        """Per split the (inputs, targets) lists that train and evaluate a model."""
        parts = {}
        for name in SPLITS:
            part = frame.filter(pl.col("split") == name)
            parts[name] = (part[self.input_column].to_list(), part[self.target_column].to_list())
        return parts

    def export_form(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The split records as exported (instruction records gain their chat form)."""
        return frame

    @abstractmethod
    def baseline(self, metrics: dict) -> dict[str, float]:
        """The baseline's test scores from a training run's metrics."""

    def evaluation(self, metrics: dict) -> list[dict]:
        """Rows of the evaluation table: the trained model, then the baseline (model, scores, params)."""
        return [
            {"model": self.model_name(metrics), **{m.key: _score(metrics["test"], m) for m in self.metrics},
             "trainable_parameters": metrics["trainable_parameters"]},
            {"model": self.baseline_name, **{m.key: _score(self.baseline(metrics), m) for m in self.metrics},
             "trainable_parameters": 0},
        ]

    def model_name(self, metrics: dict) -> str:
        return metrics["approach"]

    @abstractmethod
    def baseline_gate(self, metrics: dict) -> tuple[pl.DataFrame, list, dict[str, float]]:
        """The adapter's quality gate: a one-row frame of its test scores, the Great Expectations suite it
        must pass (no NaN loss, better than the baseline), and the scores to show beside the result."""

    def quality_gate(self, metrics: dict, floor: float | None) -> tuple[pl.DataFrame, list, dict[str, float]]:
        """`baseline_gate`, plus the headline test metric at or better than `floor` (`checks.adapter_floor`;
        None: no floor): at least it for a metric where higher is better, at most it otherwise."""
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        frame, expectations, scores = self.baseline_gate(metrics)
        if floor is None:
            return frame, expectations, scores
        column = f"test_{self.headline.key}"
        frame = frame.with_columns(pl.lit(metrics["test"][self.headline.key], pl.Float64).alias(column))
        bound = {"min_value": floor} if self.headline.higher_is_better else {"max_value": floor}
        return (frame, expectations + [validation.E.ExpectColumnValuesToBeBetween(column=column, **bound)],
                {**scores, f"floor_{self.headline.key}": floor})

    @abstractmethod
    def metrics_summary(self, metrics: dict) -> dict[str, float]:
        """The test scores the adapters registry keeps (and shows in `adapters list`)."""

    def comparison_scores(self, metrics: dict) -> dict[str, float]:
        """The task's columns of an approach-comparison row."""
        return {f"test_{m.key}": _score(metrics["test"], m) for m in self.metrics}

    def comparison_value(self, row: dict) -> float | None:
        """The headline metric of a comparison row; None when it is NaN or infinite."""
        value = row[f"test_{self.headline.key}"]
        return None if value is None or math.isnan(value) or math.isinf(value) else value
