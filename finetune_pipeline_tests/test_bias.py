"""The bias report: demographic term groups per label, and a warning (never a block) on skew."""

import dagster as dg
import polars as pl

from hypothesis import given, settings
from hypothesis import strategies as st

from finetune_pipeline.cleaning.bias import _PATTERNS, ALL_LABELS, bias_findings, bias_report, mentions_frame
from finetune_pipeline.settings import BiasSettings, Settings


def _corpus(rows):
    return pl.DataFrame({"text": [t for t, _ in rows], "label": [label for _, label in rows]})


def test_counts_records_mentioning_each_group_per_label():
    corpus = _corpus([("My wife ordered it for her mother.", "billing"), ("He says his login fails.", "account"),
                      ("The Canadian customs held it; my son is a student.", "shipping"),
                      ("No people here, just a broken lamp.", "shipping")])
    report = bias_report(corpus)
    row = lambda label, group: report.filter((pl.col("label") == label) & (pl.col("group") == group)).row(0, named=True)
    assert row(ALL_LABELS, "female")["mentions"] == 1 and row(ALL_LABELS, "male")["mentions"] == 2
    assert row("shipping", "north_american")["mentions"] == 1 and row("shipping", "young")["share_of_records"] == 0.5
    assert row("billing", "female")["share_of_dimension"] == 1.0
    assert set(report["label"]) == {ALL_LABELS, "billing", "account", "shipping"}


def test_balanced_corpus_gives_no_warning_skewed_one_does():
    balanced = _corpus([("She asked about the refund.", "billing"), ("He asked about the refund.", "billing"),
                        ("She cannot log in.", "account"), ("He cannot log in.", "account")] * 5)
    assert bias_findings(bias_report(balanced), BiasSettings()) == []
    skewed = _corpus([("He asked about the refund.", "billing")] * 18 + [("She asked about the refund.", "billing")] * 2
                     + [("She cannot log in.", "account")] * 10)
    findings = bias_findings(bias_report(skewed), BiasSettings())
    assert any("'male' is 0% of mentions in label 'account' vs 60% overall" in f for f in findings), findings
    assert bias_findings(bias_report(skewed), BiasSettings(min_mentions=1000)) == []  # too few to judge


def test_the_card_findings_from_a_sharded_dataset_leave_out_augmented_rows_and_equal_the_frames(tmp_path):
    """dataset_splits reads the texts for the card's bias findings a shard at a time (`dataset_mentions`), the
    augmented copies left out: the same report and findings as from the original records' frame."""
    from finetune_pipeline import shards
    from finetune_pipeline.cleaning.bias import dataset_mentions
    from finetune_pipeline.tasks import task_named

    originals = _corpus([("He asked about the refund.", "billing")] * 18 + [("She asked about the refund.", "billing")]
                        * 2 + [("She cannot log in.", "account")] * 10).with_columns(
        pl.lit(None, pl.String).alias("augmented_from"))
    copies = originals.head(12).with_columns(pl.lit("r0").alias("augmented_from"),
                                             pl.lit("He asked about the refund.").alias("text"))
    shards.write_dataset(pl.concat([originals, copies]), tmp_path / "splits", shard_rows=7)
    dataset = shards.open_dataset(tmp_path / "splits")
    assert bias_report(None, flags=dataset_mentions(dataset)).equals(bias_report(originals))
    task = task_named("classification")
    findings = task.bias_findings(dataset, Settings())
    assert findings and findings == task.bias_findings(originals, Settings())
    assert task.bias_findings(pl.concat([originals, copies]), Settings()) != findings  # the copies would skew it


def test_skew_warns_without_blocking():
    from finetune_pipeline.defs.reporting import bias_report_representation
    from finetune_pipeline.defs.resources import PipelineResource

    skewed = _corpus([("He asked about the refund.", "billing")] * 20 + [("She cannot log in.", "account")] * 10)
    result = bias_report_representation(pipeline=PipelineResource(data_dir="/nonexistent"),
                                        current=bias_report(skewed))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    from finetune_pipeline.defs.gates import GATES

    [gate] = [g for g in GATES["bias_report"] if g.evaluate is bias_report_representation]
    assert not gate.blocking and not gate.spec().blocking


_PIECES = ["he", "She", "HER", "hers", "mr", "Mrs.", "gen z", "Gen  Z", "south african", "African", "kiwi", "man",
           "manager", "the", "<PERSON>", "<her>", "her>", "<he", "_he", "he_", "he2", "2he", "Él", "é", "he\u0301",
           "\u212a", "ſ", "ß", "İ", "\n", " ", ",", "-", "'s", "ü", "日本", "Chinese", "chinésé", "mum", "x"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=8).map("".join), min_size=1, max_size=6))
def test_mentions_follow_one_rule_for_ascii_and_unicode_texts(texts):
    """polars' search of ASCII texts and Python's search of the others give what Python's `re` gives on all."""
    flags = mentions_frame(pl.DataFrame({"text": texts, "label": ["a"] * len(texts)}))
    for (dim, group), pattern in _PATTERNS.items():
        assert flags[f"{dim}/{group}"].to_list() == [bool(pattern.search(t)) for t in texts], (dim, group)
