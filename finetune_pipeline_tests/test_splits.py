"""Split invariants: stratified, group-aware, deterministic, augmentation only in train."""

from collections import Counter

import numpy as np
import polars as pl
import pytest

from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.records import corpus_frame, sha256_text
from finetune_pipeline.settings import Settings, SplitSettings
from finetune_pipeline.splits import (NO_STRATUM, SplitError, _merge_linked_groups, apply_split_assignment,
                                      assign_splits, group_strata, kfold_assignments, split_assignment,
                                      stratified_group_split)


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
    splits = apply_split_assignment(augmented, split_assignment(corpus, settings.splits, settings.dedup)[0])
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


def _chunked_corpus() -> pl.DataFrame:
    """A long report cut into 12 chunks, beside 60 one-record tickets, two labels; every text its own words
    (no two are near copies, which would share a group anyway)."""
    import numpy as np

    rng = np.random.default_rng(3)
    words = [f"{a}{b}{c}" for a in "bdfgklmnprstv" for b in "aeiou" for c in ("n", "r", "s", "x")]

    def text() -> str:
        return " ".join(rng.choice(words, size=16, replace=False))

    rows = []
    for i in range(12):
        body = text()
        rows.append({"record_id": f"doc{i:02d}", "text": body, "source_uri": "raw/report.pdf", "source_type": "pdf",
                     "locator": f"page {i + 1}", "content_sha256": sha256_text(body), "label": ["a", "b"][i % 2],
                     "label_source": "folder", "label_confidence": 1.0})
    for i in range(60):
        body = text()
        rows.append({"record_id": f"t{i:03d}", "text": body, "source_uri": f"raw/t{i}.txt", "source_type": "txt",
                     "locator": "chunk 1", "content_sha256": sha256_text(body), "label": ["a", "b"][i % 2],
                     "label_source": "folder", "label_confidence": 1.0})
    return corpus_frame(rows).with_columns(pl.col("record_id").alias("group_id"),
                                           pl.lit(None, pl.String).alias("augmented_from"))


def test_the_chunks_of_one_document_never_straddle_splits_and_the_check_sees_it_when_they_do():
    from finetune_pipeline import validation as v
    from finetune_pipeline.settings import DedupSettings
    from finetune_pipeline.splits import DOCUMENT_SOURCE_TYPES, join_similar_groups

    corpus, dedup = _chunked_corpus(), DedupSettings()
    by_document = SplitSettings()  # group_by: document is the default
    split = assign_splits(join_similar_groups(corpus, by_document, dedup), by_document)
    assert split.filter(pl.col("source_uri") == "raw/report.pdf")["split"].n_unique() == 1
    assert v.validate(v.document_frame(split, DOCUMENT_SOURCE_TYPES), "docs", v.leakage_expectations()[0]).passed
    by_cluster = SplitSettings(group_by="cluster")
    spread = assign_splits(join_similar_groups(corpus, by_cluster, dedup), by_cluster)
    assert spread.filter(pl.col("source_uri") == "raw/report.pdf")["split"].n_unique() > 1
    assert not v.validate(v.document_frame(spread, DOCUMENT_SOURCE_TYPES), "docs",
                          v.leakage_expectations()[0]).passed


def test_a_group_column_keeps_a_thread_together():
    from finetune_pipeline.settings import DedupSettings
    from finetune_pipeline.splits import join_similar_groups

    corpus = _chunked_corpus().with_columns(
        pl.when(pl.col("record_id").str.starts_with("t00")).then(pl.lit("thread-7")).alias("thread"))
    cfg = SplitSettings(group_by="column", group_column="thread")
    split = assign_splits(join_similar_groups(corpus, cfg, DedupSettings()), cfg)
    assert split.filter(pl.col("thread") == "thread-7")["split"].n_unique() == 1
    with pytest.raises(ValueError, match="group_column"):
        SplitSettings(group_by="column")


