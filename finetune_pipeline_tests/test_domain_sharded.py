"""The domain filter over a sharded dataset (domain_sharded.py, inside the streaming path's dedup) gives the
in-memory answer (`dedup.deduplicate` on the whole frame) row for row and figure for figure, on real text with
the real model: the Debian package descriptions of test_dedup_sharded.py (the domain: software package
descriptions) with the paragraphs of three licence texts of /usr/share/common-licenses dropped among them as
documents (off-domain: MiniLM with the corpus calibration finds all 186 of their chunks and no description here), in
97-row shards. MiniLM embeds each text once for the module (about 20 s); both paths then take those vectors
(a lookup in place of the encoder), so any difference between them is the code's."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finetune_pipeline import embeddings, progress, shards
from finetune_pipeline import streaming as st
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.dedup.sharded import applies
from finetune_pipeline.domain import DomainFilterRefused
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.settings import Settings
from finetune_pipeline_tests.test_dedup_sharded import debian_corpus

ROWS = 97
LICENSES = Path("/usr/share/common-licenses")
DOMAIN = {"description": "Descriptions of software packages: libraries, tools, documentation, development files "
                         "and programs of a Linux distribution.",
          "examples_dir": None}


@pytest.fixture(scope="module")
def minilm(corpus):
    """An encoder that looks the corpus's MiniLM vectors up (each text embedded once, here) and embeds anything
    else (the description) with MiniLM; records how many texts it was asked for per call."""
    settings = Settings.model_validate({"domain": DOMAIN}).domain
    real = embeddings._encode
    texts = corpus["text"].unique(maintain_order=True).to_list()
    known = dict(zip(texts, embeddings.embed(texts, settings.model, settings.batch_size, settings.max_length)))

    def encode(batch, *args):
        encode.calls.append(len(batch))
        progress.report("texts embedded", len(batch), len(batch))  # as MiniLM's loop reports its last batch
        missing = [t for t in batch if t not in known]
        if missing:
            known.update(zip(missing, real(missing, *args)))
        return np.stack([known[t] for t in batch]) if batch else np.zeros((0, 384), dtype=np.float32)

    encode.calls = []
    return encode


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return packages_and_licences()


def packages_and_licences() -> pl.DataFrame:
    """The module's corpus (its docstring)."""
    packages = debian_corpus().with_columns(pl.lit("jsonl").alias("source_type"),
                                            pl.lit([], dtype=pl.List(pl.String)).alias("quality_flags"))
    rows = []
    for path in sorted(p for p in LICENSES.iterdir() if p.is_file() and p.name in {"GPL-3", "Apache-2.0", "MPL-2.0"}):
        paragraphs = [" ".join(p.split()) for p in path.read_text(encoding="utf-8").split("\n\n")]
        rows += [{"record_id": f"{path.name}-{i:03d}", "text": text, "source_uri": f"raw/{path.name}.txt",
                  "locator": f"chunk {i}", "ingested_at": None, "label": None, "source_type": "txt",
                  "quality_flags": []} for i, text in enumerate(paragraphs) if len(text.split()) >= 8]
    licences = pl.DataFrame(rows, schema=packages.schema)
    mixed = pl.concat([packages, licences])  # the licences' chunks spread over the shards, in a fixed order
    return mixed.sample(fraction=1.0, shuffle=True, seed=5)


def _run(corpus: pl.DataFrame, settings: Settings, folder: Path, cache: EmbeddingCache | None = None):
    shards.write_dataset(corpus, folder / "in", shard_rows=ROWS)
    kept = shards.DatasetWriter(folder / "kept", shard_rows=ROWS)
    rejected = shards.DatasetWriter(folder / "rejects", shard_rows=ROWS)
    stats = st.deduplicate_dataset(shards.open_dataset(folder / "in"), settings, kept, rejected, embedding_cache=cache)
    kept.commit(), rejected.commit()
    return (shards.open_dataset(folder / "kept").collect(), shards.open_dataset(folder / "rejects").collect(), stats)


