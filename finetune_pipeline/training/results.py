"""Typed results of training and evaluation: `TrainingResult` (one trained model: metrics.json),
`ComparisonResult` (the approach comparison: exports/approach_comparison.json) with its `ComparisonRow`s
and its `CrossValidationResult` (the folds). Read by attribute; saved and read as JSON.

A result keeps the order its keys were written in, so a file read and written again is byte-identical,
and what it does not type (a key an older or newer writer added) is kept in `extra` and written back.
`from_dict`/`from_json` read a metrics.json written before these classes existed as well. Key access
(`result["test"]`, `result.get(...)`) stays for older callers, read-only; library code reads attributes.
Imports no torch and no dagster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

_INTERNAL = ("extra", "written_keys")


@dataclass
class _Result:
    extra: dict[str, Any] = field(default_factory=dict)  # keys without a typed field, kept as written
    written_keys: list[str] = field(default_factory=list, repr=False, compare=False)  # the JSON's key order

    _nested: ClassVar[dict[str, type]] = {}  # field -> the result class its value (or each list item) is

    @classmethod
    def typed_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in _INTERNAL]

    @classmethod
    def from_dict(cls, data: dict | _Result):
        """The result `data` holds (a dict as json.load gives it; a result is returned as it is)."""
        if isinstance(data, cls):
            return data
        names = set(cls.typed_fields())
        typed = {}
        for key, value in data.items():
            if key in names:
                kind = cls._nested.get(key)
                if kind is not None and isinstance(value, list):
                    value = [kind.from_dict(v) for v in value]
                elif kind is not None and isinstance(value, dict):
                    value = kind.from_dict(value)
                typed[key] = value
        result = cls(**typed, extra={k: v for k, v in data.items() if k not in names})
        result.written_keys = list(data)
        return result

    @classmethod
    def from_json(cls, text_or_path: str | Path):
        text = Path(text_or_path).read_text() if isinstance(text_or_path, Path) else text_or_path
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """The keys in the order they were written, then typed fields set since (None is not set), then
        new `extra` keys."""
        names = self.typed_fields()
        keys = list(self.written_keys)
        keys += [n for n in names if n not in keys and getattr(self, n) is not None]
        keys += [k for k in self.extra if k not in keys]
        out = {}
        for key in keys:
            if key in names:
                value = getattr(self, key)
            elif key in self.extra:
                value = self.extra[key]
            else:
                continue
            if isinstance(value, _Result):
                value = value.to_dict()
            elif isinstance(value, list) and value and isinstance(value[0], _Result):
                value = [v.to_dict() for v in value]
            out[key] = value
        return out

    def to_json(self) -> str:
        """What metrics.json and the comparison's JSON hold (indent 2; what JSON cannot hold as a string)."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    # read-only key access, for callers written against the dicts these classes replace
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()


@dataclass
class TrainingResult(_Result):
    """One trained model (metrics.json): what it is, its test scores and its baseline's, the run."""

    approach: str | None = None
    task: str | None = None  # the kind's name (`tasks.task_named`); None in results older than the field
    base_model: str | None = None  # its name for people
    labels: list[str] | None = None
    test: dict[str, float] | None = None  # the test scores, by `Metric.key`
    majority_baseline: dict[str, float] | None = None  # classification's baseline on test
    base_model_test: dict[str, float] | None = None  # instruction's baseline: the untuned base model on test
    validation: dict[str, float] | None = None
    validation_best_macro_f1: float | None = None
    C: float | None = None  # the feature approach's regularisation
    embedding_dim: int | None = None
    split_sizes: dict[str, int] | None = None
    sequences: dict[str, int] | None = None
    packing: bool | None = None
    generation: dict | None = None  # the greedy answers behind ROUGE-L, with examples
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    learning_rate: float | None = None
    epochs_run: int | None = None  # None: fitted once (the feature approach)
    resumed_from_epoch: int | None = None
    history: list[dict] | None = None  # one row per epoch
    nan_loss: bool | None = None
    device: str | None = None
    processes: int | None = None
    wall_time_s: float | None = None
    peak_memory_mb: float | None = None
    data_snapshot: str | None = None
    settings: dict | None = None  # the TrainingSettings it ran with, as saved
    train_tokens_per_s: list[float] | None = None
    lora_search: dict | None = None  # LoRA settings chosen on validation folds (the comparison's LoRA run)

    @property
    def epochs(self) -> int:
        """Epochs trained (1 for an approach fitted once)."""
        return self.epochs_run if self.epochs_run is not None else 1


@dataclass
class ComparisonRow(_Result):
    """One approach of the comparison; its kind's test scores (`test_<metric>`) are in `scores`."""

    approach: str | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    wall_time_s: float | None = None
    peak_memory_mb: float | None = None
    epochs_run: int | None = None
    device: str | None = None
    nan_loss: bool | None = None

    @property
    def scores(self) -> dict[str, float]:
        """The kind's columns (`Task.comparison_scores`): test_<metric>, and what the kind adds."""
        return dict(self.extra)

    def column(self, name: str):
        """A column of the comparison table by name (typed field or score)."""
        return getattr(self, name) if name in self.typed_fields() else self.extra[name]


@dataclass
class CrossValidationResult(_Result):
    """The cross-validated comparison: per approach its fold scores, mean and std; LoRA against each
    other approach paired by fold; LoRA's settings when they were searched."""

    folds: int | None = None
    fold_sizes: list[int] | None = None
    metric: str | None = None  # the `Metric.key` each fold reports
    higher_is_better: bool | None = None
    rows: list[dict] | None = None  # {approach, mean, std, scores (per fold), wall_time_s}
    lora_versus: list[dict] | None = None  # {approach, mean_difference, std_difference, larger_than_spread, ...}
    rule: str | None = None
    lora_search: dict | None = None
    wall_time_s: float | None = None


@dataclass
class ComparisonResult(_Result):
    """The approach comparison (exports/approach_comparison.json)."""

    task: str | None = None
    rows: list[ComparisonRow] = field(default_factory=list)
    data_snapshot: str | None = None
    split_sizes: dict[str, int] | None = None
    majority_baseline: dict[str, float] | None = None  # the baseline row, where the kind has a label set
    cross_validation: CrossValidationResult | None = None
    total_wall_time_s: float | None = None  # the whole comparison, folds included

    _nested: ClassVar[dict[str, type]] = {"rows": ComparisonRow, "cross_validation": CrossValidationResult}

    def to_json(self) -> str:
        """exports/approach_comparison.json (indent 2; every value is JSON already)."""
        return json.dumps(self.to_dict(), indent=2)