def test_near_copies_the_groups_missed_are_joined_after_the_split(monkeypatch):
    """The groups come from LSH over the originals, the check's clusters from LSH over every row in split
    order, and the two can find different pairs (a bucket pairs each document with its next few members
    only). Here the grouping misses every near copy: the first split puts some across splits, and
    `contamination_free_splits` joins their groups and splits again until the check's detector finds none."""
    import random

    from finetune_pipeline import splits as splits_module
    from finetune_pipeline.settings import DedupSettings

    rng = random.Random(4)
    vocabulary = [f"word{i}" for i in range(400)]
    rows = []
    for label in ("billing", "shipping"):
        for i in range(30):
            text = " ".join(rng.sample(vocabulary, 30))
            rows.append({"record_id": f"{label}-{i}", "text": text, "label": label, "group_id": f"{label}-{i}"})
            if i % 2 == 0:  # a lightly edited copy: one word changed
                words = text.split()
                words[rng.randrange(len(words))] = "changed"
                rows.append({"record_id": f"{label}-{i}-copy", "text": " ".join(words), "label": label,
                             "group_id": f"{label}-{i}-copy"})
    corpus = pl.DataFrame(rows).with_columns(pl.lit(None, pl.String).alias("augmented_from"))
    cfg, dedup = SplitSettings(), DedupSettings()
    monkeypatch.setattr(splits_module, "join_similar_groups", lambda frame, cfg, dedup, texts=None: frame)
    first = assign_splits(corpus, cfg)
    assert splits_module.cross_split_near_duplicates(first, cfg.contamination_threshold, dedup).height > 0

    # with one split allowed, what is found after it is left for the gate: the clusters stay across splits
    once, joined_once = splits_module.contamination_free_splits(corpus, cfg, dedup, max_rounds=1)
    assert joined_once > 0
    assert splits_module.cross_split_near_duplicates(once, cfg.contamination_threshold, dedup).height > 0
    splits, joined = splits_module.contamination_free_splits(corpus, cfg, dedup)
    assert joined > 0
    assert splits_module.cross_split_near_duplicates(splits, cfg.contamination_threshold, dedup).is_empty()
    assert sorted(splits["record_id"]) == sorted(corpus["record_id"])  # every record still in one split
    copies = splits.filter(pl.col("record_id").str.ends_with("-copy"))
    split_of = dict(splits.select("record_id", "split").iter_rows())
    assert all(split_of[r.removesuffix("-copy")] == s for r, s in copies.select("record_id", "split").iter_rows())


def _minority_corpus() -> pl.DataFrame:
    """60 records of label `a` and 24 of label `b` (oversampled to balance), 24 distinct words each; no two
    are near copies."""
    import numpy as np

    rng = np.random.default_rng(11)
    vocabulary = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "vo", "re", "di", "fu", "po", "zi")
                  for b in ("ber", "dan", "gol", "hix", "jun", "mor", "pel", "sat", "tov", "wix", "zen", "yar")]
    rows = []
    for label, count in (("a", 60), ("b", 24)):
        for i in range(count):
            text = " ".join(rng.choice(vocabulary, size=24, replace=False).tolist())
            rows.append({"record_id": f"{label}{i:03d}", "text": text, "source_uri": "raw/q.csv", "source_type": "csv",
                         "locator": f"row {len(rows)}", "content_sha256": sha256_text(text), "label": label,
                         "label_source": "column", "label_confidence": 1.0})
    return corpus_frame(rows).with_columns(pl.col("record_id").alias("group_id"))


def _light_edit(text: str) -> str:
    words = text.split()
    words[6], words[17] = "changed", "edited"  # word 3-gram Jaccard about 0.57: over the 0.5 threshold
    return " ".join(words)


def corpus_the_second_look_reshapes() -> tuple[pl.DataFrame, str]:
    """A corpus where a minority record the plain stratified split puts in train (`moved`) has a light edit
    in the same label on the other side of that split: the contamination-free split joins the two and places
    the pair outside train. Returns the corpus and `moved`."""
    from finetune_pipeline.settings import DedupSettings
    from finetune_pipeline.splits import contamination_free_splits

    base, cfg = _minority_corpus(), SplitSettings()
    plain = dict(stratified_group_split(base, cfg).iter_rows())
    minority = [r for r in base["record_id"] if r.startswith("b")]
    text_of = dict(base.select("record_id", "text").iter_rows())
    for held in (r for r in minority if plain[r] != "train"):
        for moved in (r for r in minority if plain[r] == "train"):
            corpus = base.with_columns(pl.when(pl.col("record_id") == held).then(pl.lit(_light_edit(text_of[moved])))
                                       .otherwise(pl.col("text")).alias("text"))
            splits, _ = contamination_free_splits(corpus.with_columns(pl.lit(None, pl.String).alias("augmented_from")),
                                                  cfg, DedupSettings())
            if dict(splits.select("record_id", "split").iter_rows())[moved] != "train":
                return corpus.with_columns(pl.col("text").map_elements(sha256_text, return_dtype=pl.String)
                                           .alias("content_sha256")), moved
    raise AssertionError("no pair found that the contamination-free split moves out of train")


