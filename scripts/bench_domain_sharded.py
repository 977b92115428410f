r"""The dedup stage with the domain filter on, streaming (the sharded path: `domain_sharded.py`, then the sharded
exact and near passes) against the in-memory path (the whole decision frame and every vector in the step), each in
a process of its own: wall time, records per second, the process's peak resident memory (VmHWM) and whether the
two give the same kept rows and rejects.

Run from the repository root:

  .venv/bin/python scripts/bench_domain_sharded.py --records 100000 --out /tmp/dom100k
  .venv/bin/python scripts/bench_domain_sharded.py --records 1000000 --out /tmp/dom1m --paths sharded
  .venv/bin/python scripts/bench_domain_sharded.py --records 20000 --out /tmp/dom20k --encoder minilm \
      --paths sharded,ray --shard-rows 5000

`--semantic`: semantic dedup on too (`dedup.semantic`; above 20,000 records its FAISS index), in both paths; the
outputs go to the same folders, so compare one setting at a time (`--out` per setting).

`--paths ray`: the sharded path on `backend: ray`, on a cluster this script starts on this machine (a head with no
CPUs and `--ray-workers` one-CPU `ray start` worker nodes, bench_ray_cluster.py's): the cache keys and the vectors
are Ray tasks on the workers, which load MiniLM there; the step process does not.

The corpus: bench_soak.py's generated support tickets (Faker, seed 7; 4 % exact and 4 % edited copies) as the
rows of JSONL exports, with the paragraphs of the licence texts in /usr/share/common-licenses dropped among them
as documents (real off-domain text, about 800 chunks); the domain is the sample root's (its description and
example tickets), corpus calibration, every other setting the default. The input dataset is written directly in
shards of `--shard-rows` (the columns dedup reads; no cleaning pass: this measures dedup).

`--encoder hashed` (the default) replaces MiniLM by a bag-of-hashed-words encoder (384 dimensions, numpy): MiniLM
embeds about 100 short texts a second on this 2-core machine, 3 hours for 1M records, and its own memory (about
300 MiB for torch and the weights) does not grow with the corpus; what is measured is the pipeline's own code.
`--encoder minilm` uses the model (for 100k: about 20 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ray_cluster import parse_or_run_child, run_path  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
LICENSES = Path("/usr/share/common-licenses")


def hashed_words(texts, *args, **kwargs):
    import numpy as np

    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
            out[i, int.from_bytes(digest[:2], "little") % 384] += 1.0 if digest[2] & 1 else -1.0
        norm = float(np.linalg.norm(out[i]))
        out[i] /= norm if norm else 1.0
    return out


def build(out: Path, records: int, shard_rows: int) -> Path:
    """The data root (settings, domain examples) and the input dataset; kept when already there."""
    import polars as pl

    from bench_soak import generate
    from finetune_pipeline import shards

    dataset = out / "input"
    if (dataset / "manifest.json").exists():
        return dataset
    root = out / "root"
    generate(root, records)
    (root / "domain").mkdir(exist_ok=True)
    import shutil

    shutil.copytree(ROOT / "data" / "domain", root / "domain", dirs_exist_ok=True)
    parts = []
    for path in sorted((root / "raw" / "exports").glob("*.jsonl")):
        frame = pl.read_ndjson(path, schema={"text": pl.String, "label": pl.String})
        parts.append(frame.with_columns(pl.lit(f"raw/exports/{path.name}").alias("source_uri"),
                                        pl.format("line {}", pl.int_range(1, pl.len() + 1)).alias("locator"),
                                        pl.lit("jsonl").alias("source_type")))
    for path in sorted(p for p in LICENSES.iterdir() if p.is_file()):
        chunks = [" ".join(c.split()) for c in path.read_text(encoding="utf-8", errors="replace").split("\n\n")]
        chunks = [c for c in chunks if len(c.split()) >= 8]
        parts.append(pl.DataFrame({"text": chunks, "label": [None] * len(chunks)},
                                  schema={"text": pl.String, "label": pl.String}).with_columns(
            pl.lit(f"raw/licences/{path.name}.txt").alias("source_uri"),
            pl.format("chunk {}", pl.int_range(1, pl.len() + 1)).alias("locator"), pl.lit("txt").alias("source_type")))
    corpus = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=11)  # the chunks spread over the shards
    corpus = corpus.with_columns(
        pl.format("rec-{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(8)).alias("record_id"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("ingested_at"),
        pl.lit([], dtype=pl.List(pl.String)).alias("quality_flags"))
    shards.write_dataset(corpus.select("record_id", "text", "label", "source_uri", "locator", "source_type",
                                       "ingested_at", "quality_flags"), dataset, shard_rows=shard_rows)
    return dataset


def child(args) -> None:
    """One path, in this process: prints a JSON line of figures."""
    import polars as pl

    from finetune_pipeline import embeddings, shards
    from finetune_pipeline import streaming as st
    from finetune_pipeline.dedup import deduplicate
    from finetune_pipeline.settings import load_settings

    # the hashed encoder replaces `_encode` in this process only: the encoder's own process (from
    # execution.encoder_process_min_texts texts) would load MiniLM, so it stays here
    in_process = ""
    if args.encoder == "hashed":
        embeddings._encode = hashed_words
        in_process = ", encoder_process_min_texts: null"
    out = Path(args.out)
    backend = f", backend: ray, ray_address: '{args.address}'" if args.child == "ray" else ""
    semantic = "dedup: {semantic: true}\n" if args.semantic else ""
    settings = load_settings(out / "root", overrides=f"execution: {{shard_rows: {args.shard_rows}{in_process}{backend}}}\n"
                                                     + semantic)
    from finetune_pipeline.allocator import set_mmap_threshold

    threshold = settings.execution.malloc_mmap_threshold if args.malloc_mmap_threshold is None \
        else args.malloc_mmap_threshold
    set_mmap_threshold(threshold)  # as the asset's step process does (0: glibc's own, moving threshold)
    dataset = shards.open_dataset(out / "input")
    target = out / args.child
    start = time.perf_counter()
    if args.child in ("sharded", "ray"):
        with shards.DatasetWriter(target / "kept", shard_rows=args.shard_rows) as kept, \
                shards.DatasetWriter(target / "rejects", shard_rows=args.shard_rows) as rejected:
            stats = st.deduplicate_dataset(dataset, settings, kept, rejected)
    else:
        result = deduplicate(st.decision_frame(dataset, st.DEDUP_PASSENGERS), settings)
        stats = result.stats
        shards.write_dataset(result.kept.select("record_id", "group_id"), target / "kept")
        shards.write_dataset(result.rejected, target / "rejects")
    wall = time.perf_counter() - start
    peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM")) / 1024
    torch_here = "torch" in sys.modules  # whether this process loaded the model's library
    print(json.dumps({"path": args.child, "records": dataset.rows, "wall_s": round(wall, 1), "torch_here": torch_here,
                      "records_per_s": round(dataset.rows / wall), "peak_mib": round(peak),
                      "off_domain": stats.domain.off_domain, "off_domain_sources": stats.domain.off_domain_sources,
                      "exact": stats.exact_duplicates, "near": stats.near_duplicates,
                      "semantic": stats.semantic_duplicates}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--encoder", choices=["hashed", "minilm"], default="hashed")
    parser.add_argument("--paths", default="sharded,in_memory")
    parser.add_argument("--semantic", action="store_true", help="semantic dedup on too (dedup.semantic; above "
                        "20,000 records its FAISS index)")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=None,
                        help="execution.malloc_mmap_threshold for the measured process (default: the setting's; "
                        "0: glibc's own)")
    args = parse_or_run_child(parser, child)
    if args is None:
        return 0
    import polars as pl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build(out, args.records, args.shard_rows)
    print(f"input built in {time.perf_counter() - t0:.0f} s ({platform.node()}, {os.cpu_count()} cores)", flush=True)
    rows = []

    for path in args.paths.split(","):
        rows.append(run_path(__file__, path, [
            "--out", str(out), "--records", str(args.records), "--shard-rows", str(args.shard_rows),
            "--encoder", args.encoder, *(["--semantic"] if args.semantic else []),
            *([] if args.malloc_mmap_threshold is None else
              ["--malloc-mmap-threshold", str(args.malloc_mmap_threshold)])], args.ray_workers, "domain"))
        print(json.dumps(rows[-1]), flush=True)
    def read(path, name):
        from finetune_pipeline import shards

        return shards.open_dataset(out / path / name).collect()

    # each path run now against another path's output on disk (this run's or an earlier one's on the same input)
    ran = [r["path"] for r in rows]
    others = [p for p in ("sharded", "in_memory", "ray") if (out / p / "kept" / "manifest.json").exists()]
    for a, b in [(a, b) for a in ran for b in others if a != b and not (b in ran and ran.index(b) < ran.index(a))]:
        same_kept = read(a, "kept")["record_id"].equals(read(b, "kept")["record_id"])
        same_rejects = read(a, "rejects").drop("detail").equals(read(b, "rejects").drop("detail"))
        same_details = read(a, "rejects").equals(read(b, "rejects"))
        print(f"{a} against {b}: same kept records in the same order: {same_kept}; same rejects: {same_rejects} "
              f"(with the same details, their printed scores: {same_details})")
    print("| path | records | wall s | records/s | peak RSS MiB | torch in the step | off-domain (sources) | exact "
          "| near | semantic |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['records']:,} | {r['wall_s']} | {r['records_per_s']:,} | {r['peak_mib']:,} | "
              f"{'yes' if r['torch_here'] else 'no'} | {r['off_domain']:,} ({r['off_domain_sources']}) | "
              f"{r['exact']:,} | {r['near']:,} | {r.get('semantic', 0):,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
