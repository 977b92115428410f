"""Instruction records (no label) through labeling, the corpus checks and the splits: hand-made frames in
the shape sources/cleaning produce (`messages` JSON, `prompt`, `response`, optional `category`)."""

import json

import polars as pl

from finetune_pipeline import validation as v
from finetune_pipeline.labeling import apply_labels
from finetune_pipeline.records import corpus_frame, sha256_text
from finetune_pipeline.settings import Settings
from finetune_pipeline.tasks import task_named

INSTRUCTION = task_named("instruction")


def instruction_settings(**overrides) -> Settings:
    return Settings(task="instruction", training={"instruction": {"base_model": "unused"}}, **overrides)


def conversation(i: int, turns: int = 1, system: bool = False) -> list[dict]:
    messages = [{"role": "system", "content": "You are a support agent."}] if system else []
    for t in range(turns):
        messages += [{"role": "user", "content": f"question {t} of case {i}?"},
                     {"role": "assistant", "content": f"answer {t} of case {i}."}]
    return messages


def instruction_corpus(n: int = 12, category: list | None = None, sources: int = 1, turns: int = 1,
                       group_of=lambda i: f"g{i:03d}") -> pl.DataFrame:
    """`n` instruction records; `category[i % len]` when given; record i from raw/chat{i % sources}.jsonl."""
    rows, categories = [], []
    for i in range(n):
        messages = conversation(i, turns, system=i % 2 == 0)
        text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
        rows.append({"record_id": f"r{i:03d}", "text": text, "source_uri": f"raw/chat{i % sources}.jsonl",
                     "source_type": "jsonl", "locator": f"line {i + 1}", "content_sha256": sha256_text(text)})
        categories.append(category[i % len(category)] if category else None)
    frame = corpus_frame(rows)
    return frame.with_columns(
        pl.Series("messages", [json.dumps(conversation(i, turns, system=i % 2 == 0)) for i in range(n)]),
        pl.Series("prompt", [f"question {turns - 1} of case {i}?" for i in range(n)]),
        pl.Series("response", [f"answer {turns - 1} of case {i}." for i in range(n)]),
        pl.Series("category", categories, pl.String),
        pl.Series("group_id", [group_of(i) for i in range(n)]),
    )


def test_instruction_records_pass_labeling_without_a_label():
    corpus = instruction_corpus(category=["billing", None])
    result = apply_labels(corpus, instruction_settings(labeling={"zero_shot": False}))
    assert result.kept.height == corpus.height and result.rejected.is_empty()
    assert result.kept["label"].null_count() == corpus.height
    assert result.kept["category"].to_list() == corpus["category"].to_list()  # not turned into a label
    assert result.review_queue.is_empty()


def test_labeled_corpus_suite_passes_an_instruction_corpus_and_fails_an_empty_response():
    settings = instruction_settings()
    labeled = apply_labels(instruction_corpus(), settings).kept
    records = INSTRUCTION.record_expectations(INSTRUCTION.labels(labeled, settings))
    assert INSTRUCTION.labels(labeled, settings) == []
    ok = v.validate(labeled, "labeled_instruction", v.labeled_expectations(1, [], records))
    assert ok.passed, ok.summary()
    broken = labeled.with_columns(pl.when(pl.col("record_id") == "r003").then(pl.lit("")).otherwise("response")
                                  .alias("response"))
    bad = v.validate(broken, "labeled_instruction_broken", v.labeled_expectations(1, [], records))
    assert not bad.passed and [f["column"] for f in bad.failures] == ["response"]
    for name, suite in [("augmented", v.augmented_expectations), ("splits", v.split_expectations)]:
        frame = broken.with_columns(pl.lit(None, pl.String).alias("augmented_from"),
                                    pl.lit(None, pl.String).alias("augmentation"), pl.lit("train").alias("split"))
        assert v.validate(frame.filter(pl.col("record_id") != "r003"), f"{name}_ok", suite(1, [], records)).passed
        assert not v.validate(frame, f"{name}_bad", suite(1, [], records)).passed


def test_classification_suites_are_unchanged():
    classification = task_named("classification")
    assert classification.record_expectations(["a"]) is None
    assert classification.labels_every_split_holds(["a"]) == ["a"]
    assert INSTRUCTION.labels_every_split_holds(["a"]) is None
    no_label = instruction_corpus().with_columns(pl.lit("column").alias("label_source"))
    assert not v.validate(no_label, "labeled_classification", v.labeled_expectations(1, ["a"])).passed


def _split_of(frame: pl.DataFrame, cfg=None) -> pl.DataFrame:
    from finetune_pipeline.splits import assign_splits
    from finetune_pipeline.settings import SplitSettings

    return assign_splits(frame.with_columns(pl.lit(None, pl.String).alias("augmented_from")),
                         cfg or SplitSettings(), INSTRUCTION)


def test_instruction_split_stratifies_by_category_and_keeps_near_duplicate_prompts_together():
    # 60 records, 3 categories of 20; records 4k..4k+3 share a group (near-identical prompts).
    corpus = instruction_corpus(60, category=["billing", "shipping", "account"], group_of=lambda i: f"g{i // 2:03d}")
    splits = _split_of(corpus)
    assert splits.group_by("group_id").agg(pl.col("split").n_unique())["split"].max() == 1
    per = splits.group_by("split", "category").len()
    assert per.height == 9  # every category in every split
    shares = v.proportion_frame(splits, 0.1, INSTRUCTION.stratify_column(splits))
    assert shares["within"].all(), shares
    assert splits["label"].null_count() == splits.height


def test_instruction_split_without_category_stratifies_by_source_and_pools_small_sources():
    # three big source files and two with one conversation each: the small ones are pooled, not an error
    corpus = pl.concat([instruction_corpus(60, sources=3),
                        instruction_corpus(2, sources=1).with_columns(
                            pl.Series("record_id", ["x0", "x1"]), pl.Series("group_id", ["gx0", "gx1"]),
                            pl.Series("source_uri", ["raw/tiny0.jsonl", "raw/tiny1.jsonl"]))])
    assert INSTRUCTION.stratify_column(corpus) == "source_uri"
    splits = _split_of(corpus)
    assert splits.height == corpus.height and splits["split"].null_count() == 0
    per_source = splits.filter(pl.col("source_uri").str.starts_with("raw/chat")).group_by("source_uri", "split").len()
    assert per_source.height == 9  # each big source file in every split
    shares = v.proportion_frame(splits, 0.1, "source_uri")
    assert shares["within"].all(), shares


def test_same_seed_same_instruction_split_and_kfold_by_category():
    from finetune_pipeline.splits import kfold_assignments

    corpus = instruction_corpus(40, category=["a", "b"])
    first, second = _split_of(corpus), _split_of(corpus)
    assert first.select("record_id", "split").equals(second.select("record_id", "split"))
    folds = kfold_assignments(first.filter(pl.col("split") == "train"), 4, 13, INSTRUCTION)
    by_fold = folds.join(corpus.select("record_id", "category"), on="record_id").group_by("fold", "category").len()
    assert by_fold.height == 8
