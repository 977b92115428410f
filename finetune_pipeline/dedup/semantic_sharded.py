"""Semantic duplicates (semantic.py) of a sharded dataset's records, without holding their texts: the streaming
path's pass (`sharded.deduplicate_sharded`), with the same answer as `semantic.semantic_clusters` on the texts in
memory when the vectors are the same (`test_domain_sharded.py` compares them).

1. Every document's vector (`sharded_vectors.embed_rows`: the texts read a shard at a time, the embedding cache
   read by key, the vectors in a spill folder; Ray tasks on the workers on Ray).
2. The search, as `semantic.search_pairs`:
   - exact (up to `dedup.semantic_exact_max` documents with `auto`): the documents' vectors read into memory
     (1.5 KB each: 30 MB at 20,000) and `semantic.similar_pairs`, the blocked matmul;
   - ann: the FAISS index built from the spill folder 65,536 vectors at a time (`semantic.build_index_from`; a
     flat index holds the vectors, 1.5 KB per document, a pq one 48 bytes of codes: `semantic.index_kind`), then
     queried a batch of documents at a time: here, or on Ray by tasks on the workers, each of which loads the
     index once (sent once through Ray's object store); a flat index's tasks read their queries' vectors back
     from the index itself and judge the candidates, a pq index's tasks are sent their queries' vectors (each
     task's as it is sent) and return the candidates, which the step judges on the exact vectors of the spill
     folder (a pq index's scores and vectors are approximations).
3. Clusters by connected components, each document's cosine to its cluster's first, read pair by pair from the
   spill folder.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from finetune_pipeline.dedup import semantic as sem
from finetune_pipeline.dedup.minhash import clusters_from_pairs
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.execution import connect, per_shard
from finetune_pipeline.settings import DedupSettings, ExecutionSettings
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.sharded_vectors import TEXT, Encoder, embed_rows, encoder_process
from finetune_pipeline.tasks import Task

# Documents a Ray query task looks up.
QUERY_TASK_DOCS = 50_000


def _query_documents(index: bytes, key: str, probes: int, k: int, threshold: float,
                     docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`semantic.query_rows` for documents `docs` (a Ray task on Ray): the index loaded once per worker process,
    the queries' vectors read back from it."""
    loaded = sem.loaded_index(index, key, probes)
    pairs, cosines, nearest = [], [], np.empty(len(docs), dtype=np.float32)
    for start in range(0, len(docs), sem._QUERY_BATCH):
        rows = docs[start:start + sem._QUERY_BATCH]
        p, c, nearest[start:start + len(rows)] = sem.query_rows(loaded, loaded.reconstruct_batch(rows), rows, k,
                                                                threshold)
        pairs.append(p)
        cosines.append(c)
    return np.concatenate(pairs), np.concatenate(cosines), nearest


def _candidates_of_documents(index: bytes, key: str, probes: int, k: int, docs: np.ndarray,
                             queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`semantic.index_candidates` for documents `docs` with their exact vectors `queries` (a Ray task, for a pq
    index, which cannot give the vectors back): the index loaded once per worker process; the step judges the
    candidates on the exact vectors."""
    loaded = sem.loaded_index(index, key, probes)
    found, scores = zip(*(sem.index_candidates(loaded, queries[start:start + sem._QUERY_BATCH],
                                               docs[start:start + sem._QUERY_BATCH], k)
                          for start in range(0, len(docs), sem._QUERY_BATCH)))
    return np.concatenate(found), np.concatenate(scores)


def _ann(take, n: int, dim: int, cfg: DedupSettings, execution: ExecutionSettings):
    """`semantic.ann_pairs` over vectors read through `take`."""
    threshold, k = cfg.semantic_threshold, cfg.semantic_ann_neighbours
    index = sem.build_index_from(take, n, dim, cfg)
    pq = sem.compressed(index)
    parts, scores, nearest = [], [], np.full(n, -1.0, dtype=np.float32)
    if execution.backend == "ray":
        import ray

        connect(execution)
        data = sem.index_to_bytes(index)
        del index
        key = hashlib.sha256(data).hexdigest()
        shared = ray.put(data)  # once into the object store; each task gets it from there
        del data
        chunks = [np.arange(start, min(n, start + QUERY_TASK_DOCS)) for start in range(0, n, QUERY_TASK_DOCS)]
        if pq:  # each task sent its queries' vectors as it is sent (a generator); its candidates judged here
            calls = ((shared, key, cfg.semantic_ann_probes, k, docs, take(docs)) for docs in chunks)
            for number, (found, index_scores) in per_shard(_candidates_of_documents, calls, execution):
                docs = chunks[number]
                for start in range(0, len(docs), sem._QUERY_BATCH):
                    rows, part = docs[start:start + sem._QUERY_BATCH], slice(start, start + sem._QUERY_BATCH)
                    p, c, nearest[rows] = sem.judge_candidates(found[part], index_scores[part], take(rows), rows,
                                                               threshold, take, every=True)
                    parts.append(p)
                    scores.append(c)
        else:
            calls = [(shared, key, cfg.semantic_ann_probes, k, threshold, docs) for docs in chunks]
            for number, (p, c, near) in per_shard(_query_documents, calls, execution):
                parts.append(p)
                scores.append(c)
                nearest[chunks[number]] = near
    else:
        for start in range(0, n, sem._QUERY_BATCH):
            rows = np.arange(start, min(n, start + sem._QUERY_BATCH))
            p, c, nearest[rows] = sem.query_rows(index, take(rows), rows, k, threshold, take if pq else None)
            parts.append(p)
            scores.append(c)
    pairs, cosines = sem._unique_pairs(np.concatenate(parts), np.concatenate(scores))
    return pairs, cosines, nearest


def semantic_sharded(dataset: ShardedDataset, docs: np.ndarray, cfg: DedupSettings, task: Task,
                     execution: ExecutionSettings | None = None, cache: EmbeddingCache | None = None,
                     spill_dir: str | Path | None = None) -> sem.SemanticDuplicates:
    """`semantic.semantic_clusters` of the texts of `dataset`'s rows `docs` (in keep order: the first of a
    cluster is kept), the texts read shard by shard and the vectors spilled to disk (module docstring)."""
    execution = execution or ExecutionSettings()
    docs = np.asarray(docs, dtype=np.int64)
    n = len(docs)
    folder = Path(tempfile.mkdtemp(prefix="finetune-semantic-", dir=spill_dir))
    try:
        encoder = Encoder.for_semantic(cfg)
        with encoder_process(encoder, execution, n) as apart:  # locally, on a large corpus: the model never loads here
            vectors = embed_rows(dataset, docs, task, TEXT, encoder, execution, cache, folder, apart=apart)

        def take(rows: np.ndarray) -> np.ndarray:
            return vectors.take(docs[rows])

        if sem.uses_index(n, cfg):
            pairs, _, nearest = _ann(take, n, vectors.dim, cfg, execution)
        else:
            pairs, _, nearest = sem.similar_pairs(take(np.arange(n)), cfg.semantic_threshold)
        root = clusters_from_pairs(n, pairs)
        similarity = np.ones(n)
        moved = np.flatnonzero(root != np.arange(n))
        for start in range(0, len(moved), 65_536):
            part = moved[start:start + 65_536]
            similarity[part] = np.einsum("ij,ij->i", take(part), take(root[part]))
        return sem.SemanticDuplicates(root=root, similarity=similarity, nearest=nearest,
                                      searched="ann" if sem.uses_index(n, cfg) else "exact")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
