"""Labeled texts for a classifier: `text` -> `label` from the label set, scored by accuracy and macro-F1
against the majority-class baseline."""

from __future__ import annotations

import polars as pl

from finetune_pipeline.settings import Approach, Settings, TrainingSettings
from finetune_pipeline.tasks.base import Metric, Task


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

    # ---- reading and cleaning

    # ---- dedup, labeling, augmentation, splits, exports

    # ---- training, evaluation, gate, cards

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
