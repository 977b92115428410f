"""Per-core throughput (records/s) of each batch function the execution backends run, in this process
on one core: the figures that size a Ray cluster. Usage: python scripts/bench_batch_functions.py [docs]"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from finetune_pipeline.cleaning import clean_documents
from finetune_pipeline.dedup import minhash
from finetune_pipeline.dedup.synthetic import near_duplicate_benchmark
from finetune_pipeline.labeling.zero_shot import embedding_batch
from finetune_pipeline.settings import load_settings
from finetune_pipeline.sources import collect_raw_corpus, discover_sources, parse_sources, source_type_of

SAMPLE = Path(__file__).resolve().parents[1] / "data"


def timed(name: str, records: int, fn, *args, **kwargs):
    fn(*args, **kwargs) if records <= 256 else None  # warm-up (model loads, spaCy) on small inputs
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{name:<28} {records:>8} records {seconds:8.2f} s {records / seconds:12.0f} records/s")
    return out


def main(docs: int) -> None:
    settings = load_settings(SAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(SAMPLE, Path(tmp) / "data", ignore=shutil.ignore_patterns(".pipeline", "models")))
        sources = discover_sources(root)
        batch = pl.DataFrame({"number": range(len(sources)), "path": [str(p) for p in sources],
                              "source_type": [source_type_of(p) for p in sources]})
        parsed = timed("parse_sources (sources)", len(sources), parse_sources, batch, settings)
        corpus = collect_raw_corpus(root, settings).kept
    print(f"  ({sum(len(r) for r in parsed['records'].to_list())} bytes of parsed JSON)")
    reps = max(1, 2000 // corpus.height)
    many = pl.concat([corpus.with_columns(pl.col("record_id") + f"-{i}", pl.col("source_uri") + f"#{i}")
                      for i in range(reps)])
    timed("clean_documents", many.height, clean_documents, many, settings)
    texts = pl.Series(near_duplicate_benchmark(docs, seed=3).texts)
    frame = pl.DataFrame({"doc": np.arange(docs), "text": texts})
    cfg = settings.dedup
    sig = timed("signature_batch", docs, minhash.signature_batch, frame, cfg.ngram, cfg.num_perm, cfg.shingle, 1)
    bands = timed("band_batch", docs, minhash.band_batch, sig, cfg.bands)
    pairs = timed("bucket_pairs (band rows)", bands.height, minhash.bucket_pairs, bands)
    pairs = minhash.unique_pairs(pairs)
    s = sig.select("doc", "signature")
    joined = (pairs.join(s.rename({"doc": "i", "signature": "signature_i"}), on="i")
              .join(s.rename({"doc": "j", "signature": "signature_j"}), on="j"))
    scored = timed("similarity_batch (pairs)", joined.height, minhash.similarity_batch, joined)
    edges = scored.filter(pl.col("similarity") >= cfg.threshold)
    timed("min_label_updates (edges)", edges.height, minhash.min_label_updates, edges, np.arange(docs))
    n = min(docs, 2000)
    timed("embedding_batch", n, embedding_batch, frame.head(n), settings.labeling.model,
          settings.labeling.batch_size, settings.labeling.max_length)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
