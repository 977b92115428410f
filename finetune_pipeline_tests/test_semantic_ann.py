"""Semantic dedup through the approximate nearest-neighbour index (FAISS IVF-Flat) against the exact search:
planted paraphrase pairs found, the same clusters as the exact search on the instruction example's prompts, `auto`
choosing exact on small corpora, the same answer from the workers' batch function, whatever the threads."""

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finetune_pipeline.dedup import semantic
from finetune_pipeline.dedup.minhash import clusters_from_pairs
from finetune_pipeline.settings import DedupSettings

ROOT = Path(__file__).resolve().parents[1]


def planted_vectors(n: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors in topics of about 100 (cosine about 0.5 within a topic, like sentence embeddings of one
    subject), every 10th row followed by a paraphrase at a known cosine in [0.91, 0.99]: (vectors, pairs,
    cosines)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    first = np.arange(0, n - 1, 10)
    cosine = rng.uniform(0.91, 0.99, len(first)).astype(np.float32)
    other = rng.standard_normal((len(first), dim)).astype(np.float32)
    other -= (other * x[first]).sum(1, keepdims=True) * x[first]
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    x[first + 1] = cosine[:, None] * x[first] + np.sqrt(1 - cosine[:, None] ** 2) * other
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.stack([first, first + 1], axis=1), cosine


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    """The instruction example's first prompts (reworded prompts among them), as the repository holds them."""
    texts = []
    for line in (ROOT / "examples/instruction/raw/chats.jsonl").read_text().splitlines():
        try:  # the example holds broken lines on purpose
            texts.append(next(m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"))
        except (ValueError, KeyError, TypeError, StopIteration):
            continue
    assert len(texts) >= 100
    return texts


@pytest.fixture(scope="module")
def sample_vectors(sample_texts) -> np.ndarray:
    from finetune_pipeline.embeddings import embed

    return embed(sample_texts, None, 64, 256)


def test_the_index_finds_every_planted_paraphrase_with_exact_cosines():
    vectors, planted, cosine = planted_vectors(4000)
    cfg = DedupSettings(semantic_search="ann")
    pairs, cosines, nearest = semantic.ann_pairs(vectors, 0.9, cfg)
    exact_pairs, _, exact_nearest = semantic.similar_pairs(vectors, 0.9)
    found = {tuple(p): c for p, c in zip(pairs.tolist(), cosines.tolist())}
    assert all(tuple(p) in found for p in planted.tolist())  # recall 1.0 on the planted pairs
    assert [found[tuple(p)] for p in planted.tolist()] == pytest.approx(cosine.tolist(), abs=1e-4)
    assert set(found) <= set(map(tuple, exact_pairs.tolist()))  # cosines recomputed: no false pair
    assert (pairs[:, 0] < pairs[:, 1]).all() and np.array_equal(pairs, np.unique(pairs, axis=0))
    # `nearest` comes from the returned neighbours: never above the exact one, equal where it was found
    assert (nearest <= exact_nearest + 1e-5).all()
    assert np.isclose(nearest, exact_nearest, atol=1e-5)[planted.ravel()].all()


def test_a_pair_below_the_threshold_is_not_kept():
    vectors, planted, cosine = planted_vectors(2000)
    threshold = float(np.median(cosine))
    pairs, _, _ = semantic.ann_pairs(vectors, threshold, DedupSettings(semantic_search="ann"))
    kept = set(map(tuple, pairs.tolist()))
    assert {tuple(p) for p, c in zip(planted.tolist(), cosine) if c >= threshold + 1e-4} <= kept
    assert not {tuple(p) for p, c in zip(planted.tolist(), cosine) if c < threshold - 1e-4} & kept


@pytest.mark.parametrize("threshold", [0.9, 0.75])
def test_clusters_on_the_sample_texts_equal_the_exact_search(sample_vectors, threshold):
    n = len(sample_vectors)
    # one probe of two lists, four neighbours: each query sees about half the texts, the index approximates
    cfg = DedupSettings(semantic_search="ann", semantic_ann_lists=2, semantic_ann_probes=1, semantic_ann_neighbours=4)
    assert semantic.index_lists(n, cfg) == 2
    ann, _, _ = semantic.ann_pairs(sample_vectors, threshold, cfg)
    exact, _, _ = semantic.similar_pairs(sample_vectors, threshold)
    assert len(exact) >= 2  # the prompts hold paraphrases at this threshold
    assert clusters_from_pairs(n, ann).tolist() == clusters_from_pairs(n, exact).tolist()


def test_auto_searches_exactly_below_the_cutoff(sample_texts, sample_vectors, monkeypatch):
    from finetune_pipeline.dedup import semantic as module

    monkeypatch.setattr(module, "embed", lambda texts, *args, **kwargs: sample_vectors[:len(texts)])
    n = len(sample_texts)
    auto = DedupSettings()
    assert auto.semantic_search == "auto" and auto.semantic_exact_max >= 10_000
    assert not semantic.uses_index(n, auto) and semantic.uses_index(auto.semantic_exact_max + 1, auto)
    exact = semantic.semantic_clusters(sample_texts, DedupSettings(semantic_threshold=0.8))
    indexed = semantic.semantic_clusters(sample_texts, DedupSettings(semantic_threshold=0.8, semantic_exact_max=n - 1))
    assert (exact.searched, indexed.searched) == ("exact", "ann")
    assert exact.root.tolist() == indexed.root.tolist() and (exact.root != np.arange(n)).any()
    np.testing.assert_allclose(indexed.similarity, exact.similarity, atol=1e-6)
    np.testing.assert_allclose(indexed.nearest, exact.nearest, atol=1e-5)
    forced = DedupSettings(semantic_search="exact", semantic_exact_max=0)
    assert not semantic.uses_index(10**6, forced)


def test_the_workers_batch_function_answers_like_this_process():
    """What Ray's workers run (`ann_query_batch` over (row, vector) batches, the index shipped as bytes)
    gives the pairs and `nearest` of the in-process search."""
    vectors, _, _ = planted_vectors(3000, seed=1)
    cfg = DedupSettings(semantic_search="ann")
    pairs, cosines, nearest = semantic.ann_pairs(vectors, 0.9, cfg)
    data = semantic.index_to_bytes(semantic.build_index(vectors, cfg))
    frame = pl.DataFrame({"row": np.arange(len(vectors), dtype=np.int64), "vector": vectors})
    parts = [semantic.ann_query_batch(frame.slice(start, 700).reverse(), index=data, key=hashlib.sha256(data).hexdigest(),
                                      probes=cfg.semantic_ann_probes, k=cfg.semantic_ann_neighbours, threshold=0.9)
             for start in range(0, len(vectors), 700)]
    found = pl.concat(parts).sort("row")
    assert found["nearest"].to_numpy().tolist() == nearest.tolist()
    rows = np.repeat(found["row"].to_numpy(), found["neighbours"].list.len().to_numpy())
    batch_pairs, _ = semantic._unique_pairs(np.stack([rows, semantic._flat(found["neighbours"])], axis=1),
                                            semantic._flat(found["cosines"]))
    assert batch_pairs.tolist() == pairs.tolist()


def test_the_index_is_the_same_whatever_the_threads():
    import faiss

    vectors, _, _ = planted_vectors(4000, seed=2)
    cfg = DedupSettings(semantic_search="ann")
    threads = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = semantic.index_to_bytes(semantic.build_index(vectors, cfg)), semantic.ann_pairs(vectors, 0.9, cfg)
        faiss.omp_set_num_threads(4)
        four = semantic.index_to_bytes(semantic.build_index(vectors, cfg)), semantic.ann_pairs(vectors, 0.9, cfg)
    finally:
        faiss.omp_set_num_threads(threads)
    assert one[0] == four[0]
    assert all(np.array_equal(a, b) for a, b in zip(one[1], four[1]))


def test_tiny_inputs():
    cfg = DedupSettings(semantic_search="ann")
    for n in (0, 1):
        pairs, cosines, nearest = semantic.search_pairs(np.zeros((n, 8), dtype=np.float32), 0.9, cfg)
        assert pairs.shape == (0, 2) and len(cosines) == 0 and nearest.tolist() == [-1.0] * n
    two = np.eye(2, 8, dtype=np.float32)
    two[1] = two[0]
    pairs, _, nearest = semantic.search_pairs(two, 0.9, cfg)
    assert pairs.tolist() == [[0, 1]] and nearest.tolist() == pytest.approx([1.0, 1.0])


def test_a_product_quantised_index_keeps_codes_finds_the_planted_pairs_and_no_false_pair():
    """`semantic_ann_index: pq` (auto above `semantic_ann_flat_max`): the index holds dim/8-byte codes, not the
    vectors; every candidate is judged on the exact vectors, so each pair is a pair of the exact search with its
    exact cosine; the planted paraphrases are found; the same index and pairs whatever the threads; the sharded
    path's search (vectors read through a function, as from a spill folder) gives the same answer; a
    query that would read vectors back from the codes is refused."""
    import faiss

    from finetune_pipeline.dedup import semantic_sharded
    from finetune_pipeline.settings import ExecutionSettings

    n, dim = semantic.PQ_MIN_TEXTS + 16, 128  # 128 dimensions: the same code, a quarter of the training time
    vectors, planted, cosine = planted_vectors(n, dim, seed=3)
    auto = DedupSettings(semantic_search="ann", semantic_ann_flat_max=n - 1)
    assert semantic.index_kind(n, auto) == "pq" and semantic.index_kind(n - 1, auto) == "flat"
    assert semantic.index_kind(semantic.PQ_MIN_TEXTS - 1, DedupSettings(semantic_ann_index="pq")) == "flat"
    assert semantic.index_kind(10**6, DedupSettings()) == "pq" and semantic.index_kind(10**5, DedupSettings()) == "flat"
    index = semantic.build_index(vectors, auto)
    assert semantic.compressed(index) and index.code_size == semantic.pq_bytes(dim) == 16
    assert semantic.pq_bytes(384) == 48 and semantic.pq_bytes(100) == 10 and semantic.pq_bytes(7) == 1
    assert not semantic.compressed(semantic.build_index(vectors[:3000], DedupSettings(semantic_search="ann")))
    threads = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1 if threads > 1 else 2)
        other = semantic.index_to_bytes(semantic.build_index(vectors, auto))
    finally:
        faiss.omp_set_num_threads(threads)
    assert other == semantic.index_to_bytes(index)
    pairs, cosines, nearest = semantic.ann_pairs(vectors, 0.9, auto)
    exact_pairs, _, exact_nearest = semantic.similar_pairs(vectors, 0.9)
    found = {tuple(p): c for p, c in zip(pairs.tolist(), cosines.tolist())}
    assert set(found) <= set(map(tuple, exact_pairs.tolist()))  # no false pair
    assert all(tuple(p) in found for p in planted.tolist())  # every planted paraphrase
    assert [found[tuple(p)] for p in planted.tolist()] == pytest.approx(cosine.tolist(), abs=1e-5)  # exact cosines
    assert (nearest <= exact_nearest + 1e-5).all()
    assert np.isclose(nearest, exact_nearest, atol=1e-5)[planted.ravel()].all()
    # every candidate judged on its exact cosine, whatever the codes scored it: `nearest` is the best exact
    # cosine among a row's candidates (the codes rank them otherwise), and each candidate at or above the
    # threshold is a pair
    candidates, _ = semantic.index_candidates(index, vectors, np.arange(n), auto.semantic_ann_neighbours)
    exact = np.where(candidates >= 0, np.einsum("nd,nkd->nk", vectors, vectors[np.maximum(candidates, 0)]), -1.0)
    np.testing.assert_allclose(nearest, exact.max(axis=1), atol=1e-5)
    q, j = np.nonzero(exact >= 0.9)
    assert set(map(tuple, np.sort(np.stack([q, candidates[q, j]], axis=1), axis=1).tolist())) <= set(found)
    sharded = semantic_sharded._ann(lambda rows: vectors[rows], n, dim, auto, ExecutionSettings())
    assert all(np.array_equal(a, b) for a, b in zip((pairs, cosines, nearest), sharded))
    with pytest.raises(ValueError, match="exact vectors"):
        semantic.query_rows(index, vectors[:4], np.arange(4), 8, 0.9)
