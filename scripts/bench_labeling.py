r"""The labeling stage on the streaming path with a corpus its model labels: the step process's peak resident memory
(VmHWM), wall time and the labeled dataset's content digest, for
- texts: the built-in labeler given the texts of the records it labels (what the stage did before `labeling.rows`:
  the texts read into the step, embedded in one call, by the encoder's own process from 4,096 texts);
- rows:  the built-in labeler as the stage runs it now (`labeling.rows`): the records named by their row, their
  vectors made shard by shard into a spill folder, scored 65,536 at a time;
- ray:   the same on `backend: ray`, the vectors made by Ray tasks that read their shard's texts themselves.

  .venv/bin/python scripts/bench_labeling.py --root /tmp/s14/s1m/data --unlabeled 0.5 --out /tmp/labeling1m

The input is the root's stored `deduplicated_corpus` (scripts/bench_streaming.py writes it: `--to-stage
deduplicated_corpus`) with the labels of `--unlabeled` of its records removed (every record whose row number
modulo 100 is below that share times 100), written once under --out. `--model tiny` (the default) embeds with a
2-layer, 32-wide random BERT (the test suite's, MiniLM's tokenizer): the step's memory does not depend on the
encoder's size, and MiniLM embeds about 150 texts a second on 2 cores (a million would take two hours);
`--model minilm` for the shipped one. With the tiny encoder `labeling.review_threshold` is 0 (its confidences are
all low: every record would go to review); the audit sample's texts are read back as the stage does. Each path runs
in a process of its own; the Ray path on a cluster this script starts on this machine (bench_ray_cluster.py's).
Prints one JSON line per path, then whether the datasets agree (texts and rows embed in other batches, so their
confidences may differ in the last decimal: compare rows with ray).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_ray_cluster import parse_or_run_child, peak_mib, run_path  # noqa: E402

LABEL_COLUMNS = ("label", "label_source", "label_confidence")


def prepare(root: Path, out: Path, share: float, model: str) -> tuple[Path, str | None]:
    """The input dataset (labels removed from `share` of the records) and the encoder's path, made once."""
    import polars as pl

    from finetune_pipeline import shards
    from finetune_pipeline.layout import DataRoot

    source = shards.open_dataset(DataRoot(root).asset_dataset("deduplicated_corpus"))
    target = out / f"input-{share:g}"
    if not shards.is_dataset(target):
        rows = int(source.bounds[1] - source.bounds[0]) if source.rows else 50_000
        offset = 0
        with shards.DatasetWriter(target, shard_rows=rows) as writer:
            for shard in source.iter_shards():
                removed = (pl.int_range(offset, offset + shard.height) % 100) < round(share * 100)
                writer.write(shard.with_columns(pl.when(removed).then(None).otherwise(pl.col(c)).alias(c)
                                                for c in LABEL_COLUMNS))
                offset += shard.height
    encoder = None
    if model == "tiny":
        from finetune_pipeline_tests.conftest import write_tiny_bert

        encoder = out / "tiny-encoder"
        if not (encoder / "config.json").exists():
            write_tiny_bert(encoder)
        encoder = str(encoder)
    return target, encoder


def child(args) -> None:
    from finetune_pipeline import shards, streaming
    from finetune_pipeline.labeling.annotations import load_annotations
    from finetune_pipeline.labeling.zero_shot import predict_labels
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.settings import load_settings

    execution = {"backend": "ray", "ray_address": args.address} if args.child == "ray" else {}
    # the tiny encoder has 64 positions
    labeling = {"model": args.encoder, "review_threshold": 0.0, "max_length": 64} if args.encoder else {}
    # no domain filter: it ran in dedup (and the soak roots keep no examples folder)
    settings = load_settings(Path(args.root), overrides=json.dumps({
        "labeling": labeling, "execution": execution, "domain": {"description": None, "examples_dir": None}}))
    if args.child == "ray":
        from finetune_pipeline.execution import connect

        connect(settings.execution)
    dataset = shards.open_dataset(args.input)
    annotations, problems = load_annotations(DataRoot(Path(args.root)).annotations)
    labeler = partial(predict_labels, execution=settings.execution) if args.child == "texts" else None
    out = Path(args.out) / args.child
    ready = time.perf_counter()
    with shards.DatasetWriter(out / "kept", shard_rows=settings.execution.shard_rows) as kept, \
            shards.DatasetWriter(out / "rejects", shard_rows=settings.execution.shard_rows) as rejected:
        stats, review = streaming.label_dataset(dataset, settings, kept, rejected, annotations, problems,
                                                labeler=labeler)
    wall = time.perf_counter() - ready
    manifest = shards.read_manifest(out / "kept")
    print(json.dumps({"path": args.child, "records": dataset.rows, "model_labeled": stats.model.predicted,
                      "review": review.height, "wall_s": round(wall, 1), "records_per_s": round(dataset.rows / wall),
                      "peak_mib": round(peak_mib()), "digest": manifest.digest[:16]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="a data root with a stored deduplicated_corpus")
    parser.add_argument("--out", required=True, help="where the input copy and each path's output go")
    parser.add_argument("--unlabeled", type=float, default=0.5, help="share of the records without a label")
    parser.add_argument("--model", choices=["tiny", "minilm"], default="tiny")
    parser.add_argument("--paths", default="texts,rows,ray")
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", help=argparse.SUPPRESS)
    args = parse_or_run_child(parser, child)
    if args is None:
        return 0
    print(f"{platform.node()}, {os.cpu_count()} cores", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset, encoder = prepare(Path(args.root), out, args.unlabeled, args.model)
    argv = ["--root", args.root, "--out", args.out, "--input", str(dataset), *(["--encoder", encoder] if encoder else [])]
    rows = []
    for path in args.paths.split(","):
        rows.append(run_path(__file__, path, argv, args.ray_workers, "labeling"))
        print(json.dumps(rows[-1]), flush=True)
    digests = {r["path"]: r["digest"] for r in rows}
    if "rows" in digests and "ray" in digests:
        print("same dataset locally and on Ray (content digest):", digests["rows"] == digests["ray"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
