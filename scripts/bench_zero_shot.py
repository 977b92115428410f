"""Zero-shot labeling accuracy on a data root whose records already carry labels (folder/column).

Runs the library stages (collection, cleaning, dedup) on the data root, hides the labels, labels every
record zero-shot with the labeling settings of its finetune.yaml, and compares. Also reports the share of
records at or above `review_threshold` (those go to training; the rest to review) and, for reference, a
logistic regression on the same embeddings in 5-fold cross-validation (what replaces zero-shot once
enough human labels exist).

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_zero_shot.py [data_root] [--descriptions names|config]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, f1_score
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finetune_pipeline.cleaning import clean_corpus  # noqa: E402
from finetune_pipeline.dedup import deduplicate  # noqa: E402
from finetune_pipeline.labeling import label_set  # noqa: E402
from finetune_pipeline.embeddings import embed  # noqa: E402
from finetune_pipeline.labeling.zero_shot import (classifier_probabilities, describe, encoder_name,  # noqa: E402
                                                  zero_shot_probabilities)
from finetune_pipeline.settings import load_settings  # noqa: E402
from finetune_pipeline.sources import collect_raw_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", nargs="?", default=str(ROOT / "data"))
    parser.add_argument("--descriptions", choices=["names", "config"], default="config",
                        help="label descriptions: the label names only, or those in finetune.yaml (default)")
    args = parser.parse_args()
    root = Path(args.data_root).resolve()
    settings = load_settings(root)
    cfg = settings.labeling
    descriptions = cfg.label_descriptions if args.descriptions == "config" else {}

    with tempfile.TemporaryDirectory() as cache:
        corpus = collect_raw_corpus(root, settings, cache_dir=Path(cache)).kept
    corpus = deduplicate(clean_corpus(corpus, settings).kept, settings).kept
    labels = label_set(corpus, settings)
    gold = corpus.filter(corpus["label"].is_in(labels))
    texts, truth = gold["text"].to_list(), gold["label"].to_list()

    started = time.perf_counter()
    text_emb = embed(texts, cfg.model, cfg.batch_size, cfg.max_length)
    label_texts = [describe(label, descriptions) for label in labels]
    probs = zero_shot_probabilities(text_emb, embed(label_texts, cfg.model, cfg.batch_size, cfg.max_length), cfg.temperature)
    seconds = time.perf_counter() - started
    pred = [labels[i] for i in probs.argmax(1)]
    conf = probs.max(1)

    print(f"data root: {root}\nrecords with a label (labels hidden): {len(texts)}; labels: {labels}")
    print(f"model: {encoder_name(cfg.model)}; temperature {cfg.temperature}; descriptions: {args.descriptions}")
    for label, text in zip(labels, label_texts):
        print(f"  {label}: {text!r}")
    print(f"embedding + scoring wall time: {seconds:.1f} s ({platform.machine()}, {'cuda' if torch.cuda.is_available() else 'cpu'})")
    print(f"\nzero-shot accuracy {accuracy_score(truth, pred):.3f}, "
          f"macro-F1 {f1_score(truth, pred, average='macro', labels=labels, zero_division=0):.3f}")
    print(classification_report(truth, pred, labels=labels, digits=3, zero_division=0))
    for threshold in sorted({0.4, 0.5, 0.6, 0.7, 0.8, cfg.review_threshold}):
        keep = conf >= threshold
        acc = accuracy_score(np.array(truth)[keep], np.array(pred)[keep]) if keep.any() else float("nan")
        mark = "  <- review_threshold" if threshold == cfg.review_threshold else ""
        print(f"confidence >= {threshold:.2f}: coverage {keep.mean():.3f} ({keep.sum()}/{len(keep)}), "
              f"accuracy on covered {acc:.3f}{mark}")
    print(f"mean confidence {conf.mean():.3f}; correct {conf[np.array(pred) == np.array(truth)].mean():.3f}, "
          f"wrong {conf[np.array(pred) != np.array(truth)].mean() if (np.array(pred) != np.array(truth)).any() else float('nan'):.3f}")

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=cfg.seed)
    cv_pred = np.empty(len(truth), dtype=object)
    for train, test in folds.split(text_emb, truth):
        p = classifier_probabilities(text_emb[train], [truth[i] for i in train], labels, text_emb[test], cfg.seed)
        cv_pred[test] = [labels[i] for i in p.argmax(1)]
    print(f"\nlogistic regression on the embeddings, 5-fold CV: accuracy {accuracy_score(truth, cv_pred):.3f}, "
          f"macro-F1 {f1_score(truth, list(cv_pred), average='macro', labels=labels, zero_division=0):.3f}")


if __name__ == "__main__":
    main()
