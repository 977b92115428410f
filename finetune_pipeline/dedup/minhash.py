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
   documents with equal keys in any band are candidates. The (band, key, doc) rows are grouped by bucket
   (with Ray: a hash shuffle on the band key), and each document is paired with the next `window`
   documents of its bucket (all pairs in buckets up to window + 1).
4. Verification: a candidate pair is kept when its estimated Jaccard similarity (share of equal
   signature values) is at least `threshold`.
   With word shingles, two *short* texts (at most `short_text_words` words each) are compared on their
   word sets instead
   (1-grams of the text with punctuation taken for spaces: one edited word of ten changes 3 of 8 word
   3-grams but 1 of 10 words): their pairs from the n-gram pass are dropped, a second MinHash + LSH pass
   over the short texts' word sets finds and verifies them at the same `threshold`, and a pair whose texts
   each name something the other does not (dedup/identifiers.py: `dpkg` / `dpkg-name`, `3.18` / `3.19`)
   is kept apart; the clusters are then joined link by link (`components_naming_one_thing`), so that no
   chain through a copy that lost the name joins them either. This pass runs in this process (the texts
   are here already).
5. Clusters: connected components of the kept pairs by min-label propagation with pointer jumping, so
   A~B and B~C put A, B, C in one cluster even when A and C are further apart; the cluster's first
   document in input order is its root. The pairs stay in batches (on the workers with Ray); only one
   label per document is held in one place. `test_dedup.py` checks it against scipy's connected_components.

Each step is a batch function (`signature_batch`, `band_batch`, `bucket_pairs`, `similarity_batch`, ...)
run through `finetune_pipeline.execution`: in this process, or on a Ray cluster.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np
import polars as pl

from finetune_pipeline.dedup.identifiers import Tokens, names_differ, token_table
from finetune_pipeline.execution import Frames, LocalFrames, RayFrames, frames
from finetune_pipeline.settings import DedupSettings, ExecutionSettings
from finetune_pipeline.shards import ShardedDataset

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
    """Unique (i, j) pairs, i < j, that share a bucket in at least one band (k x 2, int64); in-process
    form of what `near_duplicate_clusters` does with `bucket_pairs` per shuffled block."""
    bands, n = keys.shape
    index = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    # Each band sorted on its own (a stable sort keeps the documents of a bucket in document order): the
    # pairs of `bucket_pairs` on the (band, key, doc) rows, without sorting the rows of all bands together.
    sub = keys[:, index]
    order = np.argsort(sub, axis=1, kind="stable")
    key = np.take_along_axis(sub, order, axis=1)
    doc = index.astype(_U64)[order]
    found = []
    for step in range(1, window + 1):
        band, at = np.nonzero(key[:, :-step] == key[:, step:])
        if not band.size:
            break
        found.append((doc[band, at] << _U64(32)) | doc[band, at + step])
    packed = (pl.Series(np.concatenate(found)).unique().sort().to_numpy() if found  # sorted by (i, j)
              else np.empty(0, dtype=_U64))
    return np.stack([(packed >> _U64(32)).astype(np.int64), (packed & _U64(0xFFFFFFFF)).astype(np.int64)],
                    axis=1).reshape(-1, 2)


