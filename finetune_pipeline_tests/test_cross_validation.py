"""Cross-validated approach comparison (seed 1.5): folds of train + validation from the real split (group-aware,
stratified, the test split held out), mean and std over folds with a tiny model, the paired "larger than the
fold-to-fold spread" rule, and LoRA's settings chosen on the validation folds without ever seeing test."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from finetune_pipeline.records import empty_rejects
from finetune_pipeline.settings import SplitSettings, TrainingSettings
from finetune_pipeline.splits import assign_splits, cross_validation_folds
from finetune_pipeline.tasks import task_named
from finetune_pipeline.training import cross_validation as cv
from finetune_pipeline_tests.conftest import SAMPLE_RUN_FOLDS, write_tiny_bert

CLASSIFICATION = task_named("classification")
WORDS = {"billing": ["charge", "invoice", "refund", "payment", "fee", "bill", "card", "price"],
         "shipping": ["parcel", "courier", "delivery", "tracking", "package", "box", "carrier", "address"]}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), dropout=0.0)


def _corpus(per_label: int = 24, group_size: int = 2) -> pl.DataFrame:
    """`per_label` records per label in groups of `group_size` (one source document each), plus one
    oversampled copy of every fourth billing record."""
    rng = np.random.default_rng(0)
    rows = []
    for label, words in WORDS.items():
        for i in range(per_label):
            text = f"{label} {i}: " + " ".join(rng.choice(words, size=6))
            rows.append({"record_id": f"{label}-{i:02d}", "text": text, "label": label,
                         "group_id": f"{label}-doc{i // group_size}", "augmented_from": None})
    corpus = pl.DataFrame(rows, schema_overrides={"augmented_from": pl.String})
    copies = corpus.filter(pl.col("label") == "billing").gather_every(4).with_columns(
        (pl.col("record_id") + "-copy").alias("record_id"), pl.col("record_id").alias("augmented_from"))
    return pl.concat([corpus, copies])


def _split(corpus: pl.DataFrame, **settings) -> tuple[pl.DataFrame, SplitSettings]:
    cfg = SplitSettings(**settings)
    return assign_splits(corpus, cfg), cfg


def test_folds_cover_train_and_validation_keep_groups_and_hold_test_out():
    splits, cfg = _split(_corpus(), k_folds=3)
    folds = cross_validation_folds(splits, cfg)
    originals = splits.filter(pl.col("augmented_from").is_null())
    pool = originals.filter(pl.col("split") != "test")
    assert sorted(folds["record_id"]) == sorted(pool["record_id"])  # every train + validation original, once
    assert set(folds["fold"]) == {0, 1, 2}
    joined = folds.join(splits, on="record_id")
    assert joined.group_by("group_id").agg(pl.col("fold").n_unique())["fold"].max() == 1  # no group in two folds
    per_fold = joined.group_by("fold", "label").len()
    assert per_fold["len"].max() - per_fold["len"].min() <= 2  # stratified: within one group of each other

    folded = cv.fold_splits(splits, folds, CLASSIFICATION)
    test_texts = set(splits.filter(pl.col("split") == "test")["text"])
    fold_of = dict(folds.iter_rows())
    for i, parts in enumerate(folded):
        held = set(parts["validation"][0])
        assert held == set(parts["test"][0])  # the fold's records score the fold, the test split is not there
        assert held == set(joined.filter(pl.col("fold") == i)["text"])
        train = set(parts["train"][0])
        assert not train & held and not (train | held) & test_texts
        copies = splits.filter(pl.col("augmented_from").is_not_null())
        for source, text in copies.select("augmented_from", "text").iter_rows():
            if source in fold_of:  # a copy trains only when its source is not the held-out fold
                assert (text in train) == (fold_of[source] != i)


def test_automatic_rule_below_the_documented_size():
    splits, _ = _split(_corpus())
    pool = splits.filter(pl.col("augmented_from").is_null() & (pl.col("split") != "test")).height
    assert cross_validation_folds(splits, SplitSettings())["fold"].n_unique() == SplitSettings().cv_folds
    assert cross_validation_folds(splits, SplitSettings(cv_below_records=pool)).is_empty()  # not below: off
    assert cross_validation_folds(splits, SplitSettings(cv_below_records=pool + 1))["fold"].n_unique() == 3
    assert cross_validation_folds(splits, SplitSettings(cv_below_records=0, k_folds=4))["fold"].n_unique() == 4


def test_mean_and_std_over_folds_with_a_tiny_model(tiny_bert, tmp_path):
    from finetune_pipeline import reporting
    from finetune_pipeline.training.compare import compare_approaches, run_approach, write_comparison

    splits, cfg = _split(_corpus(per_label=12), k_folds=3)
    folds = cv.fold_splits(splits, cross_validation_folds(splits, cfg), CLASSIFICATION)
    training = TrainingSettings(base_model=tiny_bert, epochs=1, batch_size=8, max_length=16)
    result = compare_approaches(CLASSIFICATION.training_splits(splits), ["billing", "shipping"], training,
                                tmp_path / "models", ["lora", "feature"], log=lambda m: None, folds=folds)
    cross = result["cross_validation"]
    assert cross["folds"] == 3 and cross["metric"] == "macro_f1"
    assert cross["fold_sizes"] == [len(f["validation"][0]) for f in folds]
    for row in cross["rows"]:
        assert len(row["scores"]) == 3 and all(0 <= s <= 1 for s in row["scores"])
        assert row["mean"] == pytest.approx(np.mean(row["scores"]))
        assert row["std"] == pytest.approx(np.std(row["scores"], ddof=1))
    feature = next(r for r in cross["rows"] if r["approach"] == "feature")
    alone = run_approach("feature", folds[1], ["billing", "shipping"], training, tmp_path / "alone", log=lambda m: None)
    assert feature["scores"][1] == pytest.approx(alone["test"]["macro_f1"])  # a fold score is that fold's run
    [versus] = cross["lora_versus"]
    lora = next(r for r in cross["rows"] if r["approach"] == "lora")
    assert versus["approach"] == "feature"
    assert versus["mean_difference"] == pytest.approx(lora["mean"] - feature["mean"])

    table = reporting.cross_validation_markdown(result)
    assert f"{feature['mean']:.3f} ± {feature['std']:.3f}" in table and "Rule:" in table
    md = write_comparison(result, tmp_path / "exports")["md"].read_text()
    assert "## Cross-validated" in md and "± " in md
    card = reporting.data_card([], empty_rejects(), None, {}, None, comparison=result)
    assert "## Approach comparison, cross-validated" in card and f"{lora['mean']:.3f} ± {lora['std']:.3f}" in card
    assert "cross_validation" not in compare_approaches(
        CLASSIFICATION.training_splits(splits), ["billing", "shipping"], training, tmp_path / "plain", ["feature"],
        log=lambda m: None)


def test_difference_larger_than_the_spread_when_it_must_be():
    # LoRA ahead by about 0.2 on every fold: the differences barely vary
    d = cv.paired_difference([0.90, 0.92, 0.91], [0.70, 0.73, 0.70])
    assert d["larger_than_spread"] and d["better"] == "lora" and d["p_value"] < 0.01
    # lower loss is better: LoRA's loss below on every fold
    d = cv.paired_difference([1.0, 1.1, 0.9], [1.5, 1.6, 1.45], higher_is_better=False)
    assert d["larger_than_spread"] and d["better"] == "lora"
    # the same difference on every fold: no spread at all
    assert cv.paired_difference([0.8, 0.9], [0.7, 0.8])["larger_than_spread"]


def test_difference_not_larger_than_the_spread_when_it_must_not_be():
    # LoRA wins one fold by far and loses another by far: mean 0.0033, std of the differences about 0.2
    d = cv.paired_difference([0.90, 0.70, 0.81], [0.70, 0.90, 0.80])
    assert not d["larger_than_spread"] and d["p_value"] > 0.5
    assert d["std_difference"] == pytest.approx(np.std([0.2, -0.2, 0.01], ddof=1))
    assert not cv.paired_difference([0.8, 0.9], [0.8, 0.9])["larger_than_spread"]  # identical scores


def test_lora_search_chooses_on_validation_folds_and_never_sees_test():
    """A stand-in trainer scores each setting from its values (rank 16 and learning rate 3e-3 help, 4 epochs
    hurts) and records every text it is handed: the search keeps the best of each dimension, tries 7
    settings, and no test-split text ever reaches a training run."""
    splits, cfg = _split(_corpus(), k_folds=3)
    test_texts = set(splits.filter(pl.col("split") == "test")["text"])
    folds = cv.fold_splits(splits, cross_validation_folds(splits, cfg), CLASSIFICATION)
    seen: set[str] = set()

    def fake_run(approach, parts, labels, training, output_dir, data_snapshot="", log=print):
        for texts, _ in parts.values():
            seen.update(texts)
        score = 0.5 + 0.1 * (training.lora.r == 16) + 0.05 * (training.lora.learning_rate == 3e-3) \
            - 0.1 * (training.epochs == 4) + 0.02 * (training.lora.target_modules == ["query", "value"])
        return {"test": {"macro_f1": score}}

    search = cv.search_lora(folds, ["billing", "shipping"], TrainingSettings(), fake_run, log=lambda m: None)
    assert search["chosen"] == {"lora_r": 16, "learning_rate": 3e-3, "epochs": 8, "target_modules": ["query", "value"]}
    assert search["lora_alpha"] == 32  # alpha / r stays 16 / 8
    assert len(search["tried"]) == 7 and search["mean"] == pytest.approx(0.67)
    assert seen and not seen & test_texts
    assert seen == set(splits.filter(pl.col("split") != "test")["text"])  # train + validation, copies included


def test_comparison_trains_lora_with_the_chosen_settings_and_says_so(tiny_bert, tmp_path, monkeypatch):
    """When the search chooses other values than the configured ones, lora_adapter's run is not reused: the
    comparison's LoRA row is trained with them, its metrics.json and model card name them, and its fold
    scores are the search's."""
    from finetune_pipeline.training.compare import compare_approaches

    splits, cfg = _split(_corpus(per_label=12), k_folds=2)
    folds = cv.fold_splits(splits, cross_validation_folds(splits, cfg), CLASSIFICATION)
    chosen = {"lora_r": 2, "learning_rate": 3e-3, "epochs": 1, "target_modules": ["query", "value"]}
    canned = {"chosen": chosen, "lora_alpha": 4, "scores": [0.5, 0.75], "mean": 0.625, "folds": 2,
              "tried": [{"settings": chosen, "scores": [0.5, 0.75], "mean": 0.625, "wall_time_s": 1.0}],
              "wall_time_s": 1.0}
    monkeypatch.setattr(cv, "search_lora", lambda *args, **kwargs: canned)
    training = TrainingSettings(base_model=tiny_bert, epochs=1, batch_size=8, max_length=16,
                                lora_search={"enabled": True})
    result = compare_approaches(CLASSIFICATION.training_splits(splits), ["billing", "shipping"], training,
                                tmp_path / "models", ["lora"], log=lambda m: None,
                                trained={"lora": {"approach": "lora", "reused": True}}, folds=folds)
    assert result["rows"][0]["trainable_parameters"] > 0  # trained here, not the reused stand-in
    assert result["cross_validation"]["rows"][0]["scores"] == [0.5, 0.75]
    assert result["cross_validation"]["lora_search"]["chosen"] == chosen
    metrics = json.loads((tmp_path / "models" / "lora" / "metrics.json").read_text())
    assert metrics["settings"]["lora"]["r"] == 2 and metrics["settings"]["lora"]["alpha"] == 4
    assert metrics["lora_search"]["chosen"] == chosen
    config = json.loads((tmp_path / "models" / "lora" / "adapter_config.json").read_text())
    assert config["r"] == 2 and sorted(config["target_modules"]) == ["query", "value"]
    card = (tmp_path / "models" / "lora" / "README.md").read_text()
    assert "LoRA settings chosen on 2 validation folds" in card and "r 2, alpha 4, learning rate 0.003" in card

    monkeypatch.setattr(cv, "search_lora", lambda *args, **kwargs: {**canned, "chosen": {
        "lora_r": 8, "learning_rate": 1e-3, "epochs": 1, "target_modules": ["query", "key", "value", "dense"]},
        "lora_alpha": 16})
    result = compare_approaches(CLASSIFICATION.training_splits(splits), ["billing", "shipping"], training,
                                tmp_path / "again", ["lora"], log=lambda m: None,
                                trained={"lora": {**result["rows"][0], "test": {}, "reused": True}}, folds=folds)
    assert not (tmp_path / "again" / "lora").exists()  # the configured values won: lora_adapter's run reused


