"""How many old records change split when new ones arrive: `splits.stratified_group_split` (groups taken in
the order of a seeded hash of their id, `group_ranks`) against the seeded shuffle of the sorted group ids it
replaced, on the same random corpora.

    PYTHONPATH=. .venv/bin/python scripts/bench_split_stability.py --corpora 300 --seed 0
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

import numpy as np
import polars as pl

from finetune_pipeline import splits
from finetune_pipeline.settings import SplitSettings

SCHEMA = {"record_id": pl.String, "label": pl.String, "group_id": pl.String, "augmented_from": pl.String}


def random_corpus(rng: np.random.Generator) -> pl.DataFrame:
    """1-4 labels, 5-40 groups per label, 1-3 records per group."""
    rows = []
    for label in range(int(rng.integers(1, 5))):
        for group in range(int(rng.integers(5, 41))):
            for member in range(int(rng.integers(1, 4))):
                rows.append({"record_id": f"L{label}-g{group}-{member}", "label": f"l{label}",
                             "group_id": f"L{label}-g{group}", "augmented_from": None})
    return pl.DataFrame(rows, schema=SCHEMA)


def shuffled_ranks(group_ids: pl.Series, seed: int) -> np.ndarray:
    """The order used before: a seeded permutation of the stratum's sorted group ids (depends on which
    other groups exist, so one new id reshuffles the stratum)."""
    return np.random.default_rng(seed).permutation(len(group_ids)).astype(np.uint64)


def moved_per_new(corpus: pl.DataFrame, added: pl.DataFrame, cfg: SplitSettings) -> tuple[float, float]:
    """Old records moved per new record, and the largest gap between a split's share of the grown corpus
    and its configured fraction."""
    before = splits.stratified_group_split(corpus, cfg)
    after = splits.stratified_group_split(pl.concat([corpus, added]), cfg)
    moves = splits.split_moves(after, before)
    shares = dict(after.group_by("split").len().with_columns(pl.col("len") / after.height).rows())
    gap = max(abs(shares.get(name, 0.0) - getattr(cfg, name)) for name in ("train", "validation", "test"))
    return (moves["old_records"] - moves["kept_split"]) / added.height, gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results: dict[str, list[tuple[float, float]]] = {"hash rank (now)": [], "seeded shuffle (before)": []}
    tried = 0
    while len(results["hash rank (now)"]) < args.corpora:
        tried += 1
        corpus = random_corpus(rng)
        labels = sorted(set(corpus["label"]))
        added = pl.DataFrame([{"record_id": f"new-{i}", "label": labels[int(rng.integers(len(labels)))],
                               "group_id": f"new-{i}", "augmented_from": None}
                              for i in range(int(rng.integers(1, 4)))], schema=SCHEMA)
        cfg = SplitSettings(seed=int(rng.integers(0, 2**16)))
        try:
            now = moved_per_new(corpus, added, cfg)
            with mock.patch.object(splits, "group_ranks", shuffled_ranks):
                before = moved_per_new(corpus, added, cfg)
        except splits.SplitError:
            continue
        results["hash rank (now)"].append(now)
        results["seeded shuffle (before)"].append(before)
    print(f"{args.corpora} corpora ({tried - args.corpora} skipped: a label too small to split), 1-3 new records each")
    print("| group order | old records moved per new record: mean | median | max | largest split-share gap: mean | max |")
    print("|---|---|---|---|---|---|")
    for name, pairs in results.items():
        moved, gaps = [m for m, _ in pairs], [g for _, g in pairs]
        print(f"| {name} | {statistics.mean(moved):.2f} | {statistics.median(moved):.2f} | {max(moved):.1f} "
              f"| {statistics.mean(gaps):.3f} | {max(gaps):.3f} |")


if __name__ == "__main__":
    main()