def estimated_jaccard(signatures: np.ndarray, pairs: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Share of equal signature values for each pair of rows (the count of equal values over num_perm, the
    same float as the mean of the comparison; counted in one reused buffer, about twice as fast)."""
    out = np.empty(len(pairs), dtype=np.float64)
    num_perm = signatures.shape[1]
    equal = np.empty((min(chunk, len(pairs)), num_perm), dtype=bool)
    for s in range(0, len(pairs), chunk):
        i, j = pairs[s:s + chunk, 0], pairs[s:s + chunk, 1]
        k = len(i)
        np.equal(np.take(signatures, i, axis=0), np.take(signatures, j, axis=0), out=equal[:k])
        out[s:s + k] = equal[:k].view(np.uint8).sum(axis=1, dtype=np.uint16)
    return out / num_perm if num_perm else out


def similarity_histogram(similarity: np.ndarray) -> dict[str, int]:
    """Counts per 0.1-wide similarity bin, labelled by the lower edge ("0.7": [0.7, 0.8); "0.9": [0.9, 1.0])."""
    counts, _ = np.histogram(similarity, bins=HISTOGRAM_BINS)  # the last bin includes 1.0
    return {f"{edge:.1f}": int(c) for edge, c in zip(HISTOGRAM_BINS[:-1], counts)}


def min_label_updates(edges: pl.DataFrame, labels: np.ndarray) -> pl.DataFrame:
    """One round of min-label propagation over a batch of edges (i, j): for every endpoint whose neighbour
    has a smaller label, (node, that smallest label). Rows are unique per node within the batch."""
    i, j = edges["i"].to_numpy(), edges["j"].to_numpy()
    li, lj = labels[i], labels[j]
    node = np.concatenate([i[lj < li], j[li < lj]])
    label = np.concatenate([lj[lj < li], li[li < lj]])
    return (pl.DataFrame({"node": node.astype(np.int64), "label": label.astype(np.int64)})
            .group_by("node").agg(pl.col("label").min()))


def clusters_from_edges(n: int, edges: Frames, max_iterations: int) -> np.ndarray:
    """For each item, the smallest index of its connected component (its root).

    Min-label propagation with pointer jumping: the edges stay where they are (on the cluster with the Ray
    backend); only the n labels live here, and each round brings back at most one update per node."""
    labels = np.arange(n, dtype=np.int64)
    for _ in range(max_iterations):
        updates = edges.map_batches(min_label_updates, labels=labels).to_polars()
        if not updates.height:
            return labels
        np.minimum.at(labels, updates["node"].to_numpy(), updates["label"].to_numpy())
        while True:  # pointer jumping: a label's own label is smaller or equal, and in the same component
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
    raise RuntimeError(f"connected components did not converge in {max_iterations} rounds; "
                       "raise execution.cc_max_iterations")


def clusters_from_pairs(n: int, pairs: np.ndarray, execution: ExecutionSettings | None = None) -> np.ndarray:
    """For each item, the smallest index of its connected component (its root)."""
    edges = pl.DataFrame({"i": pairs[:, 0], "j": pairs[:, 1]}, schema={"i": pl.Int64, "j": pl.Int64})
    execution = execution or ExecutionSettings()
    return clusters_from_edges(n, frames(edges, execution), execution.cc_max_iterations)


@dataclass
class NearDuplicates:
    root: np.ndarray  # per document, the index of its cluster's first document (itself when kept)
    similarity: np.ndarray  # per document, estimated Jaccard to its root (1.0 for roots)
    candidate_histogram: dict[str, int]  # estimated Jaccard of the LSH candidate pairs, per 0.1 bin
    candidate_pairs: int
    verified_pairs: int
    short_texts: int = 0  # texts compared on word sets (at most `short_text_words` words)
    kept_apart: int = 0  # short pairs at or above the threshold kept apart: each names something the other does not


def signature_batch(batch: pl.DataFrame, ngram: int, num_perm: int, shingle: Shingle, seed: int) -> pl.DataFrame:
    """Batch function: (doc, text) -> (doc, n_shingles, signature: an array of num_perm uint32)."""
    signatures, counts = minhash_signatures(batch["text"], ngram, num_perm, shingle, seed)
    if "in_ngram" in batch.columns:  # rows outside the n-gram pass get no band rows (`band_batch`)
        counts = np.where(batch["in_ngram"].to_numpy(), counts, 0)
    return pl.DataFrame({"doc": batch["doc"], "n_shingles": counts,
                         "signature": _signature_column(signatures)})


def band_batch(batch: pl.DataFrame, bands: int) -> pl.DataFrame:
    """Batch function: signatures -> one (band, key, doc) row per band of every document with shingles."""
    batch = batch.filter(pl.col("n_shingles") > 0)
    keys = band_keys(_signature_matrix(batch["signature"]), bands)  # bands x n
    n = batch.height
    return pl.DataFrame({"band": np.repeat(np.arange(bands, dtype=np.int32), n), "key": keys.reshape(-1),
                         "doc": np.tile(batch["doc"].to_numpy(), bands)},
                        schema={"band": pl.Int32, "key": pl.UInt64, "doc": pl.Int64})


def bucket_pairs(batch: pl.DataFrame, window: int = LSH_WINDOW) -> pl.DataFrame:
    """Batch function over whole LSH buckets (band, key): each document paired with the next `window`
    documents of its bucket in document order, as unique (i, j) with i < j."""
    ordered = batch.sort("band", "key", "doc")
    band, key, doc = (ordered[c].to_numpy() for c in ("band", "key", "doc"))
    found = []
    for step in range(1, window + 1):
        same = np.flatnonzero((key[:-step] == key[step:]) & (band[:-step] == band[step:]))
        if not same.size:
            break
        found.append((doc[same].astype(_U64) << _U64(32)) | doc[same + step].astype(_U64))
    packed = pl.Series(np.concatenate(found) if found else np.empty(0, dtype=_U64)).unique().to_numpy()
    return pl.DataFrame({"i": (packed >> _U64(32)).astype(np.int64), "j": (packed & _U64(0xFFFFFFFF)).astype(np.int64)},
                        schema={"i": pl.Int64, "j": pl.Int64})


def unique_pairs(batch: pl.DataFrame) -> pl.DataFrame:
    """Batch function over whole (i, j) groups: one row per pair (a pair can share buckets in many bands)."""
    return batch.unique(["i", "j"])


def similarity_batch(batch: pl.DataFrame) -> pl.DataFrame:
    """Batch function: (i, j, signature_i, signature_j) -> (i, j, similarity): the estimated Jaccard."""
    left, right = _signature_matrix(batch["signature_i"]), _signature_matrix(batch["signature_j"])
    similarity = (left == right).mean(axis=1) if batch.height else np.empty(0)
    return pl.DataFrame({"i": batch["i"], "j": batch["j"], "similarity": similarity},
                        schema={"i": pl.Int64, "j": pl.Int64, "similarity": pl.Float64})


def histogram_batch(batch: pl.DataFrame) -> pl.DataFrame:
    """Batch function: similarity counts per 0.1 bin (summed over batches by the caller)."""
    counts = similarity_histogram(batch["similarity"].to_numpy())
    return pl.DataFrame({"bin": list(counts), "count": list(counts.values())},
                        schema={"bin": pl.String, "count": pl.Int64})


def at_least(batch: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Batch function: the verified pairs."""
    return batch.filter(pl.col("similarity") >= threshold).select("i", "j")


def word_counts(texts: pl.Series) -> np.ndarray:
    """Whitespace-separated words per text."""
    return texts.fill_null("").str.count_matches(r"\S+").to_numpy()


def word_set_texts(texts: pl.Series) -> pl.Series:
    """Texts with punctuation taken for spaces: the words of a short text whatever sticks to them
    ("numbers)" and "numbers" are one word)."""
    return texts.fill_null("").str.replace_all(r"[^\w\s]+", " ")


def not_both_short(batch: pl.DataFrame, short: np.ndarray) -> pl.DataFrame:
    """Batch function: the pairs (i, j) of which at most one text is short (two short texts are compared on
    their word sets)."""
    return batch.filter(~pl.Series(short[batch["i"].to_numpy()] & short[batch["j"].to_numpy()]))


def _token_table_of(texts: pl.Series, docs: np.ndarray, tokens: Tokens | None = None) -> Tokens:
    """The `Tokens` of the texts `docs` (doc: the index into `texts`), added to `tokens` when given. `texts`
    may also be a reader with its own `token_table(docs, tokens)` (dedup/sharded.py's `DatasetTexts`: shard by
    shard, so the texts are never gathered into one series)."""
    if not isinstance(texts, pl.Series):
        return texts.token_table(docs, tokens)
    table = token_table(texts.gather(docs))
    table = table.with_columns(pl.Series("doc", docs[table["doc"].to_numpy()]))
    if tokens is None:
        return Tokens.of(table)
    tokens.add(table)
    return tokens


@dataclass
class NamedComponents:
    root: np.ndarray  # per text, the smallest index of its component
    kept_apart: int  # links not followed: they would have joined groups that name different things


def components_naming_one_thing(texts: pl.Series, short: np.ndarray, edges: np.ndarray,
                                tokens: Tokens | None = None) -> NamedComponents:
    """Connected components of `edges` in which no two groups are joined when each names something the
    other does not contain (the rule of `names_differ` on groups: a group names what any of its `short`
    texts names, and contains the words all of them contain).
    A chain, or a hub that names nothing itself ("What is less used for?"), would otherwise join "dpkg" and
    "dpkg-name", or "... - PDF output" and "... - DVI output" through a copy that lost the format's name.
    Links are followed in (i, j) order, union-find style. `tokens`: the `Tokens` of some of the texts
    already made (the others are added here)."""
    n = len(texts)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    low, high = edges.min(axis=1), edges.max(axis=1)
    link = low != high
    # Unique links in (i, j) order, packed into one uint64 each (a sort of 2-column rows is several times slower).
    packed = pl.Series((low[link].astype(_U64) << _U64(32)) | high[link].astype(_U64)).unique().sort().to_numpy()
    edges = np.stack([(packed >> _U64(32)).astype(np.int64), (packed & _U64(0xFFFFFFFF)).astype(np.int64)],
                     axis=1).reshape(-1, 2)
    root = np.arange(n)
    if not len(edges):
        return NamedComponents(root, 0)
    # A component of two texts is one link, already judged as a pair: only larger ones are walked.
    root = clusters_from_pairs(n, edges)
    larger = np.bincount(root, minlength=n)[root] > 2
    edges = edges[larger[edges[:, 0]]]
    if not len(edges):
        return NamedComponents(root, 0)
    docs = np.unique(edges[short[edges]])
    have = tokens.runs()[0] if tokens is not None else np.empty(0, dtype=np.int64)
    tokens = _token_table_of(texts, np.setdiff1d(docs, have), tokens)
    # Per text, its tokens as integer codes (one per distinct token: the same sets, and Python ints cost less
    # than strings), sliced from the table's flat arrays where the walk needs them (a text's rows are one run).
    doc, start, end = tokens.runs()
    needed = np.isin(doc, docs)
    span = np.zeros((n, 2), dtype=np.int64)  # per text, [start, end) of its tokens (empty: none)
    span[doc[needed], 0] = start[needed]
    span[doc[needed], 1] = end[needed]
    has_tokens = np.zeros(n, dtype=bool)
    has_tokens[doc[needed]] = True
    del doc, start, end, needed
    with _gc_paused():
        return _walk(root, edges, span, has_tokens, tokens.table["code"].to_numpy(),
                     tokens.table["distinguishing"].to_numpy())


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a block that makes many small sets and no cycles: its passes over
    them took a third of the walk's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _walk(root: np.ndarray, edges: np.ndarray, span: np.ndarray, has_tokens: np.ndarray, codes: np.ndarray,
          marked: np.ndarray) -> NamedComponents:
    """The union-find walk of `components_naming_one_thing` over `edges`; a text `d` with tokens
    (`has_tokens[d]`) has the token codes `codes[span[d, 0]:span[d, 1]]`, `marked` where distinguishing.
    Only groups of several texts keep their sets (a group's names and the words all its short members share);
    a text still alone has its sets made from its codes each time a link reaches it, and dropped after: the
    sets held are those of the groups joined so far, not of every text met."""
    words: dict[int, set | None] = {}
    names: dict[int, set] = {}
    empty: set = set()

    def sets(r: int) -> tuple[set, set | None]:
        """(names, words) of the group whose root is `r` (words None: no short member)."""
        if r in names:
            return names[r], words[r]
        if not has_tokens[r]:
            return empty, None
        s, e = span[r]
        tokens = codes[s:e].tolist()
        return {c for c, m in zip(tokens, marked[s:e].tolist()) if m}, set(tokens)

    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    kept_apart = 0
    for i, j in _as_pairs(edges):
        ri, rj = find(i), find(j)
        if ri == rj:
            continue
        # A group's names: any member's; its words: those every member has (None: no short member, any).
        (ni, wi), (nj, wj) = sets(ri), sets(rj)
        if wi is not None and wj is not None and (ni - wj) and (nj - wi):
            kept_apart += 1
            continue
        low, high = min(ri, rj), max(ri, rj)
        parent[high] = low
        names[low] = ni | nj
        words[low] = wj if wi is None else wi if wj is None else wi & wj
        names.pop(high, None)
        words.pop(high, None)
    touched = np.unique(edges)
    for at in range(0, len(touched), _WALK_BLOCK):  # the larger components, walked again
        block = touched[at:at + _WALK_BLOCK]
        root[block] = [find(x) for x in block.tolist()]
    return NamedComponents(root, kept_apart)


