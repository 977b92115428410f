"""Semantic duplicates: texts whose sentence embeddings are close (paraphrases), off by default.

Embeddings: `finetune_pipeline.embeddings.embed` (mean-pooled all-MiniLM-L6-v2 by default, offline,
L2-normalised, batched, on CUDA when available).
Pairs with cosine similarity at or above the threshold are clustered by connected components, like
near duplicates; the first text of a cluster in input order is its root.

Two searches find the pairs (`dedup.semantic_search`; `auto`: exact up to `semantic_exact_max` texts):
- exact (`similar_pairs`): every pair, a blocked matmul, O(n^2) (about 3 s at 20,000 texts on 2 cores,
  hours at 1M).
- ann (`ann_pairs`): an approximate nearest-neighbour index, FAISS `IndexIVFFlat` over inner products
  (= cosine on these unit vectors). Spherical k-means with a fixed seed, trained on a seeded sample,
  cuts the space into `semantic_ann_lists` cells; each text is looked up in its `semantic_ann_probes`
  nearest cells for its `semantic_ann_neighbours` nearest texts. The candidates' cosines are then
  computed exactly (numpy), so the pairs kept are exactly those of the exact search that the index
  returned (no false pair; a missed pair is the only error, measured by scripts/bench_semantic_dedup.py)
  and `nearest` is the highest cosine among a text's returned neighbours. Deterministic: the training
  sample and k-means are seeded, the lists are filled in input order and each query is answered on its
  own, so the result does not depend on the number of threads.
  Above `semantic_ann_flat_max` texts (`semantic_ann_index: auto`) the index keeps product-quantised codes
  (FAISS `IndexIVFPQ`, the same cells, dim / 8 bytes a vector instead of 4 x dim) and every returned candidate's
  cosine is computed exactly from the vectors (the index's own scores are approximate): still no false pair,
  recall measured in docs/benchmarks.md; 1M vectors of 384 take 46 MB of codes instead of 1.5 GB.
  The index is built once (`build_index`) and queried in batches (`query_rows`); the batch function
  `ann_query_batch` does the same over a frame of (row, vector) with the index as bytes (FAISS's own
  format, `index_to_bytes`, never pickle), so on Ray the queries run on the workers
  (`execution.map_batches`), each worker loading the index once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import polars as pl

from finetune_pipeline.dedup.minhash import clusters_from_pairs
from finetune_pipeline.embeddings import EmbeddingCache, embed
from finetune_pipeline.settings import DedupSettings, ExecutionSettings

if TYPE_CHECKING:
    import faiss

# Rows of the similarity matrix computed at once: block x n float32 (1024 x 100k texts = 400 MB).
_BLOCK = 1024
# Queries answered at once by the index (their k neighbours and vectors held together).
_QUERY_BATCH = 1024
_TRAIN_PER_LIST = 64
_KMEANS_SEED = 1234
_KMEANS_ITERATIONS = 20
# The index's own inner products may differ from numpy's in the last bits: candidates this close below the
# threshold are checked exactly too.
_SCORE_MARGIN = 1e-3
# A pq index trains 256 centroids per sub-vector on at least 39 vectors each (FAISS's minimum): below, flat.
PQ_MIN_TEXTS = 39 * 256
# Per worker process: the last index loaded from bytes, by its digest (loaded once, queried per batch).
_LOADED: dict[str, "faiss.Index"] = {}


def similar_pairs(embeddings: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) with cosine >= threshold, their cosines, and per row its highest cosine to any other row."""
    n = len(embeddings)
    nearest = np.full(n, -1.0, dtype=np.float32)
    pairs, cosines = [], []
    for start in range(0, n, _BLOCK):
        sims = embeddings[start:start + _BLOCK] @ embeddings.T
        rows = np.arange(start, min(n, start + _BLOCK))
        sims[rows - start, rows] = -1.0  # not itself
        nearest[rows] = sims.max(axis=1)
        i, j = np.nonzero(sims >= threshold)
        i += start
        upper = i < j
        pairs.append(np.stack([i[upper], j[upper]], axis=1))
        cosines.append(sims[i[upper] - start, j[upper]])
    if not pairs:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float32), nearest
    return np.concatenate(pairs).astype(np.int64), np.concatenate(cosines), nearest