def test_instruction_tasks_cross_validate_on_response_loss(tmp_path):
    """Conversations: folds stratified by category, the fold metric the response-token loss (lower is better)."""
    from finetune_pipeline.training.compare import compare_approaches
    from finetune_pipeline_tests.test_instruction import PAIRS, tiny_llama_folder

    task = task_named("instruction")
    rows = [{"record_id": f"c{i:02d}", "prompt": p, "response": r, "category": ["account", "orders"][i % 2],
             "group_id": f"c{i:02d}", "augmented_from": None, "split": "test" if i >= 10 else "train"}
            for i, (p, r) in enumerate(PAIRS * 2)]
    splits = pl.DataFrame(rows, schema_overrides={"augmented_from": pl.String})
    folds = cross_validation_folds(splits, SplitSettings(k_folds=2), task)
    assert folds.height == 10 and not set(folds["record_id"]) & {"c10", "c11"}
    model = tiny_llama_folder(tmp_path / "llama", [p + " " + r for p, r in PAIRS])
    training = TrainingSettings(epochs=1, batch_size=2,
                                instruction={"base_model": model, "max_length": 64, "generation_samples": 0})
    result = compare_approaches(task.training_splits(splits), [], training, tmp_path / "models", ["instruction"],
                                log=lambda m: None, folds=cv.fold_splits(splits, folds, task))
    cross = result["cross_validation"]
    assert cross["metric"] == "loss" and not cross["higher_is_better"] and cross["lora_versus"] == []
    [row] = cross["rows"]
    assert len(row["scores"]) == 2 and all(s > 0 for s in row["scores"])
    assert row["mean"] == pytest.approx(np.mean(row["scores"]))
    from finetune_pipeline.reporting import cross_validation_markdown

    assert "loss (lower is better)" in cross_validation_markdown(result)


