"""Split invariants: stratified, group-aware, deterministic, augmentation only in train."""

import polars as pl
import pytest

from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.settings import Settings, SplitSettings
from finetune_pipeline.splits import SplitError, assign_splits, kfold_assignments, stratified_group_split


def _labeled(counts: dict[str, int], group_size: int = 1) -> pl.DataFrame:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append({"record_id": f"{label}-{i}", "text": f"text {label} {i}", "label": label,
                         "group_id": f"{label}-g{i // group_size}"})
    return pl.DataFrame(rows)


def test_every_label_in_every_split_with_about_80_10_10():
    corpus = _labeled({"a": 40, "b": 20, "c": 10})
    split = stratified_group_split(corpus, SplitSettings()).join(corpus, on="record_id")
    for label, n in {"a": 40, "b": 20, "c": 10}.items():
        sizes = dict(split.filter(pl.col("label") == label).group_by("split").len().iter_rows())
        assert set(sizes) == {"train", "validation", "test"}
        assert sizes["test"] == max(1, round(n * 0.1)) and sizes["validation"] == max(1, round(n * 0.1))


def test_groups_never_straddle_splits_and_result_is_deterministic():
    corpus = _labeled({"a": 30, "b": 30}, group_size=3)
    first = stratified_group_split(corpus, SplitSettings()).join(corpus, on="record_id")
    assert first.group_by("group_id").agg(pl.col("split").n_unique())["split"].max() == 1
    again = stratified_group_split(corpus, SplitSettings()).join(corpus, on="record_id")
    assert first.sort("record_id").equals(again.sort("record_id"))
    other_seed = stratified_group_split(corpus, SplitSettings(seed=99)).join(corpus, on="record_id")
    assert not first.sort("record_id")["split"].equals(other_seed.sort("record_id")["split"])


def test_too_small_class_is_a_clear_error():
    with pytest.raises(SplitError, match="label 'rare' has 2 record group"):
        stratified_group_split(_labeled({"a": 30, "rare": 2}), SplitSettings())


def test_oversampled_rows_only_in_train_and_follow_their_source():
    corpus = _labeled({"big": 40, "small": 12})
    settings = Settings()
    augmented = augment_corpus(corpus, settings).kept
    extra = augmented.filter(pl.col("augmented_from").is_not_null())
    assert extra.height > 0 and set(extra["augmentation"]) == {"oversample"} and set(extra["label"]) == {"small"}
    splits = assign_splits(augmented, settings.splits)
    src = splits.select(pl.col("record_id").alias("augmented_from"), pl.col("split").alias("src_split"))
    joined = splits.filter(pl.col("augmented_from").is_not_null()).join(src, on="augmented_from")
    assert set(joined["split"]) == {"train"} and joined["split"].equals(joined["src_split"])
    train = splits.filter(pl.col("split") == "train")
    counts = dict(train.group_by("label").len().iter_rows())
    assert counts["small"] == counts["big"]  # topped up to the largest class (oversample_ratio 1.0)
    assert splits.filter(pl.col("split") != "train")["augmented_from"].null_count() == \
        splits.filter(pl.col("split") != "train").height


def test_kfold_keeps_groups_together_and_balances_labels():
    corpus = _labeled({"a": 20, "b": 20}, group_size=2)
    folds = kfold_assignments(corpus, 5, seed=1).join(corpus, on="record_id")
    assert folds.group_by("group_id").agg(pl.col("fold").n_unique())["fold"].max() == 1
    per_fold = folds.group_by("fold", "label").len()
    assert per_fold["len"].min() == 4 and per_fold["len"].max() == 4  # 2 groups of 2 per label and fold
