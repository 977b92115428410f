"""The embedding cache: vectors reused by (text, model identity, max_length), pruned to what a run used."""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from finetune_pipeline import embeddings
from finetune_pipeline.embeddings import EmbeddingCache, embed

TEXTS = ["The invoice is overdue by three weeks.", "Please reset my password.", "short",
         "A much longer sentence about shipping delays, refunds and the warehouse in Leeds."]
# Batching longest-first with padding moves float results at noise level (measured: at most 1.3e-7 over 500 texts, half cached), so a
# vector reused from another run's batch equals the uncached one within this tolerance, not bit for bit.
ATOL = 1e-5


def _stage(folder, texts, max_length=64):
    """What a stage does: embed through a fresh cache, then save it."""
    cache = EmbeddingCache(folder, "stage")
    vectors = embed(texts, None, 2, max_length, cache=cache)
    cache.save()
    return vectors


def _no_encoder(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("encoder called although every text was cached")
    monkeypatch.setattr(embeddings, "_encode", fail)


def test_second_call_reuses_every_vector_and_matches_uncached(tmp_path, monkeypatch):
    plain = embed(TEXTS, None, 2, 64)
    first = EmbeddingCache(tmp_path, "stage")
    cached = embed(TEXTS, None, 2, 64, cache=first)
    first.save()
    assert (first.computed, first.reused) == (4, 0)
    np.testing.assert_array_equal(cached, plain)  # same texts, same batches: exact
    _no_encoder(monkeypatch)
    second = EmbeddingCache(tmp_path, "stage")
    again = embed(TEXTS[::-1], None, 2, 64, cache=second)
    assert (second.computed, second.reused) == (0, 4)
    np.testing.assert_array_equal(again, plain[::-1])
    assert again.dtype == np.float32


def test_partial_hit_within_tolerance_of_uncached(tmp_path):
    _stage(tmp_path, TEXTS[:2])
    cache = EmbeddingCache(tmp_path, "stage")
    mixed = embed(TEXTS, None, 2, 64, cache=cache)
    assert (cache.computed, cache.reused) == (2, 2)
    np.testing.assert_allclose(mixed, embed(TEXTS, None, 2, 64), atol=ATOL)


def test_other_max_length_or_model_misses(tmp_path):
    _stage(tmp_path, TEXTS)
    cache = EmbeddingCache(tmp_path, "stage")
    embed(TEXTS, None, 2, 32, cache=cache)
    assert cache.computed == 4
    key = embeddings.text_key("x", "model-a", 64)
    assert key != embeddings.text_key("x", "model-b", 64) != embeddings.text_key("x", "model-a", 32)


def test_local_model_identity_follows_its_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"abc")
    before = embeddings.model_identity(str(folder))
    (folder / "model.safetensors").write_bytes(b"abcd")
    assert embeddings.model_identity(str(folder)) != before


def test_corrupt_cache_file_is_recomputed(tmp_path):
    _stage(tmp_path, TEXTS)
    (tmp_path / "stage.parquet").write_bytes(b"not parquet")
    cache = EmbeddingCache(tmp_path, "stage")
    np.testing.assert_array_equal(embed(TEXTS, None, 2, 64, cache=cache), embed(TEXTS, None, 2, 64))
    assert cache.computed == 4
    cache.save()
    assert EmbeddingCache(tmp_path, "stage").stored()  # rewritten whole


def test_text_no_longer_embedded_is_pruned(tmp_path):
    _stage(tmp_path, TEXTS)
    _stage(tmp_path, TEXTS[1:])  # TEXTS[0] erased
    stored = EmbeddingCache(tmp_path, "stage").stored()
    assert len(stored) == 3
    from finetune_pipeline.training.base_model import resolve_base_model
    identity = embeddings.model_identity(resolve_base_model(None))
    assert embeddings.text_key(TEXTS[0], identity, 64) not in stored


def test_domain_filter_reuses_the_vectors_of_its_examples_and_records(tmp_path, monkeypatch):
    import polars as pl

    from finetune_pipeline.domain import domain_filter
    from finetune_pipeline.settings import DomainSettings

    cfg = DomainSettings(description="customer support about invoices, payments and passwords", threshold=0.2,
                         max_reject_share=1.0)  # four records, three off-domain: past the guard on purpose
    corpus = pl.DataFrame({"record_id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS,
                           "source_uri": "raw/t.txt", "source_type": "txt", "locator": "line 1"})
    plain = domain_filter(corpus, cfg)
    first = EmbeddingCache(tmp_path, "stage")
    cached = domain_filter(corpus, cfg, cache=first)
    first.save()
    assert first.computed == len(TEXTS) + 1 and first.reused == 0  # the records and the description
    _no_encoder(monkeypatch)
    second = EmbeddingCache(tmp_path, "stage")
    again = domain_filter(corpus, cfg, cache=second)
    assert (second.computed, second.reused) == (0, len(TEXTS) + 1)
    for result in (cached, again):
        assert result.kept["record_id"].to_list() == plain.kept["record_id"].to_list()
        assert result.stats.score_histogram == plain.stats.score_histogram