def uses_index(n: int, cfg: DedupSettings) -> bool:
    """Whether `n` texts are searched with the index (`semantic_search`, `auto`: above `semantic_exact_max`)."""
    if cfg.semantic_search == "auto":
        return n > cfg.semantic_exact_max
    return cfg.semantic_search == "ann" and n > 1


def search_pairs(embeddings: np.ndarray, threshold: float, cfg: DedupSettings,
                 execution: ExecutionSettings | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`similar_pairs` or `ann_pairs`, as `cfg.semantic_search` says; same results' shape either way."""
    if uses_index(len(embeddings), cfg):
        return ann_pairs(embeddings, threshold, cfg, execution)
    return similar_pairs(embeddings, threshold)


def index_lists(n: int, cfg: DedupSettings) -> int:
    """Inverted lists for `n` vectors: `semantic_ann_lists`, or 2 x sqrt(n); never fewer than 39 training
    vectors per list (FAISS's minimum for k-means), never fewer than 1 list."""
    lists = cfg.semantic_ann_lists or int(round(2 * np.sqrt(n)))
    return max(1, min(lists, n // 39))


def index_kind(n: int, cfg: DedupSettings) -> str:
    """The index for `n` texts: "flat" (IVF-Flat, the vectors whole) or "pq" (IVF-PQ, product-quantised codes),
    as `semantic_ann_index` says (auto: pq above `semantic_ann_flat_max`); flat below `PQ_MIN_TEXTS`."""
    kind = cfg.semantic_ann_index
    if kind == "auto":
        kind = "pq" if n > cfg.semantic_ann_flat_max else "flat"
    return "pq" if kind == "pq" and n >= PQ_MIN_TEXTS else "flat"


def pq_bytes(dim: int) -> int:
    """Bytes of a vector's code in the pq index: one per sub-vector of 8 dimensions (48 at 384), the largest
    divisor of `dim` at most dim / 8."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def build_index(embeddings: np.ndarray, cfg: DedupSettings) -> faiss.IndexIVF:
    """An IVF inner-product index over the unit vectors `embeddings` (rows are ids), its probes set."""
    vectors = _float32_rows(embeddings)
    return build_index_from(lambda rows: vectors[rows], *vectors.shape, cfg)


def build_index_from(take, n: int, dim: int, cfg: DedupSettings) -> faiss.IndexIVF:
    """`build_index` of `n` vectors of `dim` read through `take(rows)` (rows: an array of ids), 65,536 at a time
    (from a spill folder: they are never all held beside the index). IVF-Flat or IVF-PQ (`index_kind`); the same
    cells, training sample and order either way."""
    import faiss

    lists, kind = index_lists(n, cfg), index_kind(n, cfg)
    if kind == "pq":  # codes of pq_bytes(dim) bytes, 256 centroids per sub-vector, on the residuals
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, pq_bytes(dim), 8, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.seed = _KMEANS_SEED
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter, index.cp.spherical = _KMEANS_SEED, _KMEANS_ITERATIONS, True
    index.cp.max_points_per_centroid = _TRAIN_PER_LIST  # no subsampling of our own sample by FAISS
    sample = min(n, max(_TRAIN_PER_LIST * lists, PQ_MIN_TEXTS if kind == "pq" else 0))
    rows = np.sort(np.random.default_rng(_KMEANS_SEED).choice(n, sample, replace=False)) if sample < n else np.arange(n)
    index.train(_float32_rows(take(rows)))
    for start in range(0, n, 65536):  # in input order: ids are row positions
        index.add(_float32_rows(take(np.arange(start, min(n, start + 65536)))))
    index.make_direct_map()  # so a worker holding only the index can read a neighbour's vector back
    index.nprobe = min(cfg.semantic_ann_probes, lists)
    return index


def compressed(index: faiss.Index) -> bool:
    """Whether `index` holds codes, not the vectors (pq): its scores are approximate and a vector read back from
    it is not the vector added, so every candidate is judged on the exact vectors (`query_rows`)."""
    return index.code_size < 4 * index.d


def index_to_bytes(index: faiss.Index) -> bytes:
    """The index in FAISS's own binary format (its vectors included)."""
    import faiss

    return faiss.serialize_index(index).tobytes()


def loaded_index(data: bytes, key: str, probes: int) -> faiss.Index:
    """The index `data` (`index_to_bytes`; `key`: its digest) as loaded in this process: loaded once per worker
    process, the one before it dropped."""
    loaded = _LOADED.get(key)
    if loaded is None:
        _LOADED.clear()
        loaded = _LOADED[key] = index_from_bytes(data, probes)
    return loaded


def index_from_bytes(data: bytes, probes: int) -> faiss.Index:
    import faiss

    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    index.nprobe = min(probes, index.nlist)
    return index


def query_rows(index: faiss.Index, queries: np.ndarray, rows: np.ndarray, k: int, threshold: float,
               vectors=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows `rows` (their vectors `queries`) looked up in `index`: pairs (row, neighbour) with exact cosine >=
    threshold (the row first, in query order), their cosines, and per query row the exact cosine of its best
    returned neighbour other than itself (-1.0 when none). `vectors`: all indexed vectors (in this process), or
    a function of an array of ids giving theirs (a spill folder); None: the candidates' vectors are read back
    from the index (flat only: a pq index's are approximations)."""
    found, scores = index_candidates(index, queries, rows, k)
    if vectors is None and compressed(index):
        raise ValueError("a product-quantised index holds no exact vectors: pass `vectors`")
    if vectors is None:
        vectors_of = index.reconstruct_batch
    else:
        vectors_of = vectors if callable(vectors) else (lambda ids: vectors[ids])
    return judge_candidates(found, scores, queries, rows, threshold, vectors_of, every=compressed(index))


def index_candidates(index: faiss.Index, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(found, scores): per query row its `k` nearest in `index` other than itself, by the index's own score
    (-1 and -inf where none)."""
    k = min(k + 1, index.ntotal)  # the row itself is usually among its neighbours
    scores, found = index.search(_float32_rows(queries), k)
    rows = np.asarray(rows, dtype=np.int64)
    valid = (found >= 0) & (found != rows[:, None])
    return np.where(valid, found, -1), np.where(valid, scores, -np.inf)


def judge_candidates(found: np.ndarray, scores: np.ndarray, queries: np.ndarray, rows: np.ndarray, threshold: float,
                     vectors_of, every: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`query_rows`' answer from `index_candidates`' (found, scores), the cosines computed exactly from the
    vectors `vectors_of(ids)` gives: only for the candidates near the threshold by the index's score and each
    row's best (flat: its scores are exact up to rounding), or for every candidate (`every`: pq)."""
    queries = _float32_rows(queries)
    rows = np.asarray(rows, dtype=np.int64)
    valid = found >= 0
    if every:
        check = valid.copy()
    else:  # exact cosines only where they can matter
        check = scores >= threshold - _SCORE_MARGIN
        check[np.arange(len(rows)), scores.argmax(axis=1)] = True
        check &= valid
    q, j = np.nonzero(check)
    ids = found[q, j]
    neighbours = _float32_rows(vectors_of(ids)) if len(ids) else np.empty((0, queries.shape[1]), np.float32)
    cosines = np.full(found.shape, -1.0, dtype=np.float32)
    cosines[q, j] = np.einsum("cd,cd->c", neighbours, queries[q])
    nearest = cosines.max(axis=1, initial=-1.0)
    q, j = np.nonzero(cosines >= threshold)
    return np.stack([rows[q], found[q, j]], axis=1).astype(np.int64), cosines[q, j], nearest


def ann_pairs(embeddings: np.ndarray, threshold: float, cfg: DedupSettings,
              execution: ExecutionSettings | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What `similar_pairs` returns, from the index: pairs (i < j, sorted) with exact cosine >= threshold among
    each row's `semantic_ann_neighbours` nearest, their cosines, and per row its highest cosine to a returned
    neighbour. With `execution.backend: ray` the queries of a flat index run on the workers (`ann_query_batch`);
    a pq index's here (its candidates are judged on the exact vectors, which are here; the streaming path,
    semantic_sharded.py, sends each task its queries' vectors instead)."""
    vectors = _float32_rows(embeddings)
    n = len(vectors)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float32), np.full(n, -1.0, dtype=np.float32)
    index = build_index(vectors, cfg)
    k = cfg.semantic_ann_neighbours
    if execution is not None and execution.backend == "ray" and not compressed(index):
        from finetune_pipeline.execution import map_batches

        data = index_to_bytes(index)
        del index
        frame = pl.DataFrame({"row": np.arange(n, dtype=np.int64), "vector": vectors})
        found = map_batches(frame, ann_query_batch, execution, batch_size=_QUERY_BATCH, index=data,
                            key=hashlib.sha256(data).hexdigest(), probes=cfg.semantic_ann_probes, k=k,
                            threshold=threshold)
        nearest = found["nearest"].to_numpy().astype(np.float32)
        rows = np.repeat(found["row"].to_numpy(), found["neighbours"].list.len().to_numpy())
        pairs = np.stack([rows, _flat(found["neighbours"])], axis=1).astype(np.int64)
        cosines = _flat(found["cosines"]).astype(np.float32)
    else:
        parts, scores, nearest = [], [], np.full(n, -1.0, dtype=np.float32)
        for start in range(0, n, _QUERY_BATCH):
            rows = np.arange(start, min(n, start + _QUERY_BATCH))
            p, c, nearest[rows] = query_rows(index, vectors[rows], rows, k, threshold, vectors)
            parts.append(p)
            scores.append(c)
        pairs, cosines = np.concatenate(parts), np.concatenate(scores)
    return _unique_pairs(pairs, cosines) + (nearest,)


def ann_query_batch(batch: pl.DataFrame, *, index: bytes, key: str, probes: int, k: int,
                    threshold: float) -> pl.DataFrame:
    """Batch function: (row, vector) -> (row, neighbours, cosines, nearest): the row's neighbours in the index
    with exact cosine >= threshold (itself excluded), and its highest cosine to a returned neighbour. `index`:
    `index_to_bytes`, loaded once per worker process (`key`: its digest)."""
    loaded = loaded_index(index, key, probes)
    rows = batch["row"].to_numpy().astype(np.int64)
    pairs, cosines, nearest = query_rows(loaded, batch["vector"].to_numpy(), rows, k, threshold)
    position = _positions(rows, pairs[:, 0])  # of the pair's query row in this batch
    offsets = np.concatenate([[0], np.cumsum(np.bincount(position, minlength=len(rows)))])
    by_row = np.argsort(position, kind="stable")
    neighbours, scores = pairs[by_row, 1], cosines[by_row]
    return pl.DataFrame({
        "row": rows,
        "neighbours": [neighbours[offsets[i]:offsets[i + 1]] for i in range(len(rows))],
        "cosines": [scores[offsets[i]:offsets[i + 1]] for i in range(len(rows))],
        "nearest": nearest,
    }, schema={"row": pl.Int64, "neighbours": pl.List(pl.Int64), "cosines": pl.List(pl.Float32),
               "nearest": pl.Float32})


def _unique_pairs(pairs: np.ndarray, cosines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair once as (i < j), sorted like `similar_pairs`' (by i, then j)."""
    if not len(pairs):
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float32)
    pairs = np.sort(pairs, axis=1)
    unique, first = np.unique(pairs, axis=0, return_index=True)
    return unique.astype(np.int64), cosines[first]


def _float32_rows(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _flat(lists: pl.Series) -> np.ndarray:
    """The values of a list column, row after row."""
    return lists.rechunk().to_arrow().flatten().to_numpy(zero_copy_only=False)


def _positions(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    order = np.argsort(rows, kind="stable")
    return order[np.searchsorted(rows[order], values)]


@dataclass
class SemanticDuplicates:
    root: np.ndarray  # per text, the index of its cluster's first text (itself when kept)
    similarity: np.ndarray  # per text, cosine similarity to its root (1.0 for roots)
    nearest: np.ndarray  # per text, its highest cosine similarity to any other text, for a histogram
    searched: str = "exact"  # exact or ann (`dedup.semantic_search`)


def semantic_clusters(texts: Sequence[str], cfg: DedupSettings, cache: EmbeddingCache | None = None,
                      execution: ExecutionSettings | None = None) -> SemanticDuplicates:
    """Cluster `texts` (in keep order) by embedding cosine similarity at or above `cfg.semantic_threshold`;
    `cache`: vectors reused from the last run (None: all computed). `execution`: where the index queries run
    (Ray workers with backend ray; None: here)."""
    embeddings = embed(list(texts), cfg.semantic_model, cfg.semantic_batch_size, cfg.semantic_max_length, cache=cache)
    pairs, _, nearest = search_pairs(embeddings, cfg.semantic_threshold, cfg, execution)
    root = clusters_from_pairs(len(texts), pairs)
    similarity = np.einsum("ij,ij->i", embeddings, embeddings[root]) if len(texts) else np.ones(0)
    similarity[root == np.arange(len(texts))] = 1.0
    return SemanticDuplicates(root=root, similarity=similarity, nearest=nearest,
                              searched="ann" if uses_index(len(texts), cfg) else "exact")
