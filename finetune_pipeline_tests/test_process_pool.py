"""Cleaning spread over processes (`execution.workers`) gives what cleaning in one process gives."""

import polars as pl

from finetune_pipeline import execution
from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text
from finetune_pipeline.settings import Settings

TEXTS = ["My parcel from last week has not arrived, tracking says it is still in Leeds.",
         "Please call me back on +44 20 7946 0958, my name is Maria Lopez.",
         "I was charged twice for order 4829113 and want a refund of the second payment.",
         "The app crashes when I open the settings page on my phone.",
         "ok",
         "Write to ana.lima@example.com about the invoice, Thiago da Costa said so."]


def _corpus() -> pl.DataFrame:
    rows = []
    for i in range(36):
        uri = f"raw/part-{i % 3}.jsonl" if i % 4 else "raw/report.pdf"
        kind = "pdf" if uri.endswith(".pdf") else "jsonl"
        text = f"{TEXTS[i % len(TEXTS)]} Case {'abcdefghijkl'[i % 12]}{'xyz'[i // 12]}." if i % 6 != 4 else "ok"
        if kind == "pdf":
            text = f"ACME Support Report\n{text}\nPage footer"  # repeated lines over the pages of one document
        rows.append({"record_id": make_record_id(uri, f"line {i}"), "text": text, "source_uri": uri,
                     "source_type": kind, "locator": f"line {i}", "content_sha256": sha256_text(text)})
    return corpus_frame(rows)


def test_cleaning_over_two_processes_equals_cleaning_in_one(monkeypatch):
    monkeypatch.setattr(execution, "POOL_MIN_ROWS", 1)  # checked in this process only
    corpus = _corpus()
    one = clean_corpus(corpus, Settings(privacy={"detector": "patterns"}, execution={"workers": 1}))
    calls = []
    pool = execution.process_pool_groups
    monkeypatch.setattr(execution, "process_pool_groups", lambda *a, **k: calls.append(1) or pool(*a, **k))
    two = clean_corpus(corpus, Settings(privacy={"detector": "patterns"}, execution={"workers": 2}))
    assert calls, "the process pool was not used"
    assert two.kept.equals(one.kept) and two.rejected.equals(one.rejected)
    assert two.stats == one.stats
    assert one.rejected.height and "<PERSON>" in " ".join(one.kept["text"])
    pages = one.kept.filter(pl.col("source_type") == "pdf")["text"]
    assert pages.len() and not pages.str.contains("ACME Support Report").any()  # headers found across pages


def test_groups_stay_whole_and_every_row_comes_back_once():
    frame = pl.DataFrame({"g": [i % 7 for i in range(100)], "v": list(range(100))})

    out = execution.process_pool_groups(frame, ["g"], _whole_groups, 2, chunks_per_worker=2)
    assert sorted(out["v"].to_list()) == list(range(100))
    assert out.group_by("g").agg(pl.col("_call").n_unique())["_call"].max() == 1  # a group in one call only


def _whole_groups(batch: pl.DataFrame) -> pl.DataFrame:
    import os
    import uuid

    return batch.with_columns(pl.lit(f"{os.getpid()}-{uuid.uuid4()}").alias("_call"))