def test_a_stage_that_embedded_nothing_leaves_no_file(tmp_path):
    _stage(tmp_path, TEXTS)
    assert (tmp_path / "stage.parquet").exists()
    EmbeddingCache(tmp_path, "stage").save()  # e.g. the domain filter and semantic dedup switched off
    assert not (tmp_path / "stage.parquet").exists()


def _labeling_corpus():
    from finetune_pipeline.records import corpus_frame

    texts = TEXTS + ["My parcel never arrived, where is it?", "I was charged twice for one order."]
    return corpus_frame([{"record_id": f"r{i}", "text": text, "source_uri": f"raw/r{i}.txt", "locator": "element 0",
                          "content_sha256": "0" * 64} for i, text in enumerate(texts)])


def test_zero_shot_labels_reuse_their_vectors_with_the_same_predictions(tmp_path, monkeypatch):
    from finetune_pipeline.labeling.zero_shot import predict_labels
    from finetune_pipeline.settings import LabelingSettings

    texts, labels = _labeling_corpus()["text"].to_list(), ["billing", "account_access", "shipping"]
    cfg = LabelingSettings(label_descriptions={"billing": "a charge, a payment or an invoice"})
    plain = predict_labels(texts, labels, cfg)
    first = EmbeddingCache(tmp_path, "labeled_corpus")
    cached = predict_labels(texts, labels, cfg, cache=first)
    first.save()
    assert (first.computed, first.reused) == (len(texts) + len(labels), 0)  # the texts and the label descriptions
    _no_encoder(monkeypatch)
    second = EmbeddingCache(tmp_path, "labeled_corpus")
    again = predict_labels(texts, labels, cfg, cache=second)
    assert (second.computed, second.reused) == (0, len(texts) + len(labels))
    for result in (cached, again):
        assert result.labels == plain.labels
        np.testing.assert_allclose(result.confidences, plain.confidences, atol=ATOL)


def test_a_fully_cached_labeling_pass_does_not_import_torch(tmp_path):
    """What an unchanged rerun's labeling step pays: the vectors from the cache, no torch and no encoder."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        import polars as pl
        from finetune_pipeline.embeddings import EmbeddingCache
        from finetune_pipeline.labeling import apply_labels
        from finetune_pipeline.settings import Settings
        corpus = pl.read_parquet(sys.argv[1])
        settings = Settings(labels=["billing", "shipping"], checks={{"min_records": 1}})
        cache = EmbeddingCache(sys.argv[2], "labeled_corpus")
        result = apply_labels(corpus, settings, embedding_cache=cache)
        cache.save()
        print(cache.computed, cache.reused, "torch" in sys.modules, result.kept.height + result.rejected.height)
    """)
    corpus = tmp_path / "corpus.parquet"
    _labeling_corpus().write_parquet(corpus)
    run = [sys.executable, "-c", script, str(corpus), str(tmp_path / "cache")]
    first = subprocess.run(run, capture_output=True, text=True, check=True).stdout.split()
    second = subprocess.run(run, capture_output=True, text=True, check=True).stdout.split()
    n = _labeling_corpus().height
    assert first == [str(n + 2), "0", "True", str(n)]
    assert second == ["0", str(n + 2), "False", str(n)]


def test_augmentation_filters_reuse_their_vectors_with_the_same_decisions(tmp_path, monkeypatch):
    from collections import Counter

    from finetune_pipeline.augment.generate import CandidateFilter
    from finetune_pipeline.settings import Settings

    settings = Settings(labels=["billing"], augmentation={"min_similarity": 0.5})
    sources = ["I was charged twice for my order and want a refund.", "My invoice shows the wrong amount."]
    candidates = [["I got billed two times for the order, please refund me.", "The weather is lovely today."],
                  ["The amount on my invoice is not right."]]

    def run(cache):
        dropped = Counter()
        kept = CandidateFilter(TEXTS, settings, cache=cache).paraphrases(sources, candidates, dropped)
        return kept, dropped

    plain = run(None)
    assert plain[1]["too_far"] == 1 and sum(map(len, plain[0])) == 2  # the filter decides something
    first = EmbeddingCache(tmp_path, "augmented_corpus")
    assert run(first) == plain
    first.save()
    _no_encoder(monkeypatch)
    second = EmbeddingCache(tmp_path, "augmented_corpus")
    assert run(second) == plain
    assert second.computed == 0 and second.reused == first.computed == 5  # 3 candidates and 2 sources


def test_a_max_length_above_the_models_positions_is_cut_to_them(tmp_path):
    """A local encoder with 64 positions (the test suite's tiny BERT) under `max_length: 256`: long texts are
    embedded at 64 tokens, as with `max_length: 64`, instead of failing on a tensor size."""
    from finetune_pipeline_tests.conftest import write_tiny_bert

    model = write_tiny_bert(tmp_path / "tiny")
    texts = ["word " * 300, "a short text", "another long text " * 40]
    assert np.array_equal(embed(texts, model, 2, 256), embed(texts, model, 2, 64))
    assert not np.array_equal(embed(texts, model, 2, 256), embed(texts, model, 2, 16))