CASES = {
    "corpus calibration, rejected": {"max_reject_share": 0.2},
    "absolute threshold": {"calibration": "absolute", "threshold": 0.2, "max_reject_share": 0.5},
    "flagged past the guard": {"max_reject_share": 0.05, "on_excess": "flag"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_sharded_domain_filter_gives_the_in_memory_answer(corpus, minilm, tmp_path, monkeypatch, case):
    monkeypatch.setattr(embeddings, "_encode", minilm)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spill"))
    (tmp_path / "spill").mkdir()
    settings = Settings.model_validate({"execution": {"shard_rows": ROWS},
                                        "domain": {**DOMAIN, **CASES[case]}})
    assert applies(settings)
    expected = deduplicate(corpus, settings)
    kept, rejected, stats = _run(corpus, settings, tmp_path)

    domain = expected.stats.domain
    off = expected.rejected.filter(pl.col("reason") == "off_domain")
    if case == "flagged past the guard":
        assert domain.policy == "flag" and "flagged instead of rejecting" in domain.guard and off.height == 0
        flagged = expected.kept.filter(pl.col("quality_flags").list.contains("off_domain"))
        assert flagged.height == domain.off_domain > 20
    else:
        assert domain.off_domain == off.height > 20
        assert off["detail"].str.contains("relevance").all()
    if case == "corpus calibration, rejected":  # the licence chunks, hardly a package description
        # (on this machine: all 186 chunks and no description; the descriptions are the installed packages')
        licences = set(corpus.filter(pl.col("source_type") == "txt")["record_id"])
        assert domain.calibration == "corpus" and domain.off_domain_sources == 3
        assert len(licences & set(off["record_id"])) >= 0.9 * len(licences)
        assert len(set(off["record_id"]) - licences) <= 0.01 * (corpus.height - len(licences))
    assert kept.equals(expected.kept.select(kept.columns))
    assert kept.columns == corpus.columns + ["group_id"]
    assert rejected.equals(expected.rejected)
    assert stats.to_dict() == expected.stats.to_dict()
    assert not list((tmp_path / "spill").iterdir())  # the vectors and signatures are removed


def test_a_refusal_is_the_same_and_nothing_is_written(corpus, minilm, tmp_path, monkeypatch):
    """About 11 % off-domain (the licences) is more than domain.max_reject_share 0.05."""
    monkeypatch.setattr(embeddings, "_encode", minilm)
    settings = Settings.model_validate({"execution": {"shard_rows": ROWS},
                                        "domain": {**DOMAIN, "max_reject_share": 0.05}})
    with pytest.raises(DomainFilterRefused) as in_memory:
        deduplicate(corpus, settings)
    with pytest.raises(DomainFilterRefused) as sharded:
        _run(corpus, settings, tmp_path)
    assert str(sharded.value) == str(in_memory.value)
    assert "raw/GPL-3.txt" in str(sharded.value) and "What to do" in str(sharded.value)
    assert not (tmp_path / "kept" / "manifest.json").exists()


def test_the_cache_is_read_by_key_and_written_part_by_part(corpus, minilm, tmp_path, monkeypatch):
    """The first run embeds each distinct text once (a text met in two shards is copied) and stores exactly the
    vectors the in-memory path stores; the second run embeds nothing and answers the same."""
    calls = minilm.calls
    monkeypatch.setattr(embeddings, "_encode", minilm)
    settings = Settings.model_validate({"execution": {"shard_rows": ROWS}, "domain": {**DOMAIN, "max_reject_share": 0.2}})
    expected_cache = EmbeddingCache(tmp_path / "memory", "deduplicated_corpus")
    expected = deduplicate(corpus, settings, embedding_cache=expected_cache)
    expected_cache.save()

    first = EmbeddingCache(tmp_path / "cache", "deduplicated_corpus")
    (tmp_path / "cache" / ".deduplicated_corpus-parts-killed").mkdir(parents=True)  # a killed run's parts
    calls.clear()
    reports = []
    with progress.reporting(lambda *report: reports.append(report)):
        kept, rejected, stats = _run(corpus, settings, tmp_path / "one", first)
    first.save()
    distinct = corpus["text"].n_unique()
    assert sum(calls) == distinct + 1  # the description, then each distinct text once
    # one count over the shards (not one per shard): rising to every distinct text, out of that many
    counted = [done for what, done, total in reports if total == distinct]
    assert len(counted) >= 2 * 16 and counted == sorted(counted) and counted[-1] == distinct
    assert all(total in (1, distinct) for _, _, total in reports)
    assert first.computed == expected_cache.computed and first.reused == 0
    stored = pl.read_parquet(first.file).unique("key").sort("key")
    assert stored.equals(pl.read_parquet(expected_cache.file).sort("key"))
    assert not [p for p in first.file.parent.iterdir() if p.name.startswith(".")]  # no parts left behind, old or new

    second = EmbeddingCache(tmp_path / "cache", "deduplicated_corpus")
    calls.clear()
    again = _run(corpus, settings, tmp_path / "two", second)
    second.save()
    assert sum(calls) == 0 and second.computed == 0 and second.reused == distinct + 1
    assert again[0].equals(kept) and again[1].equals(rejected) and again[2].to_dict() == stats.to_dict()
    assert again[0].equals(expected.kept.select(kept.columns))
    assert pl.read_parquet(second.file).unique("key").sort("key").equals(stored)


@pytest.mark.parametrize("search", ["exact", "ann"])
def test_semantic_duplicates_on_the_sharded_path_are_the_in_memory_ones(corpus, minilm, tmp_path, monkeypatch,
                                                                        search):
    """Semantic dedup after the domain filter, both on the sharded path (`dedup/semantic_sharded.py`): the exact
    search and the FAISS index built from the spill folder give the in-memory pass's duplicates, and the vectors the
    domain filter made (the same model) are taken from this run's cache parts, not embedded again."""
    calls = minilm.calls
    monkeypatch.setattr(embeddings, "_encode", minilm)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spill"))
    (tmp_path / "spill").mkdir()
    settings = Settings.model_validate({"execution": {"shard_rows": ROWS}, "domain": {**DOMAIN, "max_reject_share": 0.2},
                                        "dedup": {"semantic": True, "semantic_search": search}})
    assert applies(settings)
    expected = deduplicate(corpus, settings, embedding_cache=EmbeddingCache(tmp_path / "memory", "dedup"))
    cache = EmbeddingCache(tmp_path / "cache", "dedup")
    calls.clear()
    kept, rejected, stats = _run(corpus, settings, tmp_path, cache)
    cache.save()

    assert expected.stats.semantic_duplicates >= 10
    details = expected.rejected.filter(pl.col("reason") == "semantic_duplicate")["detail"]
    assert details.str.contains("cosine").all()
    assert kept.equals(expected.kept.select(kept.columns))
    assert rejected.equals(expected.rejected)
    assert stats.to_dict() == expected.stats.to_dict()
    assert sum(calls) == corpus["text"].n_unique() + 1  # each text embedded once for both passes
    stored = pl.read_parquet(cache.file)
    assert stored["key"].is_unique().all() and stored.height == corpus["text"].n_unique() + 1
    assert not list((tmp_path / "spill").iterdir())
