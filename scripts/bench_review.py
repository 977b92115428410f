"""Labels needed to reach a given label accuracy: the review queue's order and routing against random order.

The records of a data root that carry a label (folder/column; the sample's 144 tickets) go through the
library stages (collection, cleaning, dedup); their labels are hidden and become the truth that simulated
annotators of known accuracy answer from. Each round, `labeled_corpus`'s own labeling (`apply_labels`, with
zero-shot on label names, then the logistic regression once 50 human labels exist, as in the pipeline) puts
every record without a human label in the review queue (`review_threshold: 1.0`), and a batch of items is
asked:

- priority: the queue's top items, each of its `annotators_needed` and to its `suggested_annotators`
  (labeling/priority.py, labeling/routing.py);
- random-1: random items from the queue, one random annotator each;
- random-3: random items, three random annotators each;
- priority-min2: the same with `labeling.review.min_annotators: 2` (no item rests on one person);
- priority-unrouted: the queue's order and number of annotators, but random annotators (routing off).

After each round the dataset's labels are: the human or crowd label where there is one, else the model's.
Reported: annotations (labels given) until that accuracy first reaches each target, over several seeds.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_review.py [data_root] [--seeds 10] [--batch 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finetune_pipeline.cleaning import clean_corpus  # noqa: E402
from finetune_pipeline.dedup import deduplicate  # noqa: E402
from finetune_pipeline.embeddings import embed  # noqa: E402
from finetune_pipeline.labeling import apply_labels, label_set  # noqa: E402
from finetune_pipeline.labeling.zero_shot import (Predictions, classifier_probabilities, describe,  # noqa: E402
                                                  zero_shot_probabilities)
from finetune_pipeline.settings import Settings, load_settings  # noqa: E402
from finetune_pipeline.sources import collect_raw_corpus  # noqa: E402

TARGETS = (0.95, 0.96, 0.97, 0.98, 0.99)
STRATEGIES = ("priority", "priority-min2", "priority-unrouted", "random-1", "random-3")


def simulated_annotators(labels: list[str]) -> dict[str, np.ndarray]:
    """name -> confusion matrix P(answer | truth) (rows: truth). Four with uniform errors at accuracy 0.95,
    0.9, 0.85, 0.8, and `confused`, right on everything but the last two labels, which they call the first
    and the second label (on the sample: shipping -> billing, account_access -> technical_issue)."""
    k = len(labels)
    out = {}
    for name, acc in (("acc95", 0.95), ("acc90", 0.9), ("acc85", 0.85), ("acc80", 0.8)):
        out[name] = np.full((k, k), (1 - acc) / (k - 1)) + np.eye(k) * (acc - (1 - acc) / (k - 1))
    confused = np.eye(k)
    confused[k - 1] = np.eye(k)[0]
    confused[k - 2] = np.eye(k)[1]
    out["confused"] = confused
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", nargs="?", default=str(ROOT / "data"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10, help="items asked per round")
    parser.add_argument("--budget", type=int, default=400, help="annotations per run at most")
    args = parser.parse_args()
    root = Path(args.data_root).resolve()
    base = load_settings(root)
    with tempfile.TemporaryDirectory() as cache:
        corpus = collect_raw_corpus(root, base, cache_dir=Path(cache)).kept
    corpus = deduplicate(clean_corpus(corpus, base).kept, base).kept
    labels = label_set(corpus, base)
    corpus = corpus.filter(pl.col("label").is_in(labels))
    truth = dict(zip(corpus["record_id"], corpus["label"]))
    hidden = corpus.with_columns(pl.lit(None, pl.String).alias("label"), pl.lit(None, pl.String).alias("label_source"),
                                 pl.lit(None, pl.Float64).alias("label_confidence"))
    cfg = base.labeling
    started = time.perf_counter()
    vectors = embed(corpus["text"].to_list(), cfg.model, cfg.batch_size, cfg.max_length)
    by_text = dict(zip(corpus["text"].to_list(), vectors))
    names = embed([describe(label, {}) for label in labels], cfg.model, cfg.batch_size, cfg.max_length)
    embed_s = time.perf_counter() - started

    def labeler(texts, labels_, cfg_, train_texts, train_labels) -> Predictions:
        x = np.stack([by_text[t] for t in texts])
        if train_texts and len(set(train_labels)) >= 2:
            probs = classifier_probabilities(np.stack([by_text[t] for t in train_texts]), train_labels, labels_, x)
        else:
            probs = zero_shot_probabilities(x, names, cfg_.temperature)
        best = probs.argmax(axis=1)
        return Predictions([labels_[i] for i in best], [float(probs[n, i]) for n, i in enumerate(best)], "bench",
                           probs.tolist())

    annotators = simulated_annotators(labels)
    settings = Settings(labels=labels, labeling={"review_threshold": 1.0, "audit_share": 0.0,
                                                 "review": {"annotators": list(annotators)}})
    print(f"data root: {root}; {len(truth)} records with a label, labels {labels}")
    print(f"annotators: acc95 acc90 acc85 acc80 (uniform errors), confused ({labels[-1]} -> {labels[0]}, "
          f"{labels[-2]} -> {labels[1]}); batch {args.batch} items per round; budget {args.budget} annotations; "
          f"seeds {args.seeds}; embeddings {embed_s:.1f} s")
    results: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
    for strategy in STRATEGIES:
        for seed in range(args.seeds):
            chosen = settings.model_copy(update={"labeling": settings.labeling.model_copy(update={
                "review": settings.labeling.review.model_copy(update={"min_annotators": 2})})}) \
                if strategy == "priority-min2" else settings
            results[strategy].append(run(strategy, seed, hidden, truth, labels, chosen, labeler, annotators, args))
            print(f"  {strategy} seed {seed}: start {results[strategy][-1]['curve'][0][1]:.3f}, "
                  f"end {results[strategy][-1]['curve'][-1][1]:.3f} at {results[strategy][-1]['curve'][-1][0]} labels")
    wall = time.perf_counter() - started
    print(f"\nwall time {wall:.0f} s on {platform.machine()} ({platform.python_version()})\n")
    print("| order | start accuracy | " + " | ".join(f"labels to {t:.2f}" for t in TARGETS)
          + " | accuracy at 100 labels | at 200 | final accuracy (labels) |")
    print("|---|---|" + "---|" * len(TARGETS) + "---|---|---|")
    for strategy in STRATEGIES:
        runs = results[strategy]
        cells = []
        for target in TARGETS:
            reached = [first_reaching(r["curve"], target) for r in runs]
            hit = [n for n in reached if n is not None]
            cells.append(f"{statistics.median(hit):.0f} ({len(hit)}/{len(runs)})" if hit else f"not reached (0/{len(runs)})")
        at100 = statistics.mean(accuracy_at(r["curve"], 100) for r in runs)
        at200 = statistics.mean(accuracy_at(r["curve"], 200) for r in runs)
        final = statistics.mean(r["curve"][-1][1] for r in runs)
        used = statistics.mean(r["curve"][-1][0] for r in runs)
        print(f"| {strategy} | {runs[0]['curve'][0][1]:.3f} | " + " | ".join(cells)
              + f" | {at100:.3f} | {at200:.3f} | {final:.3f} ({used:.0f}) |")
    print("\ncells: median annotations over the seeds that reached the target (seeds that reached it / seeds)")


def run(strategy, seed, hidden, truth, labels, settings, labeler, annotators, args) -> dict:
    rng = np.random.default_rng(seed)
    names = list(annotators)
    index = {label: i for i, label in enumerate(labels)}
    rows: list[dict] = []
    curve = []
    while True:
        frame = pl.DataFrame(rows, schema={"record_id": pl.String, "annotator": pl.String, "label": pl.String,
                                           "source_file": pl.String})
        result = apply_labels(hidden, settings, frame, labeler=labeler)
        current = dict(zip(result.kept["record_id"], result.kept["label"]))
        current.update(dict(zip(result.review_queue["record_id"], result.review_queue["label"])))
        curve.append((len(rows), float(np.mean([current.get(r) == t for r, t in truth.items()]))))
        queue = result.review_queue
        if queue.is_empty() or len(rows) >= args.budget:
            return {"curve": curve}
        if strategy.startswith("priority"):
            batch = queue  # highest priority first; items with no one left to ask are passed over
        else:
            batch = queue.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30)))
        asked_before = {(r["record_id"], r["annotator"]) for r in rows}
        given, items = len(rows), 0
        for item in batch.iter_rows(named=True):
            if items == args.batch:
                break
            free = [a for a in names if (item["record_id"], a) not in asked_before]
            if strategy in ("priority", "priority-min2"):
                who = json.loads(item["suggested_annotators"])
            elif strategy == "priority-unrouted":
                who = list(rng.choice(free, size=min(item["annotators_needed"], len(free)), replace=False))
            else:
                k = 1 if strategy == "random-1" else 3
                who = list(rng.choice(free, size=min(k, len(free)), replace=False))
            if not who:
                continue
            items += 1
            true = index[truth[item["record_id"]]]
            for annotator in who:
                answer = labels[int(rng.choice(len(labels), p=annotators[annotator][true]))]
                rows.append({"record_id": item["record_id"], "annotator": str(annotator), "label": answer,
                             "source_file": "bench"})
        if len(rows) == given:  # no one left to ask about anything in the queue
            return {"curve": curve}


def first_reaching(curve, target) -> int | None:
    return next((n for n, acc in curve if acc >= target - 1e-9), None)


def accuracy_at(curve, labels) -> float:
    return [acc for n, acc in curve if n <= labels][-1]


if __name__ == "__main__":
    main()
