r"""Semantic dedup at scale: the exact search (blocked matmul, O(n^2)) against the approximate nearest-neighbour
index (FAISS IVF-Flat or IVF-PQ, `dedup.semantic_search: ann`), wall time, peak memory and recall.

  .venv/bin/python scripts/bench_semantic_dedup.py --sizes 10000 20000 100000 1000000

The vectors are SYNTHETIC, not sentence embeddings: unit vectors of dimension --dim (384, MiniLM's) in topics
of about 100 (cosine about 0.5 within a topic, about 0 across), and every 10th vector followed by a planted
paraphrase at a known cosine drawn from [0.91, 0.99] (the threshold is 0.9). They are seeded, so each run sees
the same vectors; at 1M they take 1.5 GB.

For each size, each search runs in a fresh Python process that builds the vectors and times only the search
(`similar_pairs`, or `ann_pairs` with the settings' defaults or --ann's, e.g. --ann '{"semantic_ann_index": "pq"}':
its index build reported apart, its kind as `index`), and reports its
peak resident memory during the search (VmHWM, reset after the vectors were built: the vectors included, their
own size and the RSS before the search printed beside it).
Recall:
- planted: the planted pairs the search returns, over all planted pairs (sampled: those of the sampled rows);
- exact pairs: every pair at or above the threshold that the exact search finds, found by the index too;
  above --exact-max texts the exact search is O(n^2) (hours at 1M on 2 cores), so it runs for --queries
  random rows only (their pairs with every other row, and their highest cosine) and recall is computed over
  the pairs of those rows; its full time is then projected as measured x n / queries (printed as such);
- nearest: rows whose highest cosine from the index equals the exact one (1e-5).
Above --ann-max texts the index is built whole but queried only for the same sampled rows (its query time
projected as measured x n / queries, printed as such); a pair then counts as found only when the sampled row's
own query returns it (the full search also finds it from the partner's query), so that recall is a lower bound.
With --ray the index's queries also run on the workers of a local Ray cluster (the index shipped to them as
bytes, `ann_query_batch` per batch of rows), timed, and checked equal to the in-process answer.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLD = 0.9
_CHUNK = 65536


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def reset_peak_rss() -> None:
    """Start VmHWM again from the present RSS (Linux: 5 to /proc/self/clear_refs), so the peak is the search's."""
    Path("/proc/self/clear_refs").write_text("5")


def synthetic_vectors(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, planted pairs): see the module docstring. Built in chunks, float32 throughout."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(0, len(centres), n)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        part = centres[topic[start:stop]] + rng.standard_normal((stop - start, dim), dtype=np.float32) / np.sqrt(dim)
        x[start:stop] = part / np.linalg.norm(part, axis=1, keepdims=True)
    first = np.arange(0, n - 1, 10)
    for start in range(0, len(first), _CHUNK):
        rows = first[start:start + _CHUNK]
        cosine = rng.uniform(0.91, 0.99, len(rows)).astype(np.float32)[:, None]
        other = rng.standard_normal((len(rows), dim), dtype=np.float32)
        other -= (other * x[rows]).sum(1, keepdims=True) * x[rows]
        other /= np.linalg.norm(other, axis=1, keepdims=True)
        pair = cosine * x[rows] + np.sqrt(1 - cosine ** 2) * other
        x[rows + 1] = pair / np.linalg.norm(pair, axis=1, keepdims=True)
    return x, np.stack([first, first + 1], axis=1)


def pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """Each unordered pair as one int64 (i * n + j, i < j), sorted."""
    pairs = np.sort(pairs.astype(np.int64), axis=1)
    return np.unique(pairs[:, 0] * n + pairs[:, 1])


