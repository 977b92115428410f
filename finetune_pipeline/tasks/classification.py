"""Labeled texts for a classifier: `text` -> `label` from the label set, scored by accuracy and macro-F1
against the majority-class baseline."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from finetune_pipeline.settings import Approach, Settings, TrainingSettings
from finetune_pipeline.training.results import TrainingResult
from finetune_pipeline.tasks.base import Metric, Splits, Task


class ClassificationTask(Task):
    name = "classification"
    input_column, target_column = "text", "label"
    metrics = (Metric("accuracy", "accuracy", 3, True, 3), Metric("macro_f1", "macro-F1", 3, True, 3))
    headline = metrics[1]
    baseline_name = "majority class"
    evaluated_on = "test split"
    base_model_setting = "base_model"

    # ---- reading and cleaning

    # prompt/response: what roots with sources.tabular.prompt_column (or an SQL source's) carry beside text
    content_columns = ("text", "prompt", "response")

    def read_rows(self, path: Path, source_type: str, settings: Settings,
                  notes: list[str]) -> tuple[list[dict], list[dict]]:
        """One record per document chunk or table row (`readers.read_texts`)."""
        from finetune_pipeline.sources import readers

        return readers.read_texts(path, source_type, settings, notes)

    def read_query_rows(self, rows: list[tuple[str, dict]], source, uri: str) -> tuple[list[dict], list[dict]]:
        from finetune_pipeline.sources import readers

        return readers.text_query_rows(rows, source, uri)

    def record_columns(self, settings: Settings) -> dict[str, pl.DataType]:
        """`prompt` and `response` when a table or SQL source maps a prompt column, else none."""
        from finetune_pipeline.sources import readers

        prompts = settings.sources.tabular.prompt_column or any(s.prompt_column for s in settings.sources.sql)
        return readers.PROMPT_RESPONSE_COLUMNS if prompts else {}

    def domain_texts(self, corpus: pl.DataFrame) -> list[str]:
        """A record's prompt where the root maps prompt columns, else its text."""
        if "prompt" in corpus.columns:
            return corpus.select(pl.coalesce("prompt", "text").fill_null("")).to_series().to_list()
        return super().domain_texts(corpus)

    # ---- dedup, labeling, augmentation, splits, exports

    def label(self, corpus: pl.DataFrame, settings: Settings, annotations: pl.DataFrame,
              annotation_problems: list[dict] | None, labeler, cache):
        """Every record gets a label from the label set: annotations, given labels, then the model
        (`labeling.assign.label_records`; the precedence in labeling/stage.py)."""
        from finetune_pipeline.labeling.assign import label_records

        return label_records(corpus, settings, annotations, annotation_problems, labeler, cache)

    def checked_labels(self, frame: pl.DataFrame, settings: Settings, published) -> list[str]:
        """With `labels: []` the set is not what the frame holds (then "label in set" could not fail) but
        what was given: labels from a column, a folder or people (human, crowd) in `frame`, plus those of the
        last published split. A label only the model (or augmentation) produced fails."""
        if settings.labels:
            return self.labels(frame, settings)
        from finetune_pipeline.labeling.labels import given_labels

        return sorted(given_labels(frame) | published())

    def augment(self, train: pl.DataFrame, settings: Settings, generator, cache):
        """Each label topped up to its target: paraphrases, synthetic examples, copies (augment/generate.py)."""
        from finetune_pipeline.augment.generate import augment_labels

        return augment_labels(train, settings, generator, cache)

    def augmented_counts(self, extra: pl.DataFrame) -> dict[str, int]:
        return dict(extra.group_by("label").len().sort("label").iter_rows())

    too_few_groups_hint = "add examples of it, drop it from `labels`, or change `splits`"

    def split_strata(self, groups: pl.DataFrame, needed: int) -> pl.DataFrame:
        """Each label its own stratum, never pooled: every label must reach every split."""
        return groups

    def labels_every_split_holds(self, labels: list[str]) -> list[str] | None:
        return labels

    def bias_findings(self, originals, settings: Settings) -> list[str]:
        from finetune_pipeline.cleaning.bias import bias_findings, bias_report, dataset_mentions

        if hasattr(originals, "iter_shards"):  # a sharded dataset: its texts read a shard at a time
            return bias_findings(bias_report(None, flags=dataset_mentions(originals)), settings.bias)
        return bias_findings(bias_report(originals), settings.bias)

    # ---- training, evaluation, gate, cards

    def settings_problem(self, settings: Settings) -> str | None:
        """training.approach and training.compare name approaches of this kind (lora, full, feature)."""
        training = settings.training
        if foreign := [a for a in dict.fromkeys([training.approach, *training.compare]) if a not in self.recipes]:
            return (f"training.approach/compare: {', '.join(foreign)} needs another task: (classification trains "
                    f"{', '.join(self.recipes)}); `instruction` needs task: instruction")
        return None

    recipes = ("lora", "full", "feature")
    adapter_approaches = ("lora",)
    fold_metric = "macro_f1"
    hub_categories = ("text-classification",)

    def train(self, approach: Approach, splits: Splits, labels: list[str], cfg: TrainingSettings,
              output_dir, data_snapshot: str = "", log=print) -> TrainingResult:
        """lora and full through the shared loop (training/classify.py); feature: frozen embeddings and a
        logistic regression (training/feature.py)."""
        if approach == "feature":
            from finetune_pipeline.training.feature import train_feature_classifier

            return train_feature_classifier(splits, labels, cfg, output_dir, data_snapshot, log)
        from finetune_pipeline.training.classify import train_classifier

        return train_classifier(splits, labels, cfg, output_dir, approach=approach, data_snapshot=data_snapshot,
                                log=log)

    def configured_base_model(self, training: TrainingSettings) -> str | None:
        return training.base_model

    def untrained_model(self, entry: dict):
        from finetune_pipeline.training.base_model import load_sequence_classifier, resolve_base_model

        return load_sequence_classifier(resolve_base_model(entry["base"]), entry["labels"])

    def model_card(self, result: TrainingResult) -> str:
        from finetune_pipeline import reporting

        return (reporting.feature_card if result.approach == "feature" else reporting.classifier_card)(result)

    def card_sections(self, splits: pl.DataFrame, agreement: dict) -> list[str]:
        from finetune_pipeline.reporting import markdown_table, reliability_markdown

        lines = ["## Labels", ""]
        by = splits.group_by("label").len().sort("label")
        lines += [markdown_table(["label", "records"], by.rows()), ""]
        if agreement.get("records"):
            lines += [f"Inter-annotator agreement on {agreement['records']} records: Krippendorff's alpha "
                      f"{agreement.get('krippendorff_alpha')}.", ""]
        if agreement.get("reliability"):
            lines += ["Annotator reliability per label (Dawid-Skene: the chance an annotator gives a label when it "
                      "is the true one; annotators by pseudonym):", "",
                      reliability_markdown(agreement["reliability"], agreement["confusion"]["labels"]), ""]
        return lines

    def approaches(self, training: TrainingSettings) -> list[Approach]:
        return list(training.compare)

    def trained_approach(self, training: TrainingSettings) -> Approach:
        return training.approach

    def stratify_column(self, frame: pl.DataFrame) -> str:
        return "label"

    def labels(self, frame: pl.DataFrame, settings: Settings) -> list[str]:
        from finetune_pipeline.labeling.labels import label_set

        return label_set(frame, settings)

    def baseline(self, result: TrainingResult) -> dict[str, float]:
        return result.majority_baseline

    def baseline_gate(self, result: TrainingResult) -> tuple[pl.DataFrame, list, dict[str, float]]:
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        test, baseline = result.test, self.baseline(result)["accuracy"]
        frame = pl.DataFrame({"nan_loss": [result.nan_loss], "test_accuracy": [test["accuracy"]],
                              "test_macro_f1": [test["macro_f1"]]})
        return frame, validation.adapter_expectations(baseline), {"test_accuracy": test["accuracy"],
                                                                  "baseline_accuracy": baseline}

    def metrics_summary(self, result: TrainingResult) -> dict[str, float]:
        test = result.test
        return {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
                "baseline_accuracy": result.majority_baseline["accuracy"]}
