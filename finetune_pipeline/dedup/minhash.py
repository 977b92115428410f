"""Near duplicates with MinHash + LSH, clustered by connected components.

Written with numpy/polars for speed (no per-document Python loop); `test_dedup.py` checks it against
the `datasketch` library, and `scripts/bench_dedup.py` measures both:

1. Shingles: word n-grams (default) or character n-grams of the case-folded, whitespace-collapsed text.
   Tokens are hashed by polars, n consecutive token hashes are combined into one 32-bit shingle hash.
   A text shorter than n tokens is one shingle.
2. Signatures: datasketch's "affine32" scheme (its default since 2.0): each shingle hash is pre-mixed
   with the MurmurHash3 finalizer, then permutation k maps it to `a_k * h + b_k mod 2^32` (a_k odd,
   drawn as datasketch draws them from `seed`); the signature is the minimum per permutation. Given the
   same shingle hashes, the signatures equal datasketch's bit for bit. Computed in chunks of documents
   into one `uint32` matrix (n x num_perm: 512 MB at 1M documents and 128 permutations).
3. LSH: `bands` bands of `num_perm / bands` rows; each band of a signature is hashed to one uint64 key;
   documents with equal keys in any band are candidates. Keys are sorted per band, and each document is
   paired with the next `window` documents of its bucket (all pairs in buckets up to window + 1).
4. Verification: a candidate pair is kept when its estimated Jaccard similarity (share of equal
   signature values) is at least `threshold`.
5. Clusters: connected components of the kept pairs (scipy), so A~B and B~C put A, B, C in one
   cluster even when A and C are further apart; the cluster's first document in input order is its root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Shingle = Literal["word", "char"]

_U32 = np.uint32
_U64 = np.uint64
# Multiplier combining n token hashes into one shingle hash (any odd 64-bit constant will do).
_COMBINE = _U64(0x9E3779B97F4A7C15)
_TOKEN_SEED = 42
# What Python's str.split() splits on, besides the space (all Unicode whitespace lies below U+3001).
_OTHER_WHITESPACE = {c: " " for c in map(chr, range(0x3001)) if c.isspace() and c != " "}
# Documents per chunk: bounds the memory of token and shingle arrays (about 200 shingles of 4 bytes each
# per 1 kB document for word n-grams) while keeping numpy calls large.
CHUNK_DOCS = 8192
# Documents per permutation step: (shingles x num_perm) uint32 temporaries stay in the CPU cache.
_PERMUTE_DOCS = 32
# Each document is paired with at most this many following members of an LSH bucket.
LSH_WINDOW = 16
HISTOGRAM_BINS = np.round(np.linspace(0.0, 1.0, 11), 1)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (as datasketch applies it before the permutations)."""
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) parameters of datasketch's affine32 permutations for `seed`."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=_U32) * _U32(2) + _U32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=_U32)
    return a, b


def _token_hashes(texts: pl.Series, shingle: Shingle) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (uint64) of every text's tokens, concatenated, and per text its token count.

    Words are what `text.lower().split()` gives; characters are taken after collapsing whitespace runs."""
    lowered = texts.fill_null("").str.to_lowercase()
    if shingle == "word":  # literal replacements and splits: several times faster than a regex
        tokens = lowered.str.replace_many(_OTHER_WHITESPACE).str.split(" ")
    else:
        tokens = lowered.str.replace_all(r"\s+", " ").str.strip_chars().str.split("")
    flat = (pl.DataFrame({"token": tokens}).with_row_index("text").explode("token", empty_as_null=False)
            .filter(pl.col("token").is_not_null() & (pl.col("token") != "")))
    counts = np.bincount(flat["text"].to_numpy(), minlength=len(texts)).astype(np.int64)
    return flat["token"].hash(seed=_TOKEN_SEED).to_numpy(), counts


def shingle_hashes(texts: pl.Series | Sequence[str], ngram: int,
                   shingle: Shingle = "word") -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every document's shingles, concatenated, and per document its shingle count.

    Duplicate shingles within a document are kept (harmless for a minimum)."""
    texts = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    token_hash, n_tokens = _token_hashes(texts, shingle)
    m = len(token_hash)
    # Rolling combination over the concatenated tokens; starts whose n-gram crosses a text's end are dropped.
    combined = np.zeros(m, dtype=_U64)
    for k in range(ngram):
        combined[:m - k] = combined[:m - k] * _COMBINE + token_hash[k:]
    text_start = np.cumsum(n_tokens) - n_tokens
    position = np.arange(m) - np.repeat(text_start, n_tokens)
    keep = position <= np.repeat(n_tokens - ngram, n_tokens)
    short = np.flatnonzero((n_tokens > 0) & (n_tokens < ngram))
    if short.size:  # a text shorter than ngram tokens: one shingle of all its tokens
        acc = np.zeros(short.size, dtype=_U64)
        for k in range(ngram - 1):
            inside = k < n_tokens[short]
            acc = np.where(inside, acc * _COMBINE + token_hash[np.where(inside, text_start[short] + k, 0)], acc)
        combined[text_start[short]] = acc
        keep[text_start[short]] = True
    n_shingles = np.where(n_tokens > 0, np.maximum(n_tokens - ngram + 1, 1), 0)
    return (_fmix64(combined[keep]) >> _U64(32)).astype(_U32), n_shingles


