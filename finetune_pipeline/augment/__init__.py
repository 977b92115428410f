"""Augmentation stage: balance the training data without touching validation or test.

The split of the original records is decided first (the same deterministic function that
`dataset_splits` uses), and only training records are augmented. Each label is topped up to its target
(`target_count`, else `oversample_ratio` x the largest label) by, in order: paraphrases of its records,
synthetic examples from few-shot prompts (at most `synthetic_max_share` of the label's rows), and copies.
Generated rows carry `augmented_from`, `augmentation` and `augmentation_model`, and are never counted as
originals. A generator that fails (server down, bad model path) is reported in the stats and the gap is
filled by copies: augmentation never stops the run. Conversations (task: instruction) get prompt
paraphrases and new instruction/answer pairs instead, never copies (augment/instructions.py).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from finetune_pipeline.augment.generate import CandidateFilter, paraphrase_label, synthesize_label
from finetune_pipeline.augment.generators import GenerationError, TextGenerator, make_generator
from finetune_pipeline.augment.instructions import augment_conversations
from finetune_pipeline.augment.oversample import oversample
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.records import StageResult, StageStats, make_record_id, sha256_text
from finetune_pipeline.settings import Settings
from finetune_pipeline.splits import stratified_group_split
from finetune_pipeline.tasks import task_for

log = logging.getLogger(__name__)
STAGE = "augmented_corpus"


@dataclass
class AugmentStats(StageStats):
    augmented_rows: int = 0
    by_label: dict[str, int] = field(default_factory=dict)
    by_technique: dict[str, int] = field(default_factory=dict)  # paraphrase, synthetic, oversample
    generated_dropped: dict[str, int] = field(default_factory=dict)  # generated texts dropped, by reason
    generator: str | None = None  # the generator's name, when one ran
    generator_error: str | None = None  # why it failed (the gaps were then filled by copies)
AUGMENT_COLUMNS = {"augmented_from": pl.String, "augmentation": pl.String, "augmentation_model": pl.String}


def label_gaps(train: pl.DataFrame, settings: Settings) -> tuple[int, dict[str, int]]:
    """(target rows per label, rows missing per label) in the training split."""
    counts = dict(train.group_by("label").len().iter_rows())
    if not counts:
        return 0, {}
    cfg = settings.augmentation
    target = cfg.target_count or math.ceil(max(counts.values()) * cfg.oversample_ratio)
    return target, {label: target - n for label, n in sorted(counts.items()) if target > n}


def augment_corpus(corpus: pl.DataFrame, settings: Settings, generator: TextGenerator | None = None,
                   embedding_cache: EmbeddingCache | None = None) -> StageResult:
    """Originals (null `augmented_from`) plus augmented training rows. `embedding_cache`: the candidate
    filters' sentence vectors are looked up there first."""
    originals = corpus.with_columns([pl.lit(None, t).alias(c) for c, t in AUGMENT_COLUMNS.items()])
    cfg = settings.augmentation
    stats = AugmentStats()
    task = task_for(settings)
    if corpus.is_empty() or not (cfg.oversample or cfg.paraphrase or cfg.synthetic):
        return StageResult(kept=originals, stats=stats)
    split = stratified_group_split(corpus, settings.splits, task)
    train = corpus.join(split.filter(pl.col("split") == "train").select("record_id"), on="record_id")
    if not task.labeled:  # conversations: prompt paraphrases and new pairs, never copies (augment/instructions.py)
        rows = _augment_conversations(train, settings, generator, stats, embedding_cache) \
            if cfg.paraphrase or cfg.synthetic else []
        if not rows:
            log.info("augmentation: nothing added to the conversations (they are never copied)")
        extra = _materialize(train, rows, generated_label_source="synthetic")
        stats.augmented_rows = extra.height
        stats.by_technique = dict(extra.group_by("augmentation").len().sort("augmentation").iter_rows())
        if "category" in extra.columns:
            stats.by_label = dict(extra.drop_nulls("category").group_by("category").len().sort("category").iter_rows())
        return StageResult(kept=pl.concat([originals, extra.select(originals.columns)]), stats=stats)
    target, gaps = label_gaps(train, settings)
    rng = np.random.default_rng(settings.splits.seed)
    new_rows: list[dict] = []
    dropped: Counter = Counter()

    if (cfg.paraphrase or cfg.synthetic) and gaps:
        try:
            generator = generator or make_generator(cfg.generator)
            stats.generator = generator.name
            check = CandidateFilter(train["text"].to_list(), settings, cache=embedding_cache)
            for label in list(gaps):
                if cfg.paraphrase:
                    made = paraphrase_label(train, label, gaps[label], generator, check, settings, rng)
                    new_rows += [{**r, "augmentation_model": generator.name} for r in made.rows]
                    dropped += made.dropped
                    gaps[label] -= len(made.rows)
                if cfg.synthetic and gaps[label] > 0:
                    count = min(gaps[label], math.floor(cfg.synthetic_max_share * target))
                    made = synthesize_label(train, label, count, generator, check, settings, rng) if count else None
                    if made:
                        new_rows += [{**r, "augmentation_model": generator.name} for r in made.rows]
                        dropped += made.dropped
                        gaps[label] -= len(made.rows)
        except GenerationError as exc:
            stats.generator_error = str(exc)
            log.warning("augmentation generator failed: %s; the gaps are filled by oversampling", exc)

    if cfg.oversample:
        new_rows += oversample(train, gaps, settings.splits.seed)
    extra = _materialize(train, new_rows, generated_label_source="synthetic")
    stats.augmented_rows, stats.generated_dropped = extra.height, dict(dropped)
    stats.by_label = dict(extra.group_by("label").len().sort("label").iter_rows())
    stats.by_technique = dict(extra.group_by("augmentation").len().sort("augmentation").iter_rows())
    return StageResult(kept=pl.concat([originals, extra.select(originals.columns)]), stats=stats)