def test_no_oversampled_copy_leaves_train_when_near_copies_move_an_original(tmp_path):
    """The split is decided once: a record the plain stratified split had in train but the contamination-free
    split moves to validation or test is not oversampled, every augmented row is in train, and
    dataset_splits_no_leakage passes (before: its copies followed it out of train and the check failed)."""
    import json

    import dagster as dg

    from finetune_pipeline.definitions import ALL_ASSETS, resources_for
    from finetune_pipeline.defs.resources import PipelineResource
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.stored import store_frame, stored_frame

    corpus, moved = corpus_the_second_look_reshapes()
    (tmp_path / "finetune.yaml").write_text(json.dumps({"labels": ["a", "b"], "privacy": {"detector": "patterns"},
                                                        "checks": {"min_records": 10}}))
    root = DataRoot(tmp_path)
    store_frame(root, "labeled_corpus", corpus)  # as the labeling stage stored it
    former = root.result_cache / "dataset_splits.parquet"  # the whole split with its texts, as stored before
    former.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_parquet(former)
    after_labeling = (dg.AssetSelection.assets("dataset_splits").upstream()
                      - dg.AssetSelection.assets("labeled_corpus").upstream())
    job = dg.define_asset_job("splits", selection=after_labeling)
    defs = dg.Definitions(assets=ALL_ASSETS, jobs=[job], resources=resources_for(PipelineResource(data_dir=str(tmp_path))))
    result = defs.resolve_job_def("splits").execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                                              raise_on_error=False)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    splits = stored_frame(root, "dataset_splits")
    augmented = splits.filter(pl.col("augmented_from").is_not_null())
    assert augmented.height > 0 and set(augmented["label"]) == {"b"}
    assert set(augmented["split"]) == {"train"}
    assert splits.filter(pl.col("record_id") == moved)["split"][0] != "train"
    assert moved not in set(augmented["augmented_from"])  # held out: never a source of training rows
    assert checks["dataset_splits_no_leakage"] and checks["dataset_splits_no_contamination"]
    assert checks["split_assignment_every_record"]
    assert not former.exists()  # no text left in a cache nothing reads (an erasure request could not reach it)
    assignment = pl.read_parquet(root.asset_values / "split_assignment.parquet")
    assert splits.filter(pl.col("augmented_from").is_null()).select("record_id", "split").sort("record_id") \
        .equals(assignment.select("record_id", "split"))  # dataset_splits applied the decision, made none

    # The stored split edited afterwards (a source of oversampled rows moved to test): dataset_splits applies
    # it as it is, the copies follow their source, and the leakage gate fails.
    source = augmented["augmented_from"][0]
    assignment.with_columns(pl.when(pl.col("record_id") == source).then(pl.lit("test")).otherwise(pl.col("split"))
                            .alias("split")).write_parquet(root.asset_values / "split_assignment.parquet")
    job = dg.define_asset_job("export", selection=dg.AssetSelection.assets("dataset_splits"))
    defs = dg.Definitions(assets=ALL_ASSETS, jobs=[job], resources=resources_for(PipelineResource(data_dir=str(tmp_path))))
    edited = defs.resolve_job_def("export").execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                                               raise_on_error=False)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in edited.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["dataset_splits_no_leakage"] is False and not edited.success


def test_the_export_applies_the_stored_assignment_and_refuses_one_made_for_other_data():
    corpus = _labeled({"a": 20, "b": 10})
    settings = Settings()
    assignment, _ = split_assignment(corpus, settings.splits, settings.dedup)
    assert assignment.columns == ["record_id", "split", "group_id"] and assignment.height == corpus.height
    augmented = augment_corpus(corpus, settings, assignment=assignment).kept
    splits = apply_split_assignment(augmented, assignment)
    placed = dict(assignment.select("record_id", "split").iter_rows())
    group = dict(assignment.select("record_id", "group_id").iter_rows())
    for record_id, source, split, group_id in splits.select("record_id", "augmented_from", "split",
                                                           "group_id").iter_rows():
        assert split == placed[source or record_id] and group_id == group[source or record_id]
    assert splits["split"].to_list() == sorted(splits["split"].to_list(), key=["train", "validation", "test"].index)
    with pytest.raises(SplitError, match="1 record\\(s\\) of the corpus without a split \\(e.g. b-9\\)"):
        apply_split_assignment(augmented, assignment.filter(pl.col("record_id") != "b-9"))
    stranger = assignment.head(1).with_columns(pl.lit("z-1").alias("record_id"))
    with pytest.raises(SplitError, match="1 assigned record\\(s\\) not in the corpus \\(e.g. z-1\\)"):
        apply_split_assignment(augmented, pl.concat([assignment, stranger]))
    with pytest.raises(SplitError, match="^[^;]*: 2 record\\(s\\) assigned twice\\."):
        apply_split_assignment(augmented, pl.concat([assignment, assignment.head(2)]))
    with pytest.raises(SplitError, match="materialize split_assignment again"):
        augment_corpus(corpus.filter(pl.col("record_id") != "a-0"), settings, assignment=assignment)


