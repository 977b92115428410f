r"""Near-duplicate benchmark: quality, speed and memory of the MinHash + LSH stage, against datasketch.

Run from the repository root (the `bench` extra installs datasketch):

  .venv/bin/python scripts/bench_dedup.py --docs 100000 --repeat 3          # ours and datasketch
  .venv/bin/python scripts/bench_dedup.py --docs 10000 100000 1000000 --no-baseline --repeat 2 --cache /tmp/corpora

For each size it generates the synthetic corpus (`finetune_pipeline.dedup.synthetic`: originals, copies
edited at known rates, related hard negatives; seeded) into a temporary Parquet file, then runs each
method in a fresh Python process that reads the texts and times only the near-duplicate step (shingles,
signatures, LSH, verification, clusters). It prints pairwise precision, recall and F1, documents per
second and the peak resident memory (VmHWM) of that process, and with --repeat > 1 the median time.

Both methods use the same shingles (word n-grams of the lower-cased text), num_perm, LSH bands x rows
and threshold, and both confirm LSH candidates by estimated Jaccard before clustering them with
connected components, so they should find the same pairs up to hashing noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune_pipeline.dedup.synthetic import near_duplicate_benchmark, pair_scores  # noqa: E402
from finetune_pipeline.settings import DedupSettings  # noqa: E402


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux VmHWM). Not ru_maxrss: across fork + exec it keeps the
    parent's peak, here the corpus generator's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(texts: pl.Series, cfg: DedupSettings) -> np.ndarray:
    from finetune_pipeline.dedup.minhash import near_duplicate_clusters

    return near_duplicate_clusters(texts, cfg).root


def run_datasketch(texts: pl.Series, cfg: DedupSettings) -> np.ndarray:
    """The usual datasketch recipe, made as fast as its API allows (MinHash.generator, insertion_session)."""
    from datasketch import MinHash, MinHashLSH

    def shingles(text: str) -> list[bytes]:
        if cfg.shingle == "char":
            tokens = list(" ".join(text.lower().split()))
        else:
            tokens = text.lower().split()
        joiner = "" if cfg.shingle == "char" else " "
        if len(tokens) < cfg.ngram:
            return [joiner.join(tokens).encode()] if tokens else []
        return list({joiner.join(tokens[i:i + cfg.ngram]).encode() for i in range(len(tokens) - cfg.ngram + 1)})

    rows = cfg.num_perm // cfg.bands
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, rows))
    sketches = list(MinHash.generator((shingles(t) for t in texts), num_perm=cfg.num_perm))
    with lsh.insertion_session() as session:
        for i, sketch in enumerate(sketches):
            session.insert(i, sketch, check_duplication=False)
    parent = list(range(len(sketches)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, sketch in enumerate(sketches):
        for j in lsh.query(sketch):
            if j > i and sketch.jaccard(sketches[j]) >= cfg.threshold:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(len(sketches))])


def worker(method: str, corpus: str, settings: str) -> None:
    """One timed run in this (fresh) process; prints a JSON line."""
    cfg = DedupSettings.model_validate_json(settings)
    frame = pl.read_parquet(corpus)
    texts, family = frame["text"], frame["family"].to_numpy()
    rss_before = peak_rss_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    roots = (run_ours if method == "ours" else run_datasketch)(texts, cfg)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    scores = pair_scores(roots, family)
    kinds = frame["kind"].to_list()
    by_rate = {}
    root_of_family = {f: roots[i] for i, (f, k) in enumerate(zip(family, kinds)) if k == "original"}
    for i, kind in enumerate(kinds):
        if kind.startswith("copy") and family[i] in root_of_family:
            rate = kind.split()[1]
            found, total = by_rate.get(rate, (0, 0))
            by_rate[rate] = (found + int(roots[i] == root_of_family[family[i]]), total + 1)
    print(json.dumps({"method": method, "docs": len(texts), "seconds": seconds, "cpu_seconds": cpu_seconds, **scores,
                      "copies_found_by_edit_rate": by_rate,
                      "rss_after_load_mib": rss_before, "peak_rss_mib": peak_rss_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000], help="corpus sizes (documents)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the datasketch baseline (default: yes)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per method; the median is reported")
    parser.add_argument("--cache", type=Path, help="keep generated corpora in this folder and reuse them")
    parser.add_argument("--ngram", type=int, help="override dedup.ngram")
    parser.add_argument("--threshold", type=float, help="override dedup.threshold")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "CORPUS", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    overrides = {k: v for k, v in (("ngram", args.ngram), ("threshold", args.threshold)) if v is not None}
    cfg = DedupSettings(**overrides)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {platform.python_version()} "
          f"settings: shingle={cfg.shingle} ngram={cfg.ngram} num_perm={cfg.num_perm} bands={cfg.bands} "
          f"rows={cfg.num_perm // cfg.bands} threshold={cfg.threshold} seed={args.seed}", flush=True)
    methods = ["ours"] + (["datasketch"] if args.baseline else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for n in args.docs:
            start = time.perf_counter()
            corpus = folder / f"near_duplicates_{n}_seed{args.seed}.parquet"
            if not corpus.exists():
                bench = near_duplicate_benchmark(n, seed=args.seed)
                pl.DataFrame({"text": bench.texts, "family": bench.family, "kind": bench.kind}).write_parquet(corpus)
                del bench
            frame = pl.read_parquet(corpus)
            true_pairs = pair_scores(frame["family"].to_numpy(), frame["family"].to_numpy())["true_pairs"]
            print(f"# {n} documents, mean {frame['text'].str.len_chars().mean():.0f} characters, {true_pairs} true "
                  f"pairs; generated or read in {time.perf_counter() - start:.0f} s", flush=True)
            del frame
            results = {}
            for _ in range(args.repeat):
                for method in methods:
                    out = subprocess.run([sys.executable, __file__, "--worker", method, str(corpus),
                                          cfg.model_dump_json()], capture_output=True, text=True, check=True)
                    run = json.loads(out.stdout.strip().splitlines()[-1])
                    print("  " + json.dumps(run), flush=True)
                    results.setdefault(method, []).append(run)
            print(f"| docs | method | precision | recall | F1 | wall s (median of {args.repeat}) | docs/s | CPU s | "
                  "peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|")
            for method, runs in results.items():
                seconds = statistics.median(r["seconds"] for r in runs)
                cpu = statistics.median(r["cpu_seconds"] for r in runs)
                last = runs[-1]
                print(f"| {n:,} | {method} | {last['precision']:.4f} | {last['recall']:.4f} | {last['f1']:.4f} | "
                      f"{seconds:.2f} | {n / seconds:,.0f} | {cpu:.2f} | {max(r['peak_rss_mib'] for r in runs):,.0f} |")
            if len(results) == 2:
                ours = statistics.median(r["seconds"] for r in results["ours"])
                base = statistics.median(r["seconds"] for r in results["datasketch"])
                print(f"speed-up: {base / ours:.1f}x; F1 difference: "
                      f"{results['ours'][-1]['f1'] - results['datasketch'][-1]['f1']:+.4f}", flush=True)


if __name__ == "__main__":
    main()
