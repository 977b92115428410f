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
from typing import TYPE_CHECKING, Callable

from pathlib import Path

import polars as pl

from finetune_pipeline.records import SPLITS, StageResult
from finetune_pipeline.settings import Approach, DedupSettings, Settings, TrainingSettings
from finetune_pipeline.training.results import ComparisonRow, TrainingResult

if TYPE_CHECKING:
    from finetune_pipeline.augment.generate import Augmented
    from finetune_pipeline.labeling.assign import LabelingResult

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


POOLED = "(pooled)"  # the stratum of small strata split together (`pool_small_strata`)


def pool_small_strata(groups: pl.DataFrame, needed: int) -> pl.DataFrame:
    """Strata (`label`) with fewer than `needed` groups become one pooled stratum (joined to the largest
    stratum when even the pool is too small), so a rare category or a small source file is no error."""
    sizes = groups.group_by("label").len()
    small = sizes.filter(pl.col("len") < needed)["label"]
    if small.is_empty():
        return groups
    pooled_size = int(sizes.filter(pl.col("label").is_in(small.implode()))["len"].sum())
    large = sizes.filter(pl.col("len") >= needed).sort("len", "label", descending=[True, False])
    target = POOLED if pooled_size >= needed or large.is_empty() else large["label"][0]
    return groups.with_columns(pl.when(pl.col("label").is_in(small.implode())).then(pl.lit(target))
                               .otherwise(pl.col("label")).alias("label"))