def test_sample_root_is_cross_validated_on_folds_of_its_real_splits(sample_run):
    """The end-to-end run on the sample data root (fewer records than splits.cv_below_records): folds.parquet
    covers train + validation only, no split group or source document in two folds, and the mean ± std
    table is in the comparison export, the data card and the CLI summary."""
    from finetune_pipeline.defs.cli import _summary
    from finetune_pipeline.layout import DataRoot

    root = DataRoot(sample_run[0])
    folds = pl.read_parquet(root.folds)
    exported = pl.concat([pl.read_ndjson(root.splits_export / f"{name}.jsonl", infer_schema_length=None)
                          for name in ("train", "validation", "test")], how="diagonal_relaxed")
    joined = folds.join(exported, on="record_id")
    assert joined.height == folds.height and set(joined["split"]) == {"train", "validation"}
    pool = exported.filter(pl.col("augmented_from").is_null() & (pl.col("split") != "test"))
    assert sorted(folds["record_id"]) == sorted(pool["record_id"])
    assert folds["fold"].n_unique() == SAMPLE_RUN_FOLDS
    assert joined.group_by("group_id").agg(pl.col("fold").n_unique())["fold"].max() == 1
    documents = joined.filter(pl.col("source_type").is_in(["pdf", "docx", "html", "txt", "md", "eml"]))
    assert documents.group_by("source_uri").agg(pl.col("fold").n_unique())["fold"].max() == 1
    comparison = json.loads(root.comparison_export("json").read_text())
    cross = comparison["cross_validation"]
    assert [r["approach"] for r in cross["rows"]] == [r["approach"] for r in comparison["rows"]]
    assert all(len(r["scores"]) == cross["folds"] for r in cross["rows"])
    line = next(r for r in cross["rows"] if r["approach"] == "feature")
    shown = f"| feature | {line['mean']:.3f} ± {line['std']:.3f} |"
    assert shown in root.report.read_text() and shown in _summary(root)