def test_only_train_records_are_augmented_and_a_copy_near_held_out_data_is_dropped(tmp_path):
    """Augmentation reads the assignment it is given: a held-out record is never a source, and a row that is a
    near copy of a validation or test record (here: the assignment was made by hand and put two near copies
    on both sides) is dropped as near_held_out, not put in train. The streaming path, which leaves the texts in
    the shards (copies only) and reads them shard by shard for that look, drops the same rows."""
    from finetune_pipeline import shards, streaming

    corpus = _minority_corpus()
    text_of = dict(corpus.select("record_id", "text").iter_rows())
    corpus = corpus.with_columns(pl.when(pl.col("record_id") == "b001").then(pl.lit(_light_edit(text_of["b000"])))
                                 .otherwise(pl.col("text")).alias("text"))
    held_out = {"a000": "validation", "a001": "test", "b001": "validation", "b002": "test", "b003": "validation",
                "b004": "test", "a002": "validation", "a003": "test"}
    assignment = corpus.select("record_id", pl.col("record_id").replace_strict(held_out, default="train")
                               .alias("split"), "group_id").sort("record_id")
    result = augment_corpus(corpus, Settings(), assignment=assignment)
    extra = result.kept.filter(pl.col("augmented_from").is_not_null())
    assert extra.height > 0 and not set(extra["augmented_from"]) & set(held_out)
    assert "b000" not in set(extra["augmented_from"])  # its copies would be near copies of b001 (validation)
    assert result.stats.generated_dropped["near_held_out"] > 0
    assert (result.stats.train_records, result.stats.held_out_records) == (corpus.height - len(held_out), len(held_out))

    shards.write_dataset(corpus, tmp_path / "labeled", shard_rows=25)  # b000 and b001 in different shards
    with shards.DatasetWriter(tmp_path / "augmented", shard_rows=25) as writer:
        stats = streaming.augment_dataset(shards.open_dataset(tmp_path / "labeled"), Settings(), writer,
                                          assignment=assignment)
    assert shards.open_dataset(tmp_path / "augmented").collect().equals(result.kept)
    assert stats.to_dict() == result.stats.to_dict()


def test_a_light_edit_of_a_short_real_text_is_contamination_even_where_word_3grams_miss_it():
    """The gauntlet's leak: a package synopsis in validation and its copy in test with ' - ' replaced by one
    word (word 3-gram Jaccard 0.45, under 0.5). Short texts are compared on word sets, as dedup does."""
    from finetune_pipeline.settings import DedupSettings
    from finetune_pipeline.splits import cross_split_near_duplicates

    text = "Linux SCSI target user-space daemon and tools - GlusterFS support"
    frame = pl.DataFrame({"record_id": ["a", "b", "c", "d"],
                          "text": [text, text.replace(" - ", " with "), "GNU C compiler for the hosted architecture",
                                   "Network time protocol daemon and utilities"],
                          "split": ["validation", "test", "train", "train"]})
    crossing = cross_split_near_duplicates(frame, 0.5, DedupSettings())
    assert crossing.height == 1
    assert sorted(crossing.row(0)[1]) == ["a", "b"]


