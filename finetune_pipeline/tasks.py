"""The two kinds of task, and everything that differs between them, in one object each.

A classification task maps `text` to a `label` from the label set and is scored by accuracy and
macro-F1 against the majority-class baseline; an instruction task maps `prompt` to `response`, trains a
causal LM, and is scored by loss and perplexity on response tokens and by ROUGE-L F1 of greedy answers
to sampled test prompts, against the untuned base model.
Callers ask the task (`task_for(settings)`, or `task_named(metrics["task"])` for a saved result)
instead of branching on its name. Imports no dagster and no torch.
"""

from __future__ import annotations

import json
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


class ClassificationTask(Task):
    name = "classification"
    input_column, target_column = "text", "label"
    metrics = (Metric("accuracy", "accuracy", 3, True, 3), Metric("macro_f1", "macro-F1", 3, True, 3))
    headline = metrics[1]
    baseline_name = "majority class"
    evaluated_on = "test split"
    base_model_setting = "base_model"
    labeled = True
    conversational = False

    def approaches(self, training: TrainingSettings) -> list[Approach]:
        return list(training.compare)

    def trained_approach(self, training: TrainingSettings) -> Approach:
        return training.approach

    def stratify_column(self, frame: pl.DataFrame) -> str:
        return "label"

    def labels(self, frame: pl.DataFrame, settings: Settings) -> list[str]:
        from finetune_pipeline.labeling.labels import label_set

        return label_set(frame, settings)

    def baseline(self, metrics: dict) -> dict[str, float]:
        return metrics["majority_baseline"]

    def baseline_gate(self, metrics: dict) -> tuple[pl.DataFrame, list, dict[str, float]]:
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        test, baseline = metrics["test"], self.baseline(metrics)["accuracy"]
        frame = pl.DataFrame({"nan_loss": [metrics["nan_loss"]], "test_accuracy": [test["accuracy"]],
                              "test_macro_f1": [test["macro_f1"]]})
        return frame, validation.adapter_expectations(baseline), {"test_accuracy": test["accuracy"],
                                                                  "baseline_accuracy": baseline}

    def metrics_summary(self, metrics: dict) -> dict[str, float]:
        test = metrics["test"]
        return {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
                "baseline_accuracy": metrics["majority_baseline"]["accuracy"]}


class InstructionTask(Task):
    name = "instruction"
    input_column, target_column = "prompt", "response"
    metrics = (Metric("loss", "loss", 4, False, 3), Metric("perplexity", "perplexity", 2, False, 1),
               Metric("rouge_l", "ROUGE-L F1", 3, True, 3))
    headline = metrics[1]
    baseline_name = "base model"
    evaluated_on = "test split: loss on response tokens, ROUGE-L F1 of greedy answers to sampled prompts"
    base_model_setting = "instruction_base_model"
    labeled = False  # `label` stays null; an optional `category` stratifies the split
    conversational = True

    def approaches(self, training: TrainingSettings) -> list[Approach]:
        return ["instruction"]

    def trained_approach(self, training: TrainingSettings) -> Approach:
        return "instruction"

    def record_expectations(self, labels: list[str]) -> list | None:
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        return validation.conversation_expectations()

    def stratify_column(self, frame: pl.DataFrame) -> str:
        """`category` when the records carry one, else `source_uri` (conversations from one file together)."""
        has_category = "category" in frame.columns and frame["category"].null_count() < frame.height
        return "category" if has_category else "source_uri"

    def baseline(self, metrics: dict) -> dict[str, float]:
        return metrics["base_model_test"]

    def baseline_gate(self, metrics: dict) -> tuple[pl.DataFrame, list, dict[str, float]]:
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        loss, base_loss = metrics["test"]["loss"], self.baseline(metrics)["loss"]
        frame = pl.DataFrame({"nan_loss": [metrics["nan_loss"]], "test_loss": [loss]})
        return frame, validation.instruction_adapter_expectations(base_loss), {"test_loss": loss,
                                                                               "base_model_test_loss": base_loss}

    def model_name(self, metrics: dict) -> str:
        return f"{metrics['approach']} (LoRA)"

    def training_splits(self, frame: pl.DataFrame) -> Splits:
        """Per split (the conversation's messages as a JSON array, the final response): every turn goes to
        training (training/instruction.py reads the JSON); a record without `messages` is [user prompt,
        assistant response]."""
        if frame.is_empty() or "messages" not in frame.columns:
            return super().training_splits(frame)
        frame = frame.with_columns(conversation_column(frame).alias("_conversation"))
        parts = {}
        for name in SPLITS:
            part = frame.filter(pl.col("split") == name)
            parts[name] = ([json.dumps(turns) for turns in part["_conversation"].to_list()],
                           part["response"].to_list())
        return parts

    def export_form(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Also in the two forms TRL's SFTTrainer takes as is: `messages` (every turn, as {role, content}
        structs) and conversational prompt-completion, `prompt_messages` (the turns before the final
        assistant turn) with `completion` ([the final assistant turn]). `prompt` stays the last user turn
        as a string (what `training.instruction.read_pairs` and older readers take), so for TRL's
        prompt-completion form select `prompt_messages` and `completion` and rename the first to `prompt`."""
        if frame.is_empty() or not {"prompt", "response"} <= set(frame.columns):
            return frame
        messages = conversation_column(frame)
        return frame.with_columns(
            messages.alias("messages"),
            messages.list.head(messages.list.len() - 1).alias("prompt_messages"),
            messages.list.tail(1).alias("completion"),
        )

    def metrics_summary(self, metrics: dict) -> dict[str, float]:
        test = metrics["test"]
        return {"test_loss": test["loss"], "test_perplexity": test["perplexity"],
                "test_rouge_l": test.get("rouge_l", float("nan"))}

    def comparison_scores(self, metrics: dict) -> dict[str, float]:
        return {**super().comparison_scores(metrics), "base_model_test_loss": metrics["base_model_test"]["loss"]}


MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})


def conversation_column(frame: pl.DataFrame) -> pl.Expr:
    """Each instruction record's turns as a list of {role, content}: its `messages` (a JSON array, or
    already a list), or [user prompt, assistant response] for records without them."""
    pair = pl.concat_list(pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content")),
                          pl.struct(pl.lit("assistant").alias("role"), pl.col("response").alias("content")))
    if "messages" not in frame.columns or frame["messages"].null_count() == frame.height:
        return pair
    given = pl.col("messages")
    if frame.schema["messages"] == pl.String:
        given = given.str.json_decode(pl.List(MESSAGE))
    return pl.when(pl.col("messages").is_not_null()).then(given).otherwise(pair)


TASKS: dict[str, Task] = {task.name: task for task in (ClassificationTask(), InstructionTask())}


def task_named(name: str | None) -> Task:
    """The task called `name` (as in settings, metrics.json and the registry); classification when None."""
    return TASKS[name or "classification"]


def task_for(settings: Settings) -> Task:
    return task_named(settings.task)
