"""Run the approach comparison on a data root's exported splits, without dagster, and print the table.

    python scripts/compare_approaches.py [DATA_DIR] [--approaches lora full feature] [--folds K] [--lora-search]

Reads DATA_DIR/exports/splits/*.jsonl (run `make run`, or materialize `dataset_splits`, first) and
DATA_DIR/finetune.yaml; writes the models under DATA_DIR/models/comparison/ and
DATA_DIR/exports/approach_comparison.{json,md,png}, the same as the `approach_comparison` asset
(cross-validated as finetune.yaml's splits settings say: k_folds, or below cv_below_records; --folds K
forces K folds, --folds 0 none; --lora-search turns training.lora_search on).
"""

import argparse
import platform
import time

import polars as pl
import torch

from finetune_pipeline.layout import DataRoot
from finetune_pipeline.reporting import comparison_markdown, cross_validation_markdown
from finetune_pipeline.settings import load_settings
from finetune_pipeline.splits import cross_validation_folds
from finetune_pipeline.tasks import task_for
from finetune_pipeline.training.classify import read_splits
from finetune_pipeline.training.compare import compare_approaches, write_comparison
from finetune_pipeline.training.cross_validation import fold_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("--approaches", nargs="+", choices=["lora", "full", "feature"])
    parser.add_argument("--folds", type=int, help="cross-validate with this many folds (0: no cross-validation)")
    parser.add_argument("--lora-search", action="store_true", help="choose LoRA's settings on the folds first")
    parser.add_argument("--verbose", action="store_true", help="print the training log")
    args = parser.parse_args()
    root = DataRoot.resolve(args.data_dir)
    settings = load_settings(root)
    if args.folds is not None:
        settings.splits = settings.splits.model_copy(update={"k_folds": args.folds, "cv_below_records": 0})
    if args.lora_search:
        settings.training.lora_search.enabled = True
    _, labels = read_splits(root.splits_export)
    labels = list(settings.labels) or labels
    frame = pl.concat([pl.read_ndjson(root.splits_export / f"{name}.jsonl", infer_schema_length=None)
                       for name in ("train", "validation", "test")], how="diagonal_relaxed")
    task = task_for(settings)
    folds = fold_splits(frame, cross_validation_folds(frame, settings.splits, task), task)
    started = time.perf_counter()
    log = (lambda m: print(f"[{time.perf_counter() - started:7.1f}s] {m}", flush=True)) if args.verbose \
        else (lambda m: None)
    result = compare_approaches(task.training_splits(frame), labels, settings.training, root.comparison_models,
                                args.approaches, log=log, folds=folds)
    total = time.perf_counter() - started
    write_comparison(result, root.exports)
    print(f"splits: " + ", ".join(f"{k} {v}" for k, v in result["split_sizes"].items()))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(comparison_markdown(result))
    if result.get("cross_validation"):
        print("\ncross-validated:\n" + cross_validation_markdown(result))
        print(f"cross-validation wall time: {result['cross_validation']['wall_time_s']:.1f} s")
    print(f"total wall time: {total:.1f} s")


if __name__ == "__main__":
    main()