_WALK_BLOCK = 65_536  # links made Python ints at a time: a list of every link cost 128 bytes a link


def _as_pairs(edges: np.ndarray) -> Iterator[tuple[int, int]]:
    """The rows of `edges` (k x 2) as Python int pairs, in order, `_WALK_BLOCK` rows made at a time."""
    for at in range(0, len(edges), _WALK_BLOCK):
        yield from edges[at:at + _WALK_BLOCK].tolist()


def verified_pairs(texts: pl.Series | Sequence[str], cfg: DedupSettings, seed: int = 1) -> np.ndarray:
    """The pairs (i < j; k x 2) at or above `cfg.threshold` on `cfg`'s shingles, in this process (no
    word-set pass, no clustering): for callers that judge pairs further (prompts, dedup/conflicts.py)."""
    texts = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    signatures, counts = minhash_signatures(texts, cfg.ngram, cfg.num_perm, cfg.shingle, seed)
    pairs = candidate_pairs(band_keys(signatures, cfg.bands), eligible=counts > 0)
    return pairs[estimated_jaccard(signatures, pairs) >= cfg.threshold] if len(pairs) else pairs


@dataclass
class ShortTextPairs:
    pairs: np.ndarray  # (k x 2) verified pairs, indices into the texts
    signatures: np.ndarray  # word-set signatures of the short texts (rows: `index`)
    index: np.ndarray  # the short texts' indices
    candidate_similarity: np.ndarray  # estimated word-set Jaccard of every LSH candidate pair
    kept_apart: int
    tokens: Tokens  # of the texts of the pairs at or above the threshold


