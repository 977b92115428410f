"""Idempotence: the same inputs give the same record ids, splits and byte-identical exports, whether the
second run starts from scratch (another copy of the data root) or from the first run's parse cache."""

import hashlib

import polars as pl

from finetune_pipeline import exports
from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.erasure import load_erasure_requests
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.labeling import apply_labels
from finetune_pipeline.labeling.annotations import load_annotations
from finetune_pipeline.settings import load_settings
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline.splits import assign_splits
from finetune_pipeline_tests.conftest import copy_sample_data


def _run(root):
    """The library stages the assets call, in order, on one data root; the splits and the exported files."""
    settings = load_settings(root)
    corpus = collect_raw_corpus(root, settings, cache_dir=root / ".pipeline" / "parse_cache").kept
    corpus = clean_corpus(corpus, settings, load_erasure_requests(root)).kept
    corpus = deduplicate(corpus, settings).kept
    annotations, problems = load_annotations(root / "annotations")
    corpus = apply_labels(corpus, settings, annotations, problems).kept
    splits = assign_splits(augment_corpus(corpus, settings).kept, settings.splits)
    target = exports.export_splits(splits, root / "exports" / "splits")
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(target.glob("*.jsonl"))}
    return splits, digests


def test_same_inputs_same_ids_splits_and_exports(tmp_path):
    first_root = copy_sample_data(tmp_path / "one")
    first, first_files = _run(first_root)
    again, again_files = _run(first_root)  # second run: sources come from the parse cache
    other, other_files = _run(copy_sample_data(tmp_path / "two"))  # another copy, parsed from scratch

    key = ["record_id", "split", "group_id", "label", "content_sha256", "augmented_from"]
    for run in (again, other):
        assert run.select(key).sort("record_id").equals(first.select(key).sort("record_id"))
    assert first_files == again_files == other_files and len(first_files) == 3
    assert first.filter(pl.col("augmented_from").is_not_null()).height > 0  # augmentation is deterministic too
