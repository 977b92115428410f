r"""Near-duplicate benchmark: quality, speed and memory of the MinHash + LSH stage, against datasketch.

Run from the repository root (the `bench` extra installs datasketch):

  .venv/bin/python scripts/bench_dedup.py --docs 100000 --repeat 3          # ours and datasketch
  .venv/bin/python scripts/bench_dedup.py --docs 10000 100000 1000000 --no-baseline --repeat 2 --cache /tmp/corpora

For each size it generates the synthetic corpus (`finetune_pipeline.dedup.synthetic`: originals, copies
edited at known rates, related hard negatives; seeded) into a temporary Parquet file, then runs each
method in a fresh Python process that reads the texts and times only the near-duplicate step (shingles,
signatures, LSH, verification, clusters). It prints pairwise precision, recall and F1, documents per
second and the peak resident memory (VmHWM) of that process, and with --repeat > 1 the median time.

With --real it runs the short-real-text case instead: real texts of 50-300 characters from this Debian
machine (every package synopsis of `apt-cache dumpavail` and the sentences of the README, NEWS, TODO and
FAQ files under /usr/share/doc; case-folded exact repeats dropped), plus planted families: --families
originals drawn at random, each with one or two copies made by word edits at a rate drawn from 3-10 %
(max(1, round(rate x words)) edits, each a substitution, deletion, insertion or swap of neighbours;
substituted and inserted words drawn from the corpus's own word frequencies). It prints, for the
settings of today's default and with `short_text_words` off (the word 3-gram pass alone):
- recall: planted copies in their original's cluster, over all planted copies;
- distinct texts merged: real texts in a cluster whose first text is another real text, split into
  those whose two texts name different things (dedup/identifiers.py: a false merge) and
  those that differ only in ordinary words (the corpus's own near-identical texts: "X -- libs" and
  "X -- tools"; reported, with examples, for the reader to judge);
- the wall and CPU time of the near-duplicate step (same process, runs interleaved, median of --repeat).

  .venv/bin/python scripts/bench_dedup.py --real --repeat 3

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


REAL_CHARS = (50, 300)


def debian_texts(low: int = REAL_CHARS[0], high: int = REAL_CHARS[1]) -> list[str]:
    """Real short texts of this machine: package synopses and /usr/share/doc README/NEWS/TODO/FAQ sentences."""
    import gzip
    import re

    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    texts = [line[13:] for line in dump.splitlines() if line.startswith("Description: ")]
    sentence = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
    for path in sorted(Path("/usr/share/doc").glob("*/*")):
        if not re.match(r"(README|NEWS|TODO|FAQ)", path.name) or not path.is_file():
            continue
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for paragraph in re.split(r"\n\s*\n", raw.decode("utf-8", "replace")):
            texts.extend(sentence.split(" ".join(paragraph.split())))
    seen, out = set(), []
    for text in (" ".join(t.split()) for t in texts):
        key = text.lower()
        if low <= len(text) <= high and sum(c.isalpha() for c in text) >= 0.7 * len(text) and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def edited_copy(words: list[str], rate: float, rng, vocabulary: list[str], weights: list[int]) -> str:
    """`words` with max(1, round(rate x len)) edits: substitution, deletion, insertion or neighbour swap."""
    words = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        op = rng.choice(("substitute", "delete", "insert", "swap"))
        if op == "substitute":
            words[rng.randrange(len(words))] = rng.choices(vocabulary, weights)[0]
        elif op == "delete" and len(words) > 2:
            del words[rng.randrange(len(words))]
        elif op == "insert":
            words.insert(rng.randrange(len(words) + 1), rng.choices(vocabulary, weights)[0])
        elif op == "swap" and len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def real_case(families: int, seed: int, repeat: int) -> None:
    """Recall, false merges and time on real short texts with planted edited copies (see the docstring)."""
    import random
    from collections import Counter

    from finetune_pipeline.dedup.identifiers import names_differ
    from finetune_pipeline.dedup.minhash import near_duplicate_clusters

    start = time.perf_counter()
    texts = debian_texts()
    rng = random.Random(seed)
    counts = Counter(w for t in texts for w in t.split())
    vocabulary, weights = list(counts), list(counts.values())
    rows, source = list(texts), list(range(len(texts)))
    for original in rng.sample(range(len(texts)), families):
        for _ in range(rng.choice((1, 2))):
            rows.append(edited_copy(texts[original].split(), rng.uniform(0.03, 0.10), rng, vocabulary, weights))
            source.append(original)
    source = np.array(source)
    copies = np.arange(len(texts), len(rows))
    series = pl.Series(rows, dtype=pl.String)
    print(f"# {len(texts):,} real texts of {REAL_CHARS[0]}-{REAL_CHARS[1]} characters (mean "
          f"{np.mean([len(t) for t in texts]):.0f} characters, {np.mean([len(t.split()) for t in texts]):.1f} "
          f"words), {families:,} planted families, {len(copies):,} copies; built in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    variants = {"short_text_words=0 (word 3-grams only)": DedupSettings(short_text_words=0),
                f"default (short_text_words={DedupSettings().short_text_words})": DedupSettings()}
    seconds = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    result = {}
    for _ in range(repeat):
        for name, cfg in variants.items():
            began, cpu_began = time.perf_counter(), time.process_time()
            result[name] = near_duplicate_clusters(series, cfg)
            seconds[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - cpu_began)
    print("| settings | recall (copies found) | distinct texts merged | of which name different things | "
          f"wall s (median of {repeat}) | CPU s (median) |\n|---|---|---|---|---|---|")
    for name, near in result.items():
        root = near.root
        found = root[copies] == root[source[copies]]
        # Two real texts in one cluster: an original whose cluster's first text is another original (copies
        # come after every original, so a cluster holding an original starts with one).
        merged = np.flatnonzero(root[:len(texts)] != np.arange(len(texts)))
        pairs = np.stack([merged, root[merged]], axis=1)
        differ = names_differ(pl.Series(texts, dtype=pl.String), pairs) if len(pairs) else np.zeros(0, bool)
        print(f"| {name} | {found.mean():.4f} ({found.sum():,} of {len(copies):,}) | {len(pairs):,} | "
              f"{int(differ.sum()):,} | {statistics.median(seconds[name]):.2f} | {statistics.median(cpu[name]):.2f} |")
        for i, j in pairs[differ][:3]:
            print(f"  false merge: {texts[i]!r} ~ {texts[j]!r}")
        for i, j in pairs[~differ][:3]:
            print(f"  near-identical real texts merged: {texts[i]!r} ~ {texts[j]!r}")
        for k in copies[~found][:3]:
            print(f"  missed copy: {texts[source[k]]!r} -> {rows[k]!r}")


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
    parser.add_argument("--short-text-words", type=int, help="override dedup.short_text_words (0: off)")
    parser.add_argument("--real", action="store_true", help="the short-real-text case (see above)")
    parser.add_argument("--families", type=int, default=2000, help="--real: planted families")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "CORPUS", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    if args.real:
        print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {platform.python_version()} seed={args.seed}")
        return real_case(args.families, args.seed, args.repeat)

    overrides = {k: v for k, v in (("ngram", args.ngram), ("threshold", args.threshold),
                                   ("short_text_words", args.short_text_words)) if v is not None}
    cfg = DedupSettings(**overrides)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {platform.python_version()} "
          f"settings: shingle={cfg.shingle} ngram={cfg.ngram} num_perm={cfg.num_perm} bands={cfg.bands} "
          f"rows={cfg.num_perm // cfg.bands} threshold={cfg.threshold} short_text_words={cfg.short_text_words} "
          f"seed={args.seed}", flush=True)
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