def short_text_pairs(texts: pl.Series, short: np.ndarray, cfg: DedupSettings, seed: int = 1) -> ShortTextPairs:
    """Near-duplicate pairs among the short texts: word-set MinHash + LSH, estimated Jaccard >= `threshold`,
    and not naming different things."""
    index = np.flatnonzero(short)
    subset = texts.gather(index)
    signatures, _ = minhash_signatures(word_set_texts(subset), 1, cfg.num_perm, "word", seed)
    # One row more per band than the n-gram pass: word sets of short texts share their common words, and
    # 4-row bands made 4x more candidates (below 0.5) on real short texts; at Jaccard 0.7 a pair is still a
    # candidate with probability 0.99 (24 bands of 5 rows), at 0.8 (one word of ten edited) 0.9999.
    rows = cfg.num_perm // cfg.bands + 1
    pairs = candidate_pairs(band_keys(signatures[:, :cfg.num_perm // rows * rows], cfg.num_perm // rows))
    similarity = estimated_jaccard(signatures, pairs) if len(pairs) else np.empty(0)
    above = pairs[similarity >= cfg.threshold]
    tokens = _token_table_of(texts, np.unique(index[above]))
    apart = names_differ(tokens, index[above])
    verified = above[~apart]
    return ShortTextPairs(index[verified].reshape(-1, 2), signatures, index, similarity, int(apart.sum()), tokens)


def _pair_similarity(pairs: Frames, signatures: Frames) -> Frames:
    """(i, j, similarity) for every pair: two hash joins bring each side's signature to the pair (in this
    process, the pair's rows of the signature matrix are read directly, without the joins' copies)."""
    if isinstance(pairs, LocalFrames) and isinstance(signatures, LocalFrames):
        frame = pairs.to_polars()
        ordered = signatures.to_polars().sort("doc")
        matrix = _signature_matrix(ordered["signature"])
        index = np.stack([frame["i"].to_numpy(), frame["j"].to_numpy()], axis=1).astype(np.int64).reshape(-1, 2)
        index = np.searchsorted(ordered["doc"].to_numpy(), index)  # row of each doc (all docs, or a subset)
        similarity = estimated_jaccard(matrix, index) if len(index) else np.empty(0)
        return LocalFrames(pl.DataFrame({"i": frame["i"], "j": frame["j"], "similarity": similarity},
                                        schema={"i": pl.Int64, "j": pl.Int64, "similarity": pl.Float64}),
                           pairs.execution)
    sig = signatures.map_batches(_signature_only)
    with_i = pairs.join(sig.map_batches(_renamed, suffix="i"), on=["i"])
    return with_i.join(sig.map_batches(_renamed, suffix="j"), on=["j"]).map_batches(similarity_batch)


def _signature_only(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.select("doc", "signature")


def _renamed(batch: pl.DataFrame, suffix: str) -> pl.DataFrame:
    return batch.select(pl.col("doc").alias(suffix), pl.col("signature").alias(f"signature_{suffix}"))


def _signature_column(signatures: np.ndarray) -> pl.Series:
    """The signature matrix as a column of fixed-size uint32 arrays (Arrow's FixedSizeList): read back by
    `_signature_matrix` without copying, where a Binary column is copied to Arrow first (most of the time
    of a contamination check at 14k records)."""
    return pl.Series("signature", np.ascontiguousarray(signatures, dtype=_U32),
                     dtype=pl.Array(pl.UInt32, signatures.shape[1]))


def _signature_matrix(column: pl.Series) -> np.ndarray:
    if not len(column):
        return np.empty((0, 0), dtype=_U32)
    return np.ascontiguousarray(column.to_numpy(), dtype=_U32)


def _short_and_ngram_pass(words: np.ndarray, cfg: DedupSettings) -> tuple[np.ndarray, np.ndarray]:
    """Per text of `words` words: short (compared on word sets), and in the n-gram pass. A text of w words
    has at most w - ngram + 1 shingles: one too short to reach `threshold` with a text longer than
    `short_text_words` words is compared on word sets only."""
    short = (words > 0) & (words <= cfg.short_text_words)
    in_ngram_pass = ~short | (words > cfg.threshold * (cfg.short_text_words - cfg.ngram + 1) + cfg.ngram - 1)
    return short, in_ngram_pass


def _doc_texts(batch: pl.DataFrame, column: str) -> pl.DataFrame:
    return batch.select(pl.col("doc").cast(pl.Int64), pl.col(column).alias("text"))


def word_count_batch(batch: pl.DataFrame, short_words: int) -> pl.DataFrame:
    """Batch function: (doc, words, text): the text only where it is short (at most `short_words` words)."""
    words = pl.col("text").fill_null("").str.count_matches(r"\S+").cast(pl.Int64)
    return batch.select("doc", words.alias("words"),
                        pl.when((words > 0) & (words <= short_words)).then(pl.col("text")).alias("text"))


def in_ngram_pass_batch(batch: pl.DataFrame, cfg: DedupSettings) -> pl.DataFrame:
    """Batch function: (doc, text, in_ngram): whether the row takes part in the n-gram pass. A column, not a
    filter: a batch left empty by a filter becomes a block without a schema in the next Ray step, which
    Ray 2.60's hash shuffle cannot take; `signature_batch` gives the others no shingles instead."""
    return batch.with_columns(pl.Series("in_ngram", _short_and_ngram_pass(word_counts(batch["text"]), cfg)[1]))


def _dataset_docs(dataset: ShardedDataset, cfg: DedupSettings, execution: ExecutionSettings, column: str):
    """What `near_duplicate_clusters` needs of a dataset on Ray, computed on the workers: per document its
    word count and whether it is short (n numbers come here), the short texts only (as a column of n with
    nulls elsewhere: the word-set pass runs in this process), and the n-gram pass's (doc, text) rows as a
    Ray dataset read from the shards."""
    n = dataset.rows
    source = RayFrames.from_dataset(dataset, execution, columns=[column], row_index="doc").map_batches(
        _doc_texts, column=column)
    short, in_ngram_pass = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    texts = pl.repeat(None, n, dtype=pl.String, eager=True).alias("text")
    if cfg.short_text_words and cfg.shingle == "word":
        counted = source.map_batches(word_count_batch, short_words=cfg.short_text_words).to_polars().sort("doc")
        if counted.height != n:
            raise RuntimeError(f"{dataset.location}: {counted.height} word counts for {n} rows")
        short, in_ngram_pass = _short_and_ngram_pass(counted["words"].to_numpy(), cfg)
        texts = counted["text"]
        source = source.map_batches(in_ngram_pass_batch, cfg=cfg)
    return n, short, in_ngram_pass, texts, source


def near_duplicate_clusters(texts: pl.Series | Sequence[str] | ShardedDataset, cfg: DedupSettings,
                            execution: ExecutionSettings | None = None, seed: int = 1,
                            column: str = "text") -> NearDuplicates:
    """Cluster `texts` (in keep order: the first of each cluster is kept) by MinHash + LSH with `cfg`'s
    shingles, permutations, bands and Jaccard threshold.

    Every step is a batch function; `execution` says whether they run here or on a Ray cluster, where LSH
    buckets are formed by a shuffle on the band keys and verified pairs never meet on one node.
    `texts` may be a sharded dataset (its `column`): on Ray the workers read it, and this process holds
    per document a few numbers and the short texts only (the word-set pass); locally it is collected."""
    execution = execution or ExecutionSettings()
    ngram, num_perm, bands, threshold, shingle = cfg.ngram, cfg.num_perm, cfg.bands, cfg.threshold, cfg.shingle
    if isinstance(texts, ShardedDataset) and execution.backend == "ray" and texts.rows:
        n, short, in_ngram_pass, texts, docs = _dataset_docs(texts, cfg, execution, column)
    else:
        if isinstance(texts, ShardedDataset):
            texts = texts.scan().select(column).collect()[column]
        texts = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
        n = len(texts)
        short = np.zeros(n, dtype=bool)
        in_ngram_pass = np.ones(n, dtype=bool)
        if cfg.short_text_words and shingle == "word":  # character shingles are chosen for short texts already
            short, in_ngram_pass = _short_and_ngram_pass(word_counts(texts), cfg)
        docs = frames(pl.DataFrame({"doc": np.arange(n, dtype=np.int64), "text": texts}).filter(in_ngram_pass),
                      execution)
    signatures = docs.map_batches(signature_batch, ngram=ngram, num_perm=num_perm, shingle=shingle,
                                  seed=seed).materialize()
    pairs = signatures.map_batches(band_batch, bands=bands).map_groups(["band", "key"], bucket_pairs)
    if not isinstance(pairs, LocalFrames):  # one block of buckets gives unique pairs, several blocks may not
        pairs = pairs.map_groups(["i", "j"], unique_pairs)
    pairs = pairs.materialize()
    scored = _pair_similarity(pairs, signatures).materialize()
    histogram = scored.map_batches(histogram_batch).to_polars()
    counts = histogram.group_by("bin").agg(pl.col("count").sum())
    candidate_histogram = {b: 0 for b in similarity_histogram(np.empty(0))}
    candidate_histogram.update(dict(counts.iter_rows()))
    verified = scored.map_batches(at_least, threshold=threshold)
    if short.any():  # two short texts: decided on their word sets below
        verified = verified.map_batches(not_both_short, short=short)
    verified = verified.materialize()
    root = clusters_from_edges(n, verified, execution.cc_max_iterations)
    found = short_text_pairs(texts, short, cfg, seed) if short.sum() > 1 else None
    if found is not None:
        candidate_histogram = {b: candidate_histogram[b] + c
                               for b, c in similarity_histogram(found.candidate_similarity).items()}
        if len(found.pairs):  # components of both passes' links
            joined = components_naming_one_thing(
                texts, short, np.concatenate([np.stack([np.arange(n), root], axis=1), found.pairs]), found.tokens)
            root, found.kept_apart = joined.root, found.kept_apart + joined.kept_apart
    to_root = np.ones(n)
    moved = np.flatnonzero(root != np.arange(n))
    both_short = short[moved] & short[root[moved]]
    in_ngram = moved[~both_short & in_ngram_pass[moved] & in_ngram_pass[root[moved]]]
    if in_ngram.size:
        moved_pairs = frames(pl.DataFrame({"i": in_ngram, "j": root[in_ngram]},
                                          schema={"i": pl.Int64, "j": pl.Int64}), execution)
        scored_moved = _pair_similarity(moved_pairs, signatures).to_polars().sort("i")
        to_root[scored_moved["i"].to_numpy()] = scored_moved["similarity"].to_numpy()
    if both_short.any() and found is not None:  # two short texts: their word-set similarity
        both = moved[both_short]
        row = np.full(n, -1, dtype=np.int64)
        row[found.index] = np.arange(len(found.index))
        to_root[both] = estimated_jaccard(found.signatures, np.stack([row[both], row[root[both]]], axis=1))
    # A short text joined to a long one through a chain has no signature pair to compare: NaN.
    to_root[moved[~both_short & ~(in_ngram_pass[moved] & in_ngram_pass[root[moved]])]] = np.nan
    return NearDuplicates(root=root, similarity=to_root, candidate_histogram=candidate_histogram,
                          candidate_pairs=sum(candidate_histogram.values()),
                          verified_pairs=verified.count() + (len(found.pairs) if found else 0),
                          short_texts=int(short.sum()), kept_apart=found.kept_apart if found else 0)
