"""Semantic duplicates: texts whose sentence embeddings are close (paraphrases), off by default.

Embeddings: `finetune_pipeline.embeddings.embed` (mean-pooled all-MiniLM-L6-v2 by default, offline,
L2-normalised, batched, on CUDA when available).
Pairs with cosine similarity at or above the threshold are clustered by connected components, like
near duplicates; the first text of a cluster in input order is its root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from finetune_pipeline.dedup.minhash import clusters_from_pairs
from finetune_pipeline.embeddings import EmbeddingCache, embed
from finetune_pipeline.settings import DedupSettings

# Rows of the similarity matrix computed at once: block x n float32 (1024 x 100k texts = 400 MB).
_BLOCK = 1024


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


@dataclass
class SemanticDuplicates:
    root: np.ndarray  # per text, the index of its cluster's first text (itself when kept)
    similarity: np.ndarray  # per text, cosine similarity to its root (1.0 for roots)
    nearest: np.ndarray  # per text, its highest cosine similarity to any other text, for a histogram


def semantic_clusters(texts: Sequence[str], cfg: DedupSettings,
                      cache: EmbeddingCache | None = None) -> SemanticDuplicates:
    """Cluster `texts` (in keep order) by embedding cosine similarity at or above `cfg.semantic_threshold`;
    `cache`: vectors reused from the last run (None: all computed)."""
    embeddings = embed(list(texts), cfg.semantic_model, cfg.semantic_batch_size, cfg.semantic_max_length, cache=cache)
    pairs, _, nearest = similar_pairs(embeddings, cfg.semantic_threshold)
    root = clusters_from_pairs(len(texts), pairs)
    similarity = np.einsum("ij,ij->i", embeddings, embeddings[root]) if len(texts) else np.ones(0)
    similarity[root == np.arange(len(texts))] = 1.0
    return SemanticDuplicates(root=root, similarity=similarity, nearest=nearest)
