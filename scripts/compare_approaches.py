"""Run the approach comparison on a data root's exported splits, without dagster, and print the table.

    python scripts/compare_approaches.py [DATA_DIR] [--approaches lora full feature]

Reads DATA_DIR/exports/splits/*.jsonl (run `make run`, or materialize `dataset_splits`, first) and
DATA_DIR/finetune.yaml; writes the models under DATA_DIR/models/comparison/ and
DATA_DIR/exports/approach_comparison.{json,md,png}, the same as the `approach_comparison` asset.
"""

import argparse
import platform
import time

import torch

from finetune_pipeline.layout import DataRoot
from finetune_pipeline.reporting import comparison_markdown
from finetune_pipeline.settings import load_settings
from finetune_pipeline.training.classify import read_splits
from finetune_pipeline.training.compare import compare_approaches, write_comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("--approaches", nargs="+", choices=["lora", "full", "feature"])
    args = parser.parse_args()
    root = DataRoot.resolve(args.data_dir)
    settings = load_settings(root)
    splits, labels = read_splits(root.splits_export)
    labels = list(settings.labels) or labels
    started = time.perf_counter()
    result = compare_approaches(splits, labels, settings.training, root.comparison_models,
                                args.approaches, log=lambda m: None)
    total = time.perf_counter() - started
    write_comparison(result, root.exports)
    print(f"splits: " + ", ".join(f"{k} {v}" for k, v in result["split_sizes"].items()))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(comparison_markdown(result))
    print(f"total wall time: {total:.1f} s")


if __name__ == "__main__":
    main()