def test_the_split_checks_on_a_sharded_dataset_answer_as_on_the_frame(tmp_path):
    """dataset_splits streams (its rows a sharded dataset, the checks reading the texts a shard at a time): its
    leakage and contamination checks fail on a planted near copy across splits and a group in two splits, naming
    the same records as on the collected frame, and pass on the clean rows."""
    from finetune_pipeline import shards
    from finetune_pipeline.defs.resources import PipelineResource
    from finetune_pipeline.defs.splits import dataset_splits_no_contamination, dataset_splits_no_leakage

    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
    rows = []
    for i in range(60):
        label = "ab"[i % 2]
        text = " ".join(words[(i * 7 + k) % len(words)] + str(i) for k in range(40))  # unlike every other row
        rows.append({"record_id": f"r{i:03d}", "text": text, "label": label, "split": ["train", "validation",
                     "test"][i % 3] if i % 3 else "train", "group_id": f"g{i:03d}", "source_uri": f"raw/{i}.txt", "source_type": "txt",
                     "locator": "", "content_sha256": sha256_text(text), "augmented_from": None})
    clean = pl.DataFrame(rows).with_columns(pl.col("augmented_from").cast(pl.String)).sort("split", "record_id")
    copy = rows[0]["text"].replace(words[0] + "0", "omega0", 1)  # a light edit of a train text, put in test
    planted = pl.concat([clean, pl.DataFrame([{**rows[0], "record_id": "r999", "text": copy, "split": "test",
                                               "group_id": "g999", "content_sha256": sha256_text(copy)}],
                                             schema=clean.schema)])
    straddling = planted.with_columns(  # and a group with records in train and validation
        pl.when(pl.col("record_id") == "r001").then(pl.lit("g000")).otherwise(pl.col("group_id")).alias("group_id"))
    pipeline = PipelineResource(data_dir=str(tmp_path / "root"),
                                settings_yaml="labels: [a, b]\nchecks: {min_records: 10}\nsplits: {proportion_tolerance: 0.5}")
    for name, frame, passes in (("clean", clean, True), ("planted", straddling, False)):
        shards.write_dataset(frame, tmp_path / name, shard_rows=16)
        dataset = shards.open_dataset(tmp_path / name)  # 4-5 shards
        assert len(dataset.shard_urls()) > 3
        answers = []
        for value in (frame, dataset):
            contamination = dataset_splits_no_contamination(pipeline, value)
            leakage = dataset_splits_no_leakage(pipeline, value)
            meta = {k: v.value for k, v in contamination.metadata.items()}
            answers.append((contamination.passed, leakage.passed, meta.get("clusters_across_splits"),
                            meta.get("records"), {k: v.value for k, v in leakage.metadata.items()}.get("records")))
        assert answers[0] == answers[1], name
        assert answers[0][:2] == (passes, passes), answers[0]
        if not passes:
            assert answers[0][2] == 1 and "r999" in answers[0][3] and "r000" in answers[0][3]
            assert "r001" in answers[0][4] and "r000" in answers[0][4]


def test_a_groups_stratum_is_its_most_frequent_label_the_first_by_name_on_ties():
    """`group_strata` counts (group, label) pairs: against a mode per group computed in Python, on groups with
    one label, a clear majority, ties between two and three labels, and null labels (NO_STRATUM)."""
    rng = np.random.default_rng(3)
    rows = []
    for g in range(400):
        size = int(rng.integers(1, 7))
        rows += [(f"g{g:04d}", rng.choice(["b", "a", "c", None], p=[0.3, 0.3, 0.3, 0.1])) for _ in range(size)]
    corpus = pl.DataFrame(rows, schema={"group_id": pl.String, "label": pl.String}, orient="row")
    expected = {}
    for group, part in corpus.group_by("group_id"):
        counts = Counter(v if v is not None else NO_STRATUM for v in part["label"].to_list())
        top = max(counts.values())
        expected[group[0]] = (min(v for v, n in counts.items() if n == top), part.height)
    strata = group_strata(corpus, "group_id", "label")
    assert strata["group_id"].to_list() == sorted(expected)
    assert {g: (label, n) for g, label, n in strata.iter_rows()} == expected
    ties = [g for g, part in corpus.group_by("group_id") if sorted(Counter(part["label"].to_list()).values())[-2:] in ([1, 1], [2, 2])]
    assert len(ties) > 20  # the tie rule is exercised


def test_linked_groups_join_the_smallest_group_id_of_their_component():
    """`_merge_linked_groups` renames only the groups of components with several items: against a union-find
    in Python, on random links between 300 items of 120 groups (a group named by several items, linked)."""
    rng = np.random.default_rng(5)
    groups = pl.Series("group_id", [f"g{int(g):03d}" for g in rng.integers(0, 120, 300)])
    corpus = pl.DataFrame({"record_id": [f"r{i:03d}" for i in range(300)], "group_id": groups,
                           "other": list(range(300))})
    # random links, and each item to the group's first item (as `join_similar_groups` links a group's rows)
    first = {}
    links = np.concatenate([rng.integers(0, 300, (40, 2)),
                            [(i, first.setdefault(g, i)) for i, g in enumerate(groups.to_list())]])
    parent = list(range(300))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in links.tolist():
        parent[find(i)] = find(j)
    smallest = {}
    for i in range(300):
        smallest[find(i)] = min(smallest.get(find(i), groups[i]), groups[i])
    merged = _merge_linked_groups(corpus, "group_id", groups, links)
    assert merged.columns == ["record_id", "group_id", "other"] and merged["other"].to_list() == list(range(300))
    assert merged["group_id"].to_list() == [smallest[find(i)] for i in range(300)]
    assert merged["group_id"].n_unique() < groups.n_unique()  # some groups were joined
