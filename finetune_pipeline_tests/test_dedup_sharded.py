"""The streaming path's deduplication without the texts in memory (dedup/sharded.py) gives `deduplicate`'s
answer row for row, on real text: the descriptions of the Debian packages installed on this machine
(/var/lib/dpkg/status: short synopses, many of them near duplicates that name different things, such as
`-dev`/`-doc` companions, and longer descriptions shared between packages), plus planted copies (case and
spacing changed; one word edited in a long text), an empty text and one of punctuation only, in 97-row
shards (17 of them: pairs across shards) whose keep order is not the input's (with ties and missing values in
the keep-order columns)."""

from __future__ import annotations

import random
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finetune_pipeline import shards
from finetune_pipeline import streaming as st
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.dedup.minhash import _token_table_of, near_duplicate_clusters
from finetune_pipeline.dedup.sharded import applies, near_duplicates_sharded
from finetune_pipeline.settings import Settings

STATUS = Path("/var/lib/dpkg/status")
ROWS = 97


def _descriptions() -> list[str]:
    """Every installed package's synopsis and its long description (one line), in the file's order."""
    texts = []
    for block in STATUS.read_text(encoding="utf-8").split("\n\n"):
        found = re.search(r"^Description: (.*)\n((?: .*\n?)*)", block, re.M)
        if found:
            texts.append(found.group(1).strip())
            body = " ".join(line.strip() for line in found.group(2).splitlines() if line.strip() != ".")
            if body:
                texts.append(body)
    return texts


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return debian_corpus()


def debian_corpus() -> pl.DataFrame:
    """The module's corpus (its docstring): also read by test_ray_backend.py."""
    assert STATUS.exists(), "this test reads the Debian package descriptions of /var/lib/dpkg/status"
    texts = _descriptions()
    rng = random.Random(3)
    longer = [t for t in texts if len(t.split()) > 80]
    planted = [t.upper().replace(" ", "  ") for t in rng.sample(texts, 20)]  # exact copies
    for text in rng.sample(longer, 20):  # one word edited: found by the word 3-gram pass
        words = text.split()
        at = rng.randrange(len(words))
        planted.append(" ".join(words[:at] + ["edited"] + words[at + 1:]))
    texts = texts + planted + ["", "!!! ???"]
    n = len(texts)
    order = list(range(n))
    rng.shuffle(order)  # rows placed at random, the ingestion time of the 3 sources not in row order
    start = datetime(2026, 1, 1)
    return pl.DataFrame({
        "record_id": [f"rec-{i:05d}" for i in order],
        "text": [texts[i] for i in order],
        "source_uri": [f"raw/status-{i % 3}.jsonl" for i in order],
        # ties on the keep-order columns (the record id decides) and missing values (last)
        "locator": ["line 1" if i % 40 == 0 else None if i % 70 == 0 else f"line {i + 1}" for i in order],
        "ingested_at": [None if i % 50 == 0 else start + timedelta(hours=2 - i % 3) for i in order],
        "label": [("docs", "libs", "tools")[i % 3] for i in order],
    })


def _frame(location: Path) -> pl.DataFrame:
    return shards.open_dataset(location).collect()


def test_the_sharded_dedup_gives_the_in_memory_answer_on_real_text(corpus, tmp_path, monkeypatch):
    settings = Settings.model_validate({"execution": {"shard_rows": ROWS}})
    assert applies(settings)
    shards.write_dataset(corpus, tmp_path / "in", shard_rows=ROWS)
    dataset = shards.open_dataset(tmp_path / "in")
    assert len(dataset.manifest.shards) >= 15
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spill"))
    (tmp_path / "spill").mkdir()

    expected = deduplicate(corpus, settings)
    kept = shards.DatasetWriter(tmp_path / "kept", shard_rows=ROWS)
    rejected = shards.DatasetWriter(tmp_path / "rejects", shard_rows=ROWS)
    stats = st.deduplicate_dataset(dataset, settings, kept, rejected)
    kept.commit(), rejected.commit()

    # what the corpus exercises: exact copies, near duplicates of both passes, pairs kept apart for their names
    reasons = expected.rejected["reason"].value_counts()
    assert dict(reasons.iter_rows()).keys() == {"exact_duplicate", "near_duplicate"}
    assert expected.stats.exact_duplicates >= 20 and expected.stats.near_duplicates >= 100
    assert expected.stats.near_kept_apart > 0
    details = expected.rejected.filter(pl.col("reason") == "near_duplicate")["detail"]
    assert details.str.contains("estimated Jaccard").all()
    assert [c for c in expected.kept["record_id"]] != sorted(corpus["record_id"])  # keep order is not row order

    assert _frame(tmp_path / "kept").equals(expected.kept)
    assert _frame(tmp_path / "rejects").equals(expected.rejected)
    assert stats.to_dict() == expected.stats.to_dict()
    assert not list((tmp_path / "spill").iterdir())  # the signatures and pairs are removed


