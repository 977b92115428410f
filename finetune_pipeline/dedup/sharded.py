"""Exact and near duplicates of a sharded dataset without holding its texts: the streaming path's
deduplication (`streaming.deduplicate_dataset`), with the same answer as `stage.deduplicate` on the whole
frame (`test_dedup_sharded.py` compares them row for row), for the kinds that compare whole texts
(classification); a domain filter runs first, on the same shards (`domain_sharded.py`), and semantic dedup last
(`semantic_sharded.py`: the vectors in a spill folder, the FAISS index built from it).

This process holds per record its id, `source_uri` and `locator` (for the keep order and the rejects) and
a few numbers; the texts are read one shard at a time, and the MinHash signatures and band keys go to a
spill folder on disk (`tempfile`'s, so `TMPDIR`; about num_perm x 8 bytes per record: 1 GB at 1M records
and 128 permutations), one file per shard:

1. Keep order and exact duplicates: the keep-order columns and the exact key (`exact.dedup_key`: a hash of
   the folded text) of every record, shard by shard; sorted, the first record of each key is kept.
2. One pass over the texts, shard by shard: per kept record its word count (short, in the n-gram pass), its
   n-gram signature and band keys and, for a short text, its word-set signature and band keys, written to
   the spill folder.
3. Per band: that band's key of every record (8 bytes each) gives its candidate pairs exactly as
   `minhash.candidate_pairs` does (stable sort, each record paired with the next `LSH_WINDOW` of its
   bucket); the pairs go to partition files by the shards their two records lie in.
4. Per partition: its unique pairs, scored against the two shards' signatures (read back from the spill):
   the candidate histogram and the verified pairs (few) stay here.
5. Clusters and the word-set pass's checks as `minhash.near_duplicate_clusters`; the names check reads the
   texts of the records of the pairs above the threshold only.

On `execution.backend: ray` the two passes that read the texts (1 and 2) are Ray tasks, one per shard
(`execution.per_shard`): a worker reads its shard's texts and sends back the keys, or the signatures and band keys
(numbers, never texts), which this process writes to the spill folder as it receives them. Steps 3 to 5
run here: the spill folder read 8 bytes per record and band, then one partition of pairs at a time, and the
connected components of the verified pairs (few), which this process holds already.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from finetune_pipeline.dedup import minhash as mh
from finetune_pipeline.dedup.exact import KEEP_ORDER, dedup_key
from finetune_pipeline.dedup.identifiers import Tokens, names_differ, token_table
from finetune_pipeline.execution import per_shard
from finetune_pipeline.records import StageResult
from finetune_pipeline.settings import DedupSettings, ExecutionSettings
from finetune_pipeline.shards import ShardedDataset

_U64 = np.uint64
_LOW = _U64(0xFFFFFFFF)
# Candidate pairs buffered before they are written to their partitions (8 bytes each; a flush holds about 80
# bytes a pair while it deduplicates and sorts them). A band's pairs are added in pieces, so no flush holds more.
FLUSH_PAIRS = 1_000_000
# Candidate pairs of one partition file deduplicated and scored at once (larger files are cut by a hash). Scoring
# holds about 100 bytes a pair (the pairs, their shards, order, scores): with 4M the contamination look over 911k
# records peaked at 669 MiB, with 1M at 591 MiB and no slower (docs/benchmarks.md).
PART_PAIRS = 1_000_000
# Texts whose tokens are listed at once (`identifiers.token_table`) for the names check of the word-set pass.
TOKEN_DOCS = 4096
# Pairs scored at once (two num_perm-wide uint32 rows each).
SCORE_CHUNK = 16_384


def applies(settings) -> bool:
    """Whether `deduplicate_sharded` gives this run's answer: the kind compares whole texts (its
    near-duplicate texts are the records' own, its groups are the records); the domain filter and semantic dedup
    have their sharded forms (`domain_sharded`, `semantic_sharded`). On either backend: on Ray the passes that read
    the texts (the embeddings', steps 1 and 2 above) are Ray tasks, one per shard (`execution.per_shard`)."""
    from finetune_pipeline.tasks import task_for

    return task_for(settings).name == "classification"


class DatasetTexts:
    """The texts of the documents (rows `rows` of `dataset`, in that order), read from the shards when
    asked for: what `minhash.components_naming_one_thing` tokenizes of the texts it needs (`token_table`)."""

    def __init__(self, dataset: ShardedDataset, rows: np.ndarray, column: str = "text"):
        self.dataset, self.rows, self.column = dataset, rows, column
        self.bounds = dataset.bounds

    def __len__(self) -> int:
        return len(self.rows)

    def gather(self, docs: np.ndarray) -> pl.Series:
        parts = [pl.DataFrame({"at": at, self.column: texts}) for at, texts in self.by_shard(docs)]
        if not parts:
            return pl.Series(self.column, [], dtype=pl.String)
        return pl.concat(parts).sort("at")[self.column]

    def by_shard(self, docs: np.ndarray):
        """Per shard holding some of `docs`: (their positions in `docs`, their texts), each shard read once."""
        docs = np.asarray(docs, dtype=np.int64)
        rows = self.rows[docs]
        for number in range(len(self.bounds) - 1):
            lo, hi = self.bounds[number], self.bounds[number + 1]
            inside = np.flatnonzero((rows >= lo) & (rows < hi))
            if inside.size:
                texts = _read_shard(self.dataset, number, [self.column])[self.column]
                yield inside, texts.gather(rows[inside] - lo)

    def token_table(self, docs: np.ndarray, tokens: Tokens | None = None) -> Tokens:
        """`minhash._token_table_of` of these texts: the `Tokens` of `docs` (added to `tokens` when given), each
        shard read once, its texts listed `TOKEN_DOCS` at a time and coded before the next shard is read: the
        strings of one shard's texts are held, never the whole table's (a text's rows are its own, so the table
        holds the same rows, in the order of the shards)."""
        docs = np.asarray(docs, dtype=np.int64)
        tokens = tokens if tokens is not None else Tokens.empty()
        for at, values in self.by_shard(docs):
            parts = []
            for start in range(0, len(at), TOKEN_DOCS):
                table = token_table(values.slice(start, TOKEN_DOCS))
                parts.append(table.with_columns(pl.Series("doc", docs[at[start:start + TOKEN_DOCS]][table["doc"].to_numpy()])))
            tokens.add(pl.concat(parts))
            del parts
        return tokens


def _read_shard(dataset: ShardedDataset, number: int, columns: list[str]) -> pl.DataFrame:
    return dataset.read_shard(number, columns)


def row_hashes(dataset: ShardedDataset, rows: pl.DataFrame, column: str, schema: dict) -> list[np.ndarray]:
    """Per seed (0, then 1), polars' `hash_rows` of each row of `rows` (in their order) as a frame of
    `schema`'s columns, its `column` read from the dataset's row `_row`: what `incremental.frame_digest`
    hashes, with the texts read shard by shard."""
    out = [np.empty(rows.height, dtype=_U64) for _ in (0, 1)]
    for inside, values in DatasetTexts(dataset, rows["_row"].to_numpy(), column).by_shard(np.arange(rows.height)):
        part = rows[inside].with_columns(values.alias(column)).select(list(schema)).cast(schema)
        for seed in (0, 1):
            out[seed][inside] = part.hash_rows(seed=seed).to_numpy()
    return out


@dataclass
class _Layout:
    """Where each document (exact-kept record, in keep order) lies: its dataset row, shard, row in the shard."""

    rows: np.ndarray  # per document, its dataset row
    shard: np.ndarray  # per document, its shard
    local: np.ndarray  # per document, its row in the shard
    shards: int

    @classmethod
    def of(cls, rows: np.ndarray, bounds: np.ndarray) -> _Layout:
        shard = np.searchsorted(bounds, rows, side="right") - 1
        return cls(rows, shard, rows - bounds[shard], len(bounds) - 1)

    def documents_of_shard(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per shard: (its documents, their rows in the shard)."""
        order = np.argsort(self.shard, kind="stable")
        cuts = np.searchsorted(self.shard[order], np.arange(self.shards + 1))
        return [(order[cuts[s]:cuts[s + 1]], self.local[order[cuts[s]:cuts[s + 1]]]) for s in range(self.shards)]


class _Signatures:
    """One pass's per-shard signature and band-key files (rows: every row of the shard; zero for a row
    outside the pass)."""

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = folder, name

    def signature_file(self, shard: int) -> Path:
        return self.folder / f"{self.name}-sig-{shard}.npy"

    def keys_file(self, shard: int) -> Path:
        return self.folder / f"{self.name}-keys-{shard}.npy"

    @staticmethod
    def keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
        """The band keys of `signatures` (bands of `rows` permutations)."""
        return mh.band_keys(np.ascontiguousarray(signatures[:, :bands * rows]), bands)

    def write(self, shard: int, signatures: np.ndarray, keys: np.ndarray) -> None:
        np.save(self.signature_file(shard), signatures)
        np.save(self.keys_file(shard), keys)

    def band(self, band: int, layout: _Layout, shard_docs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Every document's key in `band` (8 bytes per document)."""
        key = np.zeros(len(layout.rows), dtype=_U64)
        for shard, (docs, local) in enumerate(shard_docs):
            if docs.size:
                stored = np.load(self.keys_file(shard), mmap_mode="r")
                key[docs] = stored[band][local]
                del stored
        return key

    def similarity(self, pairs: np.ndarray, layout: _Layout) -> np.ndarray:
        """Estimated Jaccard of document pairs (k x 2), as `minhash.estimated_jaccard`: pairs taken group by
        group of their two shards, with at most two shards' signatures read at a time."""
        out = np.empty(len(pairs), dtype=np.float64)
        if not len(pairs):
            return out
        si, sj = layout.shard[pairs[:, 0]], layout.shard[pairs[:, 1]]
        group = np.minimum(si, sj) * layout.shards + np.maximum(si, sj)
        order = np.argsort(group, kind="stable")
        cuts = np.flatnonzero(np.diff(group[order])) + 1
        loaded: dict[int, np.ndarray] = {}
        for chunk in np.split(order, cuts):
            a, b = int(si[chunk[0]]), int(sj[chunk[0]])
            for shard in list(loaded):
                if shard not in (a, b):
                    del loaded[shard]
            for shard in {a, b} - set(loaded):
                loaded[shard] = np.load(self.signature_file(shard))
            # each pair's side in shard `a` first (the similarity is symmetric), then one gather per side
            first, second = pairs[chunk, 0], pairs[chunk, 1]
            swap = si[chunk] != a
            first, second = np.where(swap, second, first), np.where(swap, first, second)
            out[chunk] = _equal_share(loaded[a], layout.local[first], loaded[b], layout.local[second])
        return out


def _equal_share(left: np.ndarray, i: np.ndarray, right: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Share of equal values between rows `left[i]` and `right[j]`, as `minhash.estimated_jaccard` counts it."""
    out = np.empty(len(i), dtype=np.float64)
    num_perm = left.shape[1]
    equal = np.empty((min(SCORE_CHUNK, len(i)), num_perm), dtype=bool)
    for start in range(0, len(i), SCORE_CHUNK):
        k = len(i[start:start + SCORE_CHUNK])
        np.equal(np.take(left, i[start:start + k], axis=0), np.take(right, j[start:start + k], axis=0), out=equal[:k])
        out[start:start + k] = equal[:k].view(np.uint8).sum(axis=1, dtype=np.uint16)
    return out / num_perm if num_perm else out


def _unique(packed: np.ndarray) -> np.ndarray:
    """The distinct values (polars' hash-based unique: several times faster than numpy's sort here)."""
    return pl.Series(packed, dtype=pl.UInt64).unique().to_numpy()


class _PairSpill:
    """Candidate pairs (packed `i << 32 | j`) in partition files by the shards of their two documents, so a
    pair found in several bands lands in one file, and one partition's pairs are scored at a time."""

    def __init__(self, folder: Path, layout: _Layout):
        self.folder, self.layout = folder, layout
        self.folder.mkdir(parents=True, exist_ok=True)
        self.buffer: list[np.ndarray] = []
        self.buffered = 0

    def add(self, packed: np.ndarray) -> None:
        while len(packed):  # a band step of a million near copies adds a million pairs: in pieces
            piece, packed = packed[:FLUSH_PAIRS - self.buffered], packed[FLUSH_PAIRS - self.buffered:]
            self.buffer.append(piece)
            self.buffered += len(piece)
            if self.buffered >= FLUSH_PAIRS:
                self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        packed = _unique(np.concatenate(self.buffer))  # a pair found in several bands of the buffer: once
        self.buffer, self.buffered = [], 0
        si, sj = self.layout.shard[(packed >> _U64(32)).astype(np.int64)], self.layout.shard[(packed & _LOW).astype(np.int64)]
        grouped = pl.DataFrame({"part": np.minimum(si, sj) * self.layout.shards + np.maximum(si, sj),
                                "packed": packed}).sort("part")
        part, packed = grouped["part"].to_numpy(), grouped["packed"].to_numpy()
        cuts = np.flatnonzero(np.diff(part)) + 1
        for start, stop in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(part)]])):
            with (self.folder / f"{int(part[start])}.u64").open("ab") as handle:
                packed[start:stop].tofile(handle)

    def partitions(self):
        """Each partition's unique pairs (k x 2, in no particular order); a partition file of more than
        `PART_PAIRS` pairs is first cut into parts by a hash of the pair (a pair's copies stay together), so
        no more than about `PART_PAIRS` pairs are held at a time."""
        self.flush()
        for path in sorted(self.folder.glob("*.u64"), key=lambda p: int(p.stem)):
            for part in self._cut(path):
                packed = _unique(np.fromfile(part, dtype=_U64))
                part.unlink()
                yield np.stack([(packed >> _U64(32)).astype(np.int64), (packed & _LOW).astype(np.int64)], axis=1)

    @staticmethod
    def _cut(path: Path) -> list[Path]:
        count = path.stat().st_size // 8
        if count <= PART_PAIRS:
            return [path]
        parts = 2 * -(-count // PART_PAIRS)
        names = [path.with_name(f"{path.stem}-{k}.part") for k in range(parts)]
        for offset in range(0, count, PART_PAIRS):
            packed = _unique(np.fromfile(path, dtype=_U64, count=PART_PAIRS, offset=offset * 8))
            bucket = (mh._fmix64(packed) % _U64(parts)).astype(np.int64)
            order = np.argsort(bucket, kind="stable")
            cuts = np.searchsorted(bucket[order], np.arange(parts + 1))
            for k in range(parts):
                if cuts[k + 1] > cuts[k]:
                    with names[k].open("ab") as handle:
                        packed[order[cuts[k]:cuts[k + 1]]].tofile(handle)
        path.unlink()
        return [name for name in names if name.exists()]


def _band_candidates(signatures: _Signatures, bands: int, eligible: np.ndarray, layout: _Layout,
                     spill: _PairSpill, window: int = mh.LSH_WINDOW) -> None:
    """`minhash.candidate_pairs`, one band at a time, into `spill`."""
    index = np.flatnonzero(eligible)
    if index.size < 2:
        return
    shard_docs = layout.documents_of_shard()
    for band in range(bands):
        sub = signatures.band(band, layout, shard_docs)[index]
        order = np.argsort(sub, kind="stable")
        key, doc = sub[order], index[order].astype(_U64)
        del sub, order
        for step in range(1, window + 1):
            at = np.flatnonzero(key[:-step] == key[step:])
            if not at.size:
                break
            spill.add((doc[at] << _U64(32)) | doc[at + step])
    spill.flush()


@dataclass
class _Scored:
    histogram: dict[str, int]
    candidates: int
    kept: np.ndarray  # the pairs that passed (k x 2)


def _score_candidates(signatures: _Signatures, spill: _PairSpill, layout: _Layout, threshold: float,
                      short: np.ndarray | None) -> _Scored:
    """Per partition: the unique candidates' estimated Jaccard into the histogram; the pairs at or above
    `threshold` kept (with `short`: not both short)."""
    histogram = mh.similarity_histogram(np.empty(0))
    kept, candidates = [], 0
    for pairs in spill.partitions():
        similarity = signatures.similarity(pairs, layout)
        candidates += len(pairs)
        for bin_, count in mh.similarity_histogram(similarity).items():
            histogram[bin_] += count
        keep = similarity >= threshold
        if short is not None:
            keep &= ~(short[pairs[:, 0]] & short[pairs[:, 1]])
        kept.append(pairs[keep])
    pairs = np.concatenate(kept) if kept else np.empty((0, 2), dtype=np.int64)
    return _Scored(histogram, candidates, pairs.reshape(-1, 2))


@dataclass
class _Ordered:
    """Every row in keep order: `row` (its dataset row), `record_id`, `first` (the position, in this order,
    of the first record with its exact key: its own when it is kept), and its `source_uri` and `locator` as
    codes into `values` (sorted distinct values: a code's order is its value's, so the codes sort as they do)."""

    frame: pl.DataFrame
    values: dict[str, pl.Series]

    def decoded(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with `source_uri` and `locator` in place of their codes."""
        return frame.with_columns([self.values[c].gather(frame[f"_{c}"]).alias(c) for c in _REJECT_COLUMNS]) \
            .drop([f"_{c}" for c in _REJECT_COLUMNS])


_CODED = ("ingested_at", "source_uri", "locator")  # the keep-order columns held as codes
_REJECT_COLUMNS = ("source_uri", "locator")  # what a reject names besides the record id


def _distinct(dataset: ShardedDataset) -> dict[str, pl.Series]:
    """The sorted distinct non-null values of the `_CODED` columns, shard by shard."""
    found: dict[str, list[pl.Series]] = {c: [] for c in _CODED}
    for number in range(len(dataset.manifest.shards)):
        shard = _read_shard(dataset, number, list(_CODED))
        for column in _CODED:
            found[column] = [pl.concat([*found[column], shard[column].unique()]).unique()]
    return {c: (pl.concat(v) if v else dataset.scan().select(c).head(0).collect()[c]).drop_nulls().sort()
            for c, v in found.items()}


def _shard_keys(dataset: ShardedDataset, number: int, offset: int) -> pl.DataFrame:
    """One shard's keep-order columns, record ids and exact keys (`exact.dedup_key` of the text), its rows
    numbered from `offset`: what `_exact_and_order` needs of the shard, without its texts."""
    shard = _read_shard(dataset, number, [*KEEP_ORDER, "text"])
    return shard.select(pl.int_range(offset, offset + shard.height, dtype=pl.Int64).alias("row"), *_CODED,
                        "record_id", dedup_key(pl.col("text")).alias("_key"))


def _exact_and_order(dataset: ShardedDataset, execution: ExecutionSettings | None = None,
                     left_out: np.ndarray | None = None) -> _Ordered:
    """Keep order (`exact.KEEP_ORDER`: nulls last, ties in row order) and the exact duplicates, the keep-order
    columns and the texts read shard by shard (`_shard_keys`, on the workers on Ray), holding per record its id
    and a few numbers. `left_out`: per dataset row, True for a row that takes no part (off-domain)."""
    values = _distinct(dataset)
    tables = {c: pl.DataFrame({c: v, f"_{c}": pl.int_range(len(v), dtype=pl.UInt32, eager=True)})
              for c, v in values.items()}
    calls = [(dataset, number, int(offset)) for number, offset in enumerate(dataset.bounds[:-1])]
    parts: list[pl.DataFrame | None] = [None] * len(calls)
    for number, part in per_shard(_shard_keys, calls, execution or ExecutionSettings()):
        for column, table in tables.items():
            part = part.join(table, on=column, how="left", maintain_order="left").drop(column)
        parts[number] = part
    schema = {"row": pl.Int64, "record_id": pl.String, "_key": pl.UInt64, **{f"_{c}": pl.UInt32 for c in _CODED}}
    frame = pl.concat(parts).select(list(schema)) if parts else pl.DataFrame(schema=schema)
    del parts
    if left_out is not None and left_out.any():
        frame = frame.filter(pl.Series(~left_out).gather(frame["row"]))
    frame = frame.sort([f"_{c}" for c in _CODED] + ["record_id"], nulls_last=True, maintain_order=True)
    keys = frame["_key"].to_numpy()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    frame = frame.drop("_key", "_ingested_at").with_columns(pl.Series("first", first[inverse.reshape(-1)], pl.Int64))
    return _Ordered(frame, values)


def near_duplicates_sharded(dataset: ShardedDataset, rows: np.ndarray, cfg: DedupSettings,
                            execution: ExecutionSettings | None = None, seed: int = 1,
                            column: str = "text", spill_dir: str | Path | None = None) -> mh.NearDuplicates:
    """`minhash.near_duplicate_clusters` of the texts of `dataset`'s rows `rows` (in that order: the first
    of a cluster is kept), the texts read shard by shard and the signatures spilled to disk."""
    n = len(rows)
    bounds = dataset.bounds
    layout = _Layout.of(np.asarray(rows, dtype=np.int64), bounds)
    folder = Path(tempfile.mkdtemp(prefix="finetune-dedup-", dir=spill_dir))
    try:
        return _near(dataset, layout, cfg, execution or ExecutionSettings(), seed, column, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _ShardSignatures:
    """What step 2 finds in one shard: per document of the shard (in the order asked for) whether it is
    short, whether it is in the n-gram pass and its shingle count; per row of the shard (zero for a row
    outside the pass) its n-gram and word-set signatures, and their band keys."""

    short: np.ndarray
    in_ngram_pass: np.ndarray
    shingles: np.ndarray
    ngram: np.ndarray
    ngram_keys: np.ndarray
    words: np.ndarray
    words_keys: np.ndarray


def _word_set_bands(cfg: DedupSettings) -> tuple[int, int]:
    """The word-set pass's bands and rows per band (`minhash.short_text_pairs`: one row more than the n-gram pass's)."""
    rows = cfg.num_perm // cfg.bands + 1
    return cfg.num_perm // rows, rows


def _shard_signatures(dataset: ShardedDataset, shard: int, local: np.ndarray, cfg: DedupSettings, seed: int,
                      column: str) -> _ShardSignatures:
    """Step 2 for the documents at rows `local` of shard `shard`: its texts read here (a Ray task on the
    workers on Ray), only numbers returned."""
    ngram_rows = cfg.num_perm // cfg.bands
    words_bands, words_rows = _word_set_bands(cfg)
    texts = _read_shard(dataset, shard, [column])[column]
    size = len(texts)
    texts = texts.gather(local)
    short, in_ngram_pass = np.zeros(len(local), dtype=bool), np.ones(len(local), dtype=bool)
    if cfg.short_text_words and cfg.shingle == "word":
        short, in_ngram_pass = mh._short_and_ngram_pass(mh.word_counts(texts), cfg)
    shingles = np.zeros(len(local), dtype=np.int64)
    ngram = np.zeros((size, cfg.num_perm), dtype=np.uint32)
    signatures, counts = mh.minhash_signatures(texts.filter(pl.Series(in_ngram_pass)), cfg.ngram, cfg.num_perm,
                                               cfg.shingle, seed)
    ngram[local[in_ngram_pass]] = signatures
    shingles[in_ngram_pass] = counts
    words = np.zeros((size, cfg.num_perm), dtype=np.uint32)
    if short.any():
        signatures, _ = mh.minhash_signatures(mh.word_set_texts(texts.filter(pl.Series(short))), 1,
                                              cfg.num_perm, "word", seed)
        words[local[short]] = signatures
    return _ShardSignatures(short, in_ngram_pass, shingles, ngram, _Signatures.keys(ngram, cfg.bands, ngram_rows),
                            words, _Signatures.keys(words, words_bands, words_rows))


def _near(dataset: ShardedDataset, layout: _Layout, cfg: DedupSettings, execution: ExecutionSettings, seed: int,
          column: str, folder: Path) -> mh.NearDuplicates:
    n = len(layout.rows)
    words_bands, _ = _word_set_bands(cfg)
    ngram, sets = _Signatures(folder, "ngram"), _Signatures(folder, "words")
    short, in_ngram_pass = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    shingles = np.zeros(n, dtype=np.int64)
    shard_docs = layout.documents_of_shard()
    calls = [(dataset, shard, local, cfg, seed, column) for shard, (_, local) in enumerate(shard_docs)]
    for shard, found in per_shard(_shard_signatures, calls, execution):
        docs = shard_docs[shard][0]
        short[docs], in_ngram_pass[docs], shingles[docs] = found.short, found.in_ngram_pass, found.shingles
        ngram.write(shard, found.ngram, found.ngram_keys)
        sets.write(shard, found.words, found.words_keys)
        del found

    spill = _PairSpill(folder / "ngram", layout)
    _band_candidates(ngram, cfg.bands, in_ngram_pass & (shingles > 0), layout, spill)
    scored = _score_candidates(ngram, spill, layout, cfg.threshold, short if short.any() else None)
    histogram, verified = scored.histogram, scored.kept
    root = mh.clusters_from_pairs(n, verified)  # the verified pairs are here already: no round trips to a cluster
    kept_apart, word_pairs = 0, 0
    texts = DatasetTexts(dataset, layout.rows, column)
    word_scored = None
    if short.sum() > 1:
        spill = _PairSpill(folder / "words", layout)
        _band_candidates(sets, words_bands, short, layout, spill)
        word_scored = _score_candidates(sets, spill, layout, cfg.threshold, None)
        histogram = {b: histogram[b] + c for b, c in word_scored.histogram.items()}
        above = word_scored.kept
        tokens = texts.token_table(np.unique(above))
        apart = names_differ(tokens, above)
        found = above[~apart]
        kept_apart, word_pairs = int(apart.sum()), len(found)
        if len(found):
            linked = np.flatnonzero(root != np.arange(n))  # the n-gram pass's links (a record to itself: none)
            joined = mh.components_naming_one_thing(
                texts, short, np.concatenate([np.stack([linked, root[linked]], axis=1), found]), tokens)
            root, kept_apart = joined.root, kept_apart + joined.kept_apart
    to_root = np.ones(n)
    moved = np.flatnonzero(root != np.arange(n))
    both_short = short[moved] & short[root[moved]]
    in_ngram = moved[~both_short & in_ngram_pass[moved] & in_ngram_pass[root[moved]]]
    if in_ngram.size:
        to_root[in_ngram] = ngram.similarity(np.stack([in_ngram, root[in_ngram]], axis=1), layout)
    if both_short.any() and word_scored is not None:
        both = moved[both_short]
        to_root[both] = sets.similarity(np.stack([both, root[both]], axis=1), layout)
    to_root[moved[~both_short & ~(in_ngram_pass[moved] & in_ngram_pass[root[moved]])]] = np.nan
    return mh.NearDuplicates(root=root, similarity=to_root, candidate_histogram=histogram,
                             candidate_pairs=sum(histogram.values()), verified_pairs=len(verified) + word_pairs,
                             short_texts=int(short.sum()), kept_apart=kept_apart)


def deduplicate_sharded(dataset: ShardedDataset, settings, spill_dir: str | Path | None = None,
                        embedding_cache=None) -> StageResult:
    """`stage.deduplicate` of `dataset` where `applies(settings)`: the kept records as (`record_id`, `row`,
    `group_id`, and `quality_flags` when the domain filter flagged some) in keep order (`row`: the record's row in
    `dataset`; their other columns are the dataset's: the caller streams them through), the rejects and the
    statistics. With a domain, its filter first (`domain_sharded`, with the stage's `embedding_cache`); it
    raises `DomainFilterRefused` before anything is returned."""
    from finetune_pipeline.dedup.stage import DedupStats, exact_rejects, near_rejects, semantic_rejects, settle
    from finetune_pipeline.tasks import task_for

    cfg = settings.dedup
    domain = None
    if settings.domain.enabled:
        from finetune_pipeline.domain_sharded import domain_filter_sharded

        domain = domain_filter_sharded(dataset, settings.domain, task_for(settings), settings.execution,
                                       embedding_cache, spill_dir)
    ordered = _exact_and_order(dataset, settings.execution,
                               domain.below if domain is not None and domain.policy == "reject" else None)
    frame = ordered.frame.with_row_index("position").with_columns(pl.col("position").cast(pl.Int64))
    is_first = pl.col("position") == pl.col("first")
    kept = frame.filter(is_first).drop("position", "first")
    exact = ordered.decoded(frame.filter(~is_first).with_columns(
        frame["record_id"].gather(frame.filter(~is_first)["first"]).alias("duplicate_of")))
    stats = DedupStats(exact_duplicates=exact.height, domain=domain.stats if domain is not None else None)
    removed = [exact_rejects(exact)]
    del frame
    if cfg.near_duplicates and kept.height:
        near = near_duplicates_sharded(dataset, kept["row"].to_numpy(), cfg, settings.execution, spill_dir=spill_dir)
        kept, dups = near_rejects(kept, near, stats)
        removed.append(ordered.decoded(dups))
    if cfg.semantic and kept.height > 1:  # the texts read shard by shard, the vectors spilled to disk
        from finetune_pipeline.dedup.semantic_sharded import semantic_sharded

        found = semantic_sharded(dataset, kept["row"].to_numpy(), cfg, task_for(settings), settings.execution,
                                 embedding_cache, spill_dir)
        kept, dups = semantic_rejects(kept, found, stats)
        removed.append(ordered.decoded(dups))

    def texts_of(ids: list[str]) -> pl.Series:
        rows = kept.filter(pl.col("record_id").is_in(ids)).select("record_id", "row")
        found = dict(zip(rows["record_id"].to_list(),
                         DatasetTexts(dataset, rows["row"].to_numpy()).gather(np.arange(rows.height)).to_list()))
        return pl.Series("text", [found.get(i) for i in ids], dtype=pl.String)

    result = settle(kept.select("record_id", "row"), removed, stats, cfg, task_for(settings), texts_of)
    if domain is not None:
        result.rejected = pl.concat([domain.rejected, result.rejected])
        if domain.policy == "flag" and domain.below.any():
            result.kept = _flagged(dataset, result.kept, domain.below)
    return result


def _flagged(dataset: ShardedDataset, kept: pl.DataFrame, below: np.ndarray) -> pl.DataFrame:
    """`kept` with each record's `quality_flags` (read from the shards), off_domain added where `below`: the
    domain filter's flag policy, as `domain.domain_filter` applies it."""
    from finetune_pipeline.domain import REASON

    rows = kept["row"].to_numpy()
    if "quality_flags" in dataset.columns:
        flags = pl.concat([dataset.read_shard(s, ["quality_flags"]) for s in range(len(dataset.bounds) - 1)])
        flags = flags["quality_flags"].gather(rows)
    else:
        flags = pl.Series("quality_flags", [[]] * len(rows), dtype=pl.List(pl.String))
    marked = pl.DataFrame({"quality_flags": flags, "_below": below[rows]})
    flags = marked.select(pl.when(pl.col("_below")).then(pl.col("quality_flags").list.concat(pl.lit([REASON])))
                          .otherwise(pl.col("quality_flags")).alias("quality_flags")).to_series()
    return kept.with_columns(flags)
