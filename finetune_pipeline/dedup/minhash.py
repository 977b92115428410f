"""Near duplicates with MinHash + LSH over word n-grams, clustered by connected components.

Signatures are computed with numpy (the same universal-hash scheme as datasketch: h(x) = (a*x + b)
mod (2^61 - 1), truncated to 32 bits). Candidate pairs come from LSH band buckets and are confirmed by
the estimated Jaccard similarity before they join a cluster.
"""

from __future__ import annotations

import numpy as np
import xxhash

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)


def shingles(text: str, ngram: int) -> set[bytes]:
    """Word n-grams of the case-folded text; a text shorter than n words is one shingle."""
    words = text.lower().split()
    if len(words) < ngram:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)}


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    a = rng.randint(1, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    b = rng.randint(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signatures(texts: list[str], ngram: int, num_perm: int, seed: int = 1) -> np.ndarray:
    """One row of `num_perm` uint32-range minimum hashes per text."""
    a, b = permutations(num_perm, seed)
    signatures = np.full((len(texts), num_perm), _MAX_HASH, dtype=np.uint64)
    for row, text in enumerate(texts):
        hv = np.fromiter((xxhash.xxh32_intdigest(s) for s in shingles(text, ngram)), dtype=np.uint64)
        if hv.size == 0:
            continue
        phv = ((hv[:, None] * a[None, :] + b[None, :]) % _MERSENNE) & _MAX_HASH
        signatures[row] = phv.min(axis=0)
    return signatures


def near_duplicate_clusters(texts: list[str], ngram: int, num_perm: int, bands: int,
                            threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids (index of the first member in input order) and, per text, its best similarity
    to the cluster's first member (1.0 for that member itself)."""
    n = len(texts)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n == 0:
        return parent, np.ones(0)
    sig = minhash_signatures(texts, ngram, num_perm)
    rows = num_perm // bands
    for band in range(bands):
        block = np.ascontiguousarray(sig[:, band * rows:(band + 1) * rows])
        buckets: dict[bytes, int] = {}
        for i in range(n):
            key = block[i].tobytes()
            j = buckets.setdefault(key, i)
            if j != i:
                ri, rj = find(i), find(j)
                if ri != rj and np.mean(sig[i] == sig[j]) >= threshold:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)])
    similarity = np.array([np.mean(sig[i] == sig[roots[i]]) for i in range(n)])
    return roots, similarity