def test_the_sharded_near_duplicates_equal_the_in_memory_ones_pair_for_pair(corpus, tmp_path, monkeypatch):
    """The clusters, similarities to the root (NaN where none is measured), histogram and counts; with small
    buffers and partitions, so that pairs are written in many flushes and large partitions are cut."""
    from finetune_pipeline.dedup import minhash, sharded

    monkeypatch.setattr(sharded, "FLUSH_PAIRS", 100)
    monkeypatch.setattr(sharded, "PART_PAIRS", 8)
    monkeypatch.setattr(sharded, "TOKEN_DOCS", 7)
    cuts = []
    real_cut = sharded._PairSpill._cut
    monkeypatch.setattr(sharded._PairSpill, "_cut", staticmethod(
        lambda path: cuts.append(path.stat().st_size // 8 > 8) or real_cut(path)))
    settings = Settings.model_validate({"dedup": {"threshold": 0.6}})
    shards.write_dataset(corpus, tmp_path / "in", shard_rows=ROWS)
    dataset = shards.open_dataset(tmp_path / "in")
    rows = np.argsort(corpus["record_id"].to_numpy(), kind="stable")  # any order of any rows
    expected = near_duplicate_clusters(corpus["text"].gather(rows), settings.dedup)
    # the names walk made 5 links into Python ints at a time, the texts it needs tokenized shard by shard (never
    # gathered into one series)
    monkeypatch.setattr(minhash, "_WALK_BLOCK", 5)
    monkeypatch.setattr(sharded.DatasetTexts, "gather", lambda self, docs: pytest.fail("texts gathered"))
    found = near_duplicates_sharded(dataset, rows, settings.dedup, spill_dir=tmp_path)
    assert (expected.root != np.arange(len(rows))).sum() > 100
    assert np.array_equal(found.root, expected.root)
    assert np.array_equal(found.similarity, expected.similarity, equal_nan=True)
    assert (found.candidate_histogram, found.candidate_pairs, found.verified_pairs, found.short_texts,
            found.kept_apart) == (expected.candidate_histogram, expected.candidate_pairs, expected.verified_pairs,
                                  expected.short_texts, expected.kept_apart)
    assert [p.name for p in tmp_path.iterdir()] == ["in"]
    assert sum(cuts) > 5  # partitions over PART_PAIRS pairs were cut
    # the names check's token table, each shard read once, 7 texts at a time: the in-memory one, row for row
    docs = np.arange(0, len(rows), 3)
    table = sharded.DatasetTexts(dataset, rows).token_table(docs).decoded().sort("doc", maintain_order=True)
    assert table.equals(_token_table_of(corpus["text"].gather(rows), docs).decoded())
    assert table.height > 10 * len(docs) and table["token"].n_unique() > 1000


def test_the_split_reads_its_texts_shard_by_shard_with_the_same_assignment_and_cache_key(corpus, tmp_path,
                                                                                         monkeypatch):
    """`streaming.split_assignment_dataset` (no text in memory: `splits.TextSource` on the dataset) gives
    `split_assignment`'s answer, and stores its last look under the key the blocking check asks with, so the
    check, which holds the rows with their texts, reads the stored answer instead of computing it again."""
    from finetune_pipeline import splits as splits_module
    from finetune_pipeline.incremental import ResultCache
    from finetune_pipeline.tasks import task_for

    settings = Settings.model_validate({"execution": {"shard_rows": ROWS}})
    labeled = corpus.with_columns(pl.col("record_id").alias("group_id"))
    shards.write_dataset(labeled, tmp_path / "in", shard_rows=ROWS)
    dataset = shards.open_dataset(tmp_path / "in")

    expected, joined = splits_module.split_assignment(labeled, settings.splits, settings.dedup, task_for(settings))
    cache = ResultCache(tmp_path / "cache", "contamination")
    found, found_joined = st.split_assignment_dataset(dataset, settings, check_cache=cache)
    assert found.equals(expected) and found_joined == joined
    # the split_assignment asset's cache key, from the frame without its texts, equals the in-memory one
    frame, texts = st.split_inputs(dataset, settings)
    assert "text" not in frame.columns
    keys = {splits_module.split_key(frame, settings.splits, settings.dedup, task_for(settings), texts),
            splits_module.split_key(st.decision_frame(dataset, st.SPLIT_PASSENGERS), settings.splits,
                                    settings.dedup, task_for(settings))}
    edited = labeled.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("an edited text"))
                                  .otherwise(pl.col("text")).alias("text"))
    shards.write_dataset(edited, tmp_path / "edited", shard_rows=ROWS)
    other, other_texts = st.split_inputs(shards.open_dataset(tmp_path / "edited"), settings)
    keys.add(splits_module.split_key(other, settings.splits, settings.dedup, task_for(settings), other_texts))
    assert len(keys) == 2  # the same key both ways; one text edited, another key
    grouped = expected.filter(pl.col("group_id") != pl.col("record_id")).height
    assert grouped > 100  # near copies share a group across the split

    calls = []
    real = splits_module._contamination_clusters
    monkeypatch.setattr(splits_module, "_contamination_clusters", lambda *a: calls.append(1) or real(*a))
    regrouped = labeled.drop("group_id").join(expected.select("record_id", "group_id"), on="record_id")
    rows = splits_module.assign_splits(regrouped.with_columns(pl.lit(None, pl.String).alias("augmented_from")),
                                       settings.splits)
    checked = splits_module.cross_split_near_duplicates(rows, settings.splits.contamination_threshold, settings.dedup,
                                                        cache)
    assert calls == []  # the stored answer, found by the in-memory key
    # and it is the answer: computed again without the cache (what it holds depends on the packages installed
    # on the machine, so it is compared, not assumed empty)
    fresh = splits_module.cross_split_near_duplicates(rows, settings.splits.contamination_threshold, settings.dedup)
    assert calls == [1] and checked.equals(fresh)


def test_an_empty_corpus_and_a_corpus_of_one_record(corpus, tmp_path):
    settings = Settings()
    for n in (0, 1):
        part = corpus.head(n)
        shards.write_dataset(part, tmp_path / f"in{n}")
        kept = shards.DatasetWriter(tmp_path / f"kept{n}")
        rejected = shards.DatasetWriter(tmp_path / f"rejects{n}")
        stats = st.deduplicate_dataset(shards.open_dataset(tmp_path / f"in{n}"), settings, kept, rejected)
        kept.commit(), rejected.commit()
        expected = deduplicate(part, settings)
        assert _frame(tmp_path / f"kept{n}").equals(expected.kept) and stats.to_dict() == expected.stats.to_dict()
        assert _frame(tmp_path / f"rejects{n}").equals(expected.rejected)


def test_names_differ_judges_pairs_a_chunk_at_a_time_with_the_same_answer(corpus, monkeypatch):
    from finetune_pipeline.dedup import identifiers

    texts = corpus["text"].head(60)
    pairs = np.array([(i, j) for i in range(60) for j in range(i + 1, 60)])
    whole = identifiers.names_differ(texts, pairs)
    assert 0 < whole.sum() < len(pairs)
    monkeypatch.setattr(identifiers, "PAIR_CHUNK", 7)
    assert np.array_equal(identifiers.names_differ(texts, pairs), whole)
