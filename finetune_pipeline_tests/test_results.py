"""Typed training results (training/results.py): read by attribute, saved and read as JSON, and a file
written by the dict-based code before them reads and writes back byte for byte."""

import json

from finetune_pipeline.training.results import ComparisonResult, CrossValidationResult, TrainingResult

# metrics.json as the feature approach wrote it before the typed results (its own key order, no epochs_run,
# a key no field types)
OLD_FEATURE = {
    "approach": "feature", "task": "classification", "base_model": "all-MiniLM-L6-v2", "labels": ["a", "b"],
    "test": {"accuracy": 0.75, "macro_f1": 0.7}, "majority_baseline": {"accuracy": 0.5, "macro_f1": 0.33},
    "validation_best_macro_f1": 0.8, "C": 1.0, "split_sizes": {"train": 8, "validation": 2, "test": 4},
    "trainable_parameters": 770, "total_parameters": 22_700_000, "embedding_dim": 384, "history": [],
    "nan_loss": False, "device": "cpu", "wall_time_s": 1.5, "peak_memory_mb": 300.0, "data_snapshot": "abc",
    "settings": {"lora_r": 8, "base_model": None}, "future_key": {"kept": True},
}
OLD_COMPARISON = {
    "task": "classification",
    "rows": [{"approach": "lora", "trainable_parameters": 10, "total_parameters": 100, "wall_time_s": 1.0,
              "peak_memory_mb": 5.0, "epochs_run": 2, "device": "cpu", "nan_loss": False,
              "test_accuracy": 0.9, "test_macro_f1": 0.85}],
    "data_snapshot": "abc", "split_sizes": {"train": 8, "validation": 2, "test": 4},
    "majority_baseline": {"accuracy": 0.5, "macro_f1": 0.33},
    "cross_validation": {"folds": 2, "fold_sizes": [5, 5], "metric": "macro_f1", "higher_is_better": True,
                         "rows": [{"approach": "lora", "mean": 0.8, "std": 0.1, "scores": [0.7, 0.9],
                                   "wall_time_s": 2.0}], "lora_versus": [], "rule": "r", "wall_time_s": 2.0},
    "total_wall_time_s": 3.0,
}


def test_an_old_metrics_json_reads_by_attribute_and_writes_back_byte_for_byte(tmp_path):
    old = json.dumps(OLD_FEATURE, indent=2, default=str)
    (tmp_path / "metrics.json").write_text(old)
    result = TrainingResult.from_json(tmp_path / "metrics.json")
    assert result.approach == "feature" and result.test["macro_f1"] == 0.7 and result.C == 1.0
    assert result.epochs_run is None and result.epochs == 1  # fitted once
    assert result.extra == {"future_key": {"kept": True}}
    assert result.to_json() == old
    assert result["test"] == OLD_FEATURE["test"] and result.get("missing", 3) == 3  # read-only key access


def test_a_field_set_after_reading_is_written_after_the_others():
    result = TrainingResult.from_dict(OLD_FEATURE)
    result.lora_search = {"chosen": {"lora_r": 4}}
    written = json.loads(result.to_json())
    assert list(written)[-1] == "lora_search" and list(written)[:-1] == list(OLD_FEATURE)
    assert TrainingResult(approach="lora", test={"accuracy": 1.0}).to_dict() == {"approach": "lora",
                                                                                "test": {"accuracy": 1.0}}


def test_the_comparison_reads_typed_rows_and_folds_and_writes_back_byte_for_byte():
    old = json.dumps(OLD_COMPARISON, indent=2)
    result = ComparisonResult.from_json(old)
    row = result.rows[0]
    assert row.approach == "lora" and row.column("test_macro_f1") == 0.85 and row.scores == {
        "test_accuracy": 0.9, "test_macro_f1": 0.85}
    assert isinstance(result.cross_validation, CrossValidationResult) and result.cross_validation.metric == "macro_f1"
    assert result.total_wall_time_s == 3.0 and result.majority_baseline["accuracy"] == 0.5
    assert result.to_json() == old