class Task(ABC):
    """What a kind of task decides: columns, approaches, labels, metric, baseline, evaluation rows."""

    name: str
    input_column: str
    target_column: str
    metrics: tuple[Metric, ...]  # shown in evaluation tables, in order
    headline: Metric  # what the approach comparison ranks and plots
    baseline_name: str
    evaluated_on: str  # what the test scores are computed over, in words
    base_model_setting: str  # the TrainingSettings field (dotted: in a method section) naming the model it tunes

    # ---- reading and cleaning: what sources/, cleaning/ and domain.py ask (one helper's section)

    content_columns: tuple[str, ...] = ("text",)  # what a person wrote: a rejected record keeps none of it

    @abstractmethod
    def read_rows(self, path: Path, source_type: str, settings: Settings,
                  notes: list[str]) -> tuple[list[dict], list[dict]]:
        """Records and rejects ({locator, reason, detail}) from the content of one raw source, through the
        readers of `sources/readers.py`; what was recognised rather than configured is appended to `notes`.
        May raise a reader's error (`sources.collect` makes it a reject naming the file)."""

    @abstractmethod
    def read_query_rows(self, rows: list[tuple[str, dict]], source, uri: str) -> tuple[list[dict], list[dict]]:
        """Records and rejects ({locator, reason, detail}) from the (locator, row) pairs of a configured SQL
        query (`source`: its `SqlSource` settings)."""

    def record_columns(self, settings: Settings) -> dict[str, pl.DataType]:
        """The kind's columns of the raw corpus besides the standard ones (null where a record has none)."""
        return {}

    def text_units(self, row: dict) -> list[str]:
        """The texts of a record that cleaning normalises and the PII policy redacts, in order: [text]. A kind
        with several texts per record (a conversation's turns, a preference pair's prompt and two answers)
        lists every one, and `from_units` writes them back."""
        return [row["text"]]

    def from_units(self, row: dict, units: list[str]) -> dict:
        """The record's content fields rebuilt from its cleaned `text_units` (same order and length); always
        `text`, which the whole-record filters judge and dedup hashes."""
        return {"text": units[0]}

    def cleaning_filters(self, settings: Settings) -> list:
        """The cleaning filters (`cleaning/filters.py`) a record of this kind goes through, in order: the
        first that rejects names the reason."""
        from finetune_pipeline.cleaning.filters import quality_filters

        return quality_filters(settings.cleaning)

    def domain_texts(self, corpus: pl.DataFrame) -> list[str]:
        """Per record, the text the domain filter scores."""
        return corpus["text"].fill_null("").to_list()

    # ---- dedup, labeling, augmentation, splits, exports: what those stages ask (one helper's section)

    def near_duplicate_texts(self, kept: pl.DataFrame) -> pl.Series | None:
        """One text per record that near and semantic dedup compare across records (dedup/stage.py); None:
        no whole-record comparison (the kind finds its duplicates in `duplicate_groups`)."""
        return kept["text"]

    def duplicate_groups(self, kept: pl.DataFrame, dedup: DedupSettings) -> StageResult:
        """After the whole-record passes: `kept` with `group_id` (what a split keeps together), the kind's own
        duplicate rejects, and their stats (`DedupStats.prompts`; None: none). By default each record is its
        own group and nothing more is rejected. Instruction data rejects duplicate prompts and settles
        conflicting answers here (dedup/conflicts.py); a kind whose prompts have several answers on purpose
        (preference pairs) groups near-duplicate prompts and rejects none: it has no conflicts."""
        return StageResult(kept.with_columns(pl.col("record_id").alias("group_id")), stats=None)

    def label(self, corpus: pl.DataFrame, settings: Settings, annotations: pl.DataFrame,
              annotation_problems: list[dict] | None, labeler, cache) -> "LabelingResult":
        """The labeling stage for this kind (`labeling.apply_labels` asks): by default records go on without
        labels (`label` stays null); the one decision people take on them is which answer of a conflicting
        instruction to keep, where dedup marked one (`labeling.assign.keep_unlabeled`)."""
        from finetune_pipeline.labeling.assign import keep_unlabeled

        return keep_unlabeled(corpus, annotations, annotation_problems)

    def checked_labels(self, frame: pl.DataFrame, settings: Settings, published: Callable[[], set[str]]
                       ) -> list[str]:
        """The label set the corpus suites check `frame`'s records against (defs/gates.py); `published()`:
        the labels of the last published split (read only when asked)."""
        return self.labels(frame, settings)

    def augment(self, train: pl.DataFrame, settings: Settings, generator, cache) -> "Augmented":
        """New training rows made from the records of `train` (augment/stage.py materializes them, drops near
        copies of held-out records): by default none."""
        from finetune_pipeline.augment.generate import Augmented

        return Augmented()

    def augmented_counts(self, extra: pl.DataFrame) -> dict[str, int]:
        """The augmented rows by the value they top up (`AugmentStats.by_label`); by default none."""
        return {}

    too_few_groups_hint = "add records or change `splits`"  # a stratum with fewer groups than splits: what to do

    def split_strata(self, groups: pl.DataFrame, needed: int) -> pl.DataFrame:
        """The split's groups (`label`: their stratum) as they are split: by default strata with fewer than
        `needed` groups are pooled (`pool_small_strata`), so a rare category or a small file is no error."""
        return pool_small_strata(groups, needed)

    def labels_every_split_holds(self, labels: list[str]) -> list[str] | None:
        """The labels each split must hold a record of (the leakage check's label coverage); None: no such
        requirement."""
        return None

    def bias_findings(self, originals, settings: Settings) -> list[str]:
        """What the dataset card lists as skews between the records' labels and the groups they mention
        (cleaning/bias.py); none for kinds without labels. `originals`: the original records as a frame, or a
        sharded dataset whose augmented rows are left out as it is read."""
        return []

    exported_text_columns = ("text", "prompt", "response", "completion", "source_uri", "locator")  # strings
    exported_turn_columns = ("messages", "prompt_messages", "completion")  # lists of {role, content}

    def export_texts(self, row: dict) -> list[tuple[str, str]]:
        """(field, text) for every text of one exported record (a `<split>.jsonl` row; `exports.exported_texts`,
        what the personal-data check scans): its string columns, file name and locator, then each turn of its
        turn lists as `column[i]`."""
        texts = [(c, row[c]) for c in self.exported_text_columns if isinstance(row.get(c), str)]
        return texts + [(f"{c}[{i}]", turn.get("content") or "") for c in self.exported_turn_columns
                        if isinstance(row.get(c), list) for i, turn in enumerate(row[c]) if isinstance(turn, dict)]

    # ---- training, evaluation, gate, cards: what training/, reporting.py and the registry ask

    def settings_problem(self, settings: Settings) -> str | None:
        """What finetune.yaml lacks or asks that this kind cannot do, as the error to show (Settings
        validation raises it); None when the settings fit."""
        return None

    # The approaches this kind can train, each with its recipe (`train` dispatches); `trained_approach`
    # and `approaches` pick among them. Adapter approaches save a PEFT adapter the registry can load.
    recipes: tuple[Approach, ...]
    adapter_approaches: tuple[Approach, ...]
    fold_metric: str  # the `Metric.key` cross-validation scores each fold by (one of `metrics`)
    hub_categories: tuple[str, ...]  # the dataset card's Hugging Face task_categories

    @abstractmethod
    def train(self, approach: Approach, splits: Splits, labels: list[str], cfg: TrainingSettings,
              output_dir, data_snapshot: str = "", log=print) -> TrainingResult:
        """Train `approach` (one of `recipes`) on `splits` into `output_dir`; its metrics (metrics.json)."""

    @abstractmethod
    def configured_base_model(self, training: TrainingSettings) -> str | None:
        """The model this kind tunes as `training` names it (None: the kind's shipped default)."""

    def saved_base_model(self, result: TrainingResult) -> str | None:
        """The base model a saved run names in its settings (what the registry loads; None: the default)."""
        value = result.settings
        for part in self.base_model_setting.split("."):  # a method section's field: instruction.base_model
            value = value.get(part) if isinstance(value, dict) else None
        # metrics.json written before the per-method sections: the flat field (instruction_base_model)
        return value if value is not None else result.settings.get(self.base_model_setting.replace(".", "_"))

    def buildable_base_model(self, training: TrainingSettings) -> str | None:
        """The base model folder `build_base_model` may build for this kind (training/tiny_lm.py); None: none."""
        return None

    @abstractmethod
    def untrained_model(self, entry: dict):
        """The base model a registry `entry`'s adapter goes on, freshly loaded (imports torch)."""

    @abstractmethod
    def model_card(self, result: TrainingResult) -> str:
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

    def export_columns(self) -> tuple[str, ...]:
        """The columns of the exported records (`exports.export_splits`), in order; those the records lack are
        left out. By default `exports.EXPORT_COLUMNS`."""
        from finetune_pipeline.exports import EXPORT_COLUMNS

        return tuple(EXPORT_COLUMNS)

    @abstractmethod
    def baseline(self, result: TrainingResult) -> dict[str, float]:
        """The baseline's test scores from a training result."""

    def evaluation(self, result: TrainingResult) -> list[dict]:
        """Rows of the evaluation table: the trained model, then the baseline (model, scores, params)."""
        return [
            {"model": self.model_name(result), **{m.key: _score(result.test, m) for m in self.metrics},
             "trainable_parameters": result.trainable_parameters},
            {"model": self.baseline_name, **{m.key: _score(self.baseline(result), m) for m in self.metrics},
             "trainable_parameters": 0},
        ]

    def model_name(self, result: TrainingResult) -> str:
        return result.approach

    @abstractmethod
    def baseline_gate(self, result: TrainingResult) -> tuple[pl.DataFrame, list, dict[str, float]]:
        """The adapter's quality gate: a one-row frame of its test scores, the Great Expectations suite it
        must pass (no NaN loss, better than the baseline), and the scores to show beside the result."""

    def quality_gate(self, result: TrainingResult, floor: float | None) -> tuple[pl.DataFrame, list, dict[str, float]]:
        """`baseline_gate`, plus the headline test metric at or better than `floor` (`checks.adapter_floor`;
        None: no floor): at least it for a metric where higher is better, at most it otherwise."""
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        frame, expectations, scores = self.baseline_gate(result)
        if floor is None:
            return frame, expectations, scores
        column = f"test_{self.headline.key}"
        frame = frame.with_columns(pl.lit(result.test[self.headline.key], pl.Float64).alias(column))
        bound = {"min_value": floor} if self.headline.higher_is_better else {"max_value": floor}
        return (frame, expectations + [validation.E.ExpectColumnValuesToBeBetween(column=column, **bound)],
                {**scores, f"floor_{self.headline.key}": floor})

    @abstractmethod
    def metrics_summary(self, result: TrainingResult) -> dict[str, float]:
        """The test scores the adapters registry keeps (and shows in `adapters list`)."""

    def comparison_scores(self, result: TrainingResult) -> dict[str, float]:
        """The task's columns of an approach-comparison row."""
        return {f"test_{m.key}": _score(result.test, m) for m in self.metrics}

    def comparison_value(self, row: ComparisonRow) -> float | None:
        """The headline metric of a comparison row; None when it is NaN or infinite."""
        value = row.column(f"test_{self.headline.key}")
        return None if value is None or math.isnan(value) or math.isinf(value) else value