def sampled_exact(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the rows `rows`: their pairs with every other row at cosine >= THRESHOLD, and their highest cosine."""
    pairs, nearest = [], np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), 256):
        block = rows[start:start + 256]
        sims = x[block] @ x.T
        sims[np.arange(len(block)), block] = -1.0
        nearest[start:start + len(block)] = sims.max(axis=1)
        q, j = np.nonzero(sims >= THRESHOLD)
        pairs.append(np.stack([block[q], j], axis=1))
    return np.concatenate(pairs), nearest


def run_method(method: str, n: int, dim: int, workdir: Path, exact_max: int, queries: int, ann_max: int) -> dict:
    """In this (fresh) process: build the vectors, run one search, write its results under `workdir`."""
    from finetune_pipeline.dedup import semantic
    from finetune_pipeline.settings import DedupSettings

    x, planted = synthetic_vectors(n, dim)
    gc.collect()
    reset_peak_rss()
    out: dict = {"method": method, "n": n, "vectors_mib": round(x.nbytes / 2**20), "rss_before_mib": round(rss_mib())}
    if method == "ann" and n > ann_max:  # the index built whole, queried for the sampled rows only
        cfg = DedupSettings(semantic_search="ann", **json.loads(os.environ.get("BENCH_ANN_SETTINGS", "{}")))
        rows = np.sort(np.random.default_rng(1).choice(n, queries, replace=False))
        start = time.perf_counter()
        index = semantic.build_index(x, cfg)
        out["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        found, nearest = [], np.full(n, -1.0, dtype=np.float32)
        for first in range(0, len(rows), 1024):
            batch = rows[first:first + 1024]
            pairs, _, nearest[batch] = semantic.query_rows(index, x[batch], batch, cfg.semantic_ann_neighbours,
                                                           THRESHOLD, x)
            found.append(pairs)
        measured = time.perf_counter() - start
        out.update(sampled_queries=queries, sampled_query_s=measured, projected_query_s=measured * n / queries,
                   index=semantic.index_kind(n, cfg), lists=semantic.index_lists(n, cfg), probes=cfg.semantic_ann_probes,
                   neighbours=cfg.semantic_ann_neighbours)
        np.save(workdir / "ann_pairs.npy", np.concatenate(found))
        np.save(workdir / "ann_nearest.npy", nearest)
    elif method == "ann":
        timings = {}
        build = semantic.build_index

        def timed_build(*args, **kwargs):
            start = time.perf_counter()
            index = build(*args, **kwargs)
            timings["build_s"] = time.perf_counter() - start
            return index

        semantic.build_index = timed_build
        cfg = DedupSettings(semantic_search="ann", **json.loads(os.environ.get("BENCH_ANN_SETTINGS", "{}")))
        start = time.perf_counter()
        pairs, _, nearest = semantic.ann_pairs(x, THRESHOLD, cfg)
        out["seconds"] = time.perf_counter() - start
        out["build_s"] = timings["build_s"]
        out.update(index=semantic.index_kind(n, cfg), lists=semantic.index_lists(n, cfg),
                   probes=cfg.semantic_ann_probes, neighbours=cfg.semantic_ann_neighbours, pairs=len(pairs))
        np.save(workdir / "ann_pairs.npy", pairs)
        np.save(workdir / "ann_nearest.npy", nearest)
    elif method == "ann_ray":  # the queries on the workers of a local Ray cluster (started here)
        from finetune_pipeline.execution import connect
        from finetune_pipeline.settings import ExecutionSettings

        cfg = DedupSettings(semantic_search="ann", **json.loads(os.environ.get("BENCH_ANN_SETTINGS", "{}")))
        execution = ExecutionSettings(backend="ray")
        connect(execution)  # the cluster's start is not timed
        start = time.perf_counter()
        pairs, _, nearest = semantic.ann_pairs(x, THRESHOLD, cfg, execution)
        out["seconds"] = time.perf_counter() - start
        local_pairs, local_nearest = np.load(workdir / "ann_pairs.npy"), np.load(workdir / "ann_nearest.npy")
        out["same_as_in_process"] = bool(np.array_equal(pairs, local_pairs) and np.array_equal(nearest, local_nearest))
    elif n <= exact_max:
        start = time.perf_counter()
        pairs, _, nearest = semantic.similar_pairs(x, THRESHOLD)
        out["seconds"] = time.perf_counter() - start
        out["pairs"] = len(pairs)
        np.save(workdir / "exact_pairs.npy", pairs)
        np.save(workdir / "exact_nearest.npy", nearest)
    else:
        rows = np.sort(np.random.default_rng(1).choice(n, queries, replace=False))
        start = time.perf_counter()
        pairs, nearest = sampled_exact(x, rows)
        measured = time.perf_counter() - start
        out.update(sampled_queries=queries, sampled_seconds=measured, projected_seconds=measured * n / queries,
                   pairs_of_sampled_rows=len(pairs))
        np.save(workdir / "exact_rows.npy", rows)
        np.save(workdir / "exact_pairs.npy", pairs)
        np.save(workdir / "exact_nearest.npy", nearest)
    np.save(workdir / "planted.npy", planted)
    out["peak_rss_mib"] = round(peak_rss_mib())
    return out


def recall(n: int, workdir: Path) -> dict:
    """The index's pairs and `nearest` against the exact search's (all rows, or the sampled rows)."""
    ann, ann_nearest = np.load(workdir / "ann_pairs.npy"), np.load(workdir / "ann_nearest.npy")
    exact, exact_nearest = np.load(workdir / "exact_pairs.npy"), np.load(workdir / "exact_nearest.npy")
    planted = np.load(workdir / "planted.npy")
    if (workdir / "exact_rows.npy").exists():  # sampled: the planted pairs of the sampled rows
        planted = planted[np.isin(planted, np.load(workdir / "exact_rows.npy")).any(axis=1)]
    found = pair_keys(ann, n)
    result = {"planted_recall": float(np.isin(pair_keys(planted, n), found).mean())}
    if (workdir / "exact_rows.npy").exists():
        rows = np.load(workdir / "exact_rows.npy")
        ann_nearest = ann_nearest[rows]
        result["recall_over"] = f"the pairs of {len(rows):,} random rows"
    else:
        result["recall_over"] = "all pairs"
    wanted = pair_keys(exact, n)
    result.update(exact_pairs=len(wanted), exact_pairs_found=int(np.isin(wanted, found).sum()),
                  pair_recall=float(np.isin(wanted, found).mean()) if len(wanted) else 1.0,
                  false_pairs=int((~np.isin(found, pair_keys(exact, n))).sum()) if result["recall_over"] == "all pairs"
                  else None,
                  nearest_equal=float(np.isclose(ann_nearest, exact_nearest, atol=1e-5).mean()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--exact-max", type=int, default=100_000,
                        help="largest size searched exactly in full (above: --queries sampled rows)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--ann-max", type=int, default=10**9,
                        help="largest size whose every row queries the index (above: the index is built whole and "
                        "queried for the --queries sampled rows, its query time projected)")
    parser.add_argument("--ann", type=json.loads, default={},
                        help='index settings other than the defaults, e.g. \'{"semantic_ann_probes": 8}\'')
    parser.add_argument("--ray", action="store_true",
                        help="also run the index's queries on a local Ray cluster's workers (execution.backend: ray) "
                        "and check they give the in-process answer")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "N", "DIM", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, dim, workdir = args.child
        print(json.dumps(run_method(method, int(n), int(dim), Path(workdir), args.exact_max, args.queries,
                                    args.ann_max)))
        return
    import faiss

    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, faiss "
          f"{faiss.__version__}, load average at start {os.getloadavg()[0]:.1f}", flush=True)
    os.environ["BENCH_ANN_SETTINGS"] = json.dumps(args.ann)
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            row = {"n": n}
            for method in ("ann", "exact") + (("ann_ray",) if args.ray else ()):
                command = [sys.executable, __file__, "--child", method, str(n), str(args.dim), tmp,
                           "--exact-max", str(args.exact_max), "--queries", str(args.queries),
                           "--ann-max", str(args.ann_max)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                row[method] = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(recall(n, Path(tmp)))
            row["load_average_end"] = round(os.getloadavg()[0], 1)
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