def _signature_block(hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signatures (len(counts) x num_perm) of documents whose shingle hashes are concatenated in `hashes`."""
    out = np.full((len(counts), len(a)), np.iinfo(_U32).max, dtype=_U32)
    mixed = _fmix32(hashes)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for s in range(0, len(counts), _PERMUTE_DOCS):
        e = min(len(counts), s + _PERMUTE_DOCS)
        lo, hi = starts[s], starts[e]
        if hi == lo:
            continue
        # (num_perm x shingles): each row is contiguous, so the per-document minimum is a fast reduceat.
        permuted = np.multiply.outer(a, mixed[lo:hi])
        permuted += b[:, None]
        present = counts[s:e] > 0  # reduceat needs non-empty segments
        out[s:e][present] = np.minimum.reduceat(permuted, starts[s:e][present] - lo, axis=1).T
    return out


def minhash_signatures(texts: pl.Series | Sequence[str], ngram: int, num_perm: int, shingle: Shingle = "word",
                       seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Signature matrix (n x num_perm, uint32) and per text its shingle count (0: empty text)."""
    texts = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    a, b = permutations(num_perm, seed)
    signatures = np.empty((len(texts), num_perm), dtype=_U32)
    counts = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), CHUNK_DOCS):
        chunk = texts.slice(start, CHUNK_DOCS)
        hashes, n_shingles = shingle_hashes(chunk, ngram, shingle)
        signatures[start:start + len(chunk)] = _signature_block(hashes, n_shingles, a, b)
        counts[start:start + len(chunk)] = n_shingles
    return signatures, counts


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """One uint64 key per band and document (bands x n): equal band rows give equal keys."""
    n, num_perm = signatures.shape
    rows = num_perm // bands
    keys = np.empty((bands, n), dtype=_U64)
    for start in range(0, n, CHUNK_DOCS):
        block = signatures[start:start + CHUNK_DOCS].astype(_U64)
        for band in range(bands):
            key = np.zeros(len(block), dtype=_U64)
            for r in range(band * rows, (band + 1) * rows):
                key = key * _COMBINE + block[:, r]
            keys[band, start:start + len(block)] = _fmix64(key ^ _U64(band))
    return keys


def candidate_pairs(keys: np.ndarray, eligible: np.ndarray | None = None, window: int = LSH_WINDOW) -> np.ndarray:
    """Unique (i, j) pairs, i < j, that share a bucket in at least one band (k x 2, int64)."""
    n = keys.shape[1]
    index = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    found = []
    for band in range(keys.shape[0]):
        band_key = keys[band, index]
        order = np.argsort(band_key, kind="stable")  # stable: ascending document index inside a bucket
        sorted_keys, members = band_key[order], index[order]
        for step in range(1, window + 1):
            same = np.flatnonzero(sorted_keys[:-step] == sorted_keys[step:])
            if not same.size:
                break
            found.append((members[same].astype(_U64) << _U64(32)) | members[same + step].astype(_U64))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    packed = pl.Series(np.concatenate(found)).unique().sort().to_numpy()  # far faster than np.unique here
    return np.stack([(packed >> _U64(32)).astype(np.int64), (packed & _U64(0xFFFFFFFF)).astype(np.int64)], axis=1)


def estimated_jaccard(signatures: np.ndarray, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Share of equal signature values for each pair of rows."""
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        i, j = pairs[s:s + chunk, 0], pairs[s:s + chunk, 1]
        out[s:s + chunk] = (signatures[i] == signatures[j]).mean(axis=1)
    return out


def similarity_histogram(similarity: np.ndarray) -> dict[str, int]:
    """Counts per 0.1-wide similarity bin, labelled by the lower edge ("0.7": [0.7, 0.8); "0.9": [0.9, 1.0])."""
    counts, _ = np.histogram(similarity, bins=HISTOGRAM_BINS)  # the last bin includes 1.0
    return {f"{edge:.1f}": int(c) for edge, c in zip(HISTOGRAM_BINS[:-1], counts)}


def clusters_from_pairs(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each item, the smallest index of its connected component (its root)."""
    if not len(pairs):
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]


@dataclass
class NearDuplicates:
    root: np.ndarray  # per document, the index of its cluster's first document (itself when kept)
    similarity: np.ndarray  # per document, estimated Jaccard to its root (1.0 for roots)
    candidate_similarity: np.ndarray  # estimated Jaccard of every LSH candidate pair, for a histogram
    candidate_pairs: int
    verified_pairs: int


def near_duplicate_clusters(texts: pl.Series | Sequence[str], ngram: int = 3, num_perm: int = 128,
                            bands: int = 32, threshold: float = 0.7, shingle: Shingle = "word",
                            seed: int = 1) -> NearDuplicates:
    """Cluster `texts` (in keep order: the first of each cluster is kept) by MinHash + LSH."""
    signatures, counts = minhash_signatures(texts, ngram, num_perm, shingle, seed)
    n = len(counts)
    pairs = candidate_pairs(band_keys(signatures, bands), eligible=counts > 0)
    similarity = estimated_jaccard(signatures, pairs)
    verified = pairs[similarity >= threshold]
    root = clusters_from_pairs(n, verified)
    to_root = np.ones(n)
    moved = np.flatnonzero(root != np.arange(n))
    to_root[moved] = estimated_jaccard(signatures, np.stack([moved, root[moved]], axis=1))
    return NearDuplicates(root=root, similarity=to_root, candidate_similarity=similarity,
                          candidate_pairs=len(pairs), verified_pairs=len(verified))