def _augment_conversations(train: pl.DataFrame, settings: Settings, generator: TextGenerator | None,
                           stats: AugmentStats, cache: EmbeddingCache | None = None) -> list[dict]:
    """Generated conversation rows (augment/instructions.py); none when the generator fails."""
    try:
        generator = generator or make_generator(settings.augmentation.generator)
        stats.generator = generator.name
        made = augment_conversations(train, settings, generator, np.random.default_rng(settings.splits.seed),
                                     cache)
    except GenerationError as exc:
        stats.generator_error = str(exc)
        log.warning("augmentation generator failed: %s; nothing added", exc)
        return []
    stats.generated_dropped = dict(made.dropped)
    return [{**r, "augmentation_model": generator.name} for r in made.rows]


def _materialize(train: pl.DataFrame, rows: list[dict], generated_label_source: str) -> pl.DataFrame:
    """Full corpus rows for augmented rows: the source record's fields, the new text, a stable new id."""
    schema = {**train.schema, **AUGMENT_COLUMNS}
    if not rows:
        return pl.DataFrame(schema=schema)
    sources = {r["record_id"]: r for r in train.iter_rows(named=True)}
    numbering: Counter = Counter()
    out = []
    for row in rows:
        source = sources[row["augmented_from"]]
        key = (row["augmented_from"], row["augmentation"])
        numbering[key] += 1
        text = row.get("text", source["text"])
        new = {**source, **row, "text": text, "content_sha256": sha256_text(text),
               "record_id": make_record_id(row["augmented_from"], f"{row['augmentation']} {numbering[key]}")}
        new.setdefault("augmentation_model", None)
        if "text_raw" in new and row["augmentation"] != "oversample":
            new["text_raw"] = text  # generated: there is no other original
        if row["augmentation"] == "synthetic":
            new["label_source"] = generated_label_source
        out.append(new)
    return pl.DataFrame(out, schema=schema)
