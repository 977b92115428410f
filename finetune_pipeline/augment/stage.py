"""The augmentation stage runner: balance the training data without touching validation or test.

The split of the original records is decided before this stage, once (`splits.split_assignment`, the
`split_assignment` asset), and only records it puts in train are augmented: every augmented row is in train
by construction (it takes its source's split and group), and one that is a near copy of a validation or test
record (MinHash at `splits.contamination_threshold`) is dropped as `near_held_out`. Each label is topped up to its target
(`target_count`, else `oversample_ratio` x the largest label) by, in order: paraphrases of its records,
synthetic examples from few-shot prompts (at most `synthetic_max_share` of the label's rows), and copies.
Generated rows carry `augmented_from`, `augmentation` and `augmentation_model`, and are never counted as
originals. A generator that fails (server down, bad model path) is reported in the stats and the gap is
filled by copies: augmentation never stops the run. What is made is the kind's (`Task.augment`): labeled
texts as above (augment/generate.py), conversations (task: instruction) prompt paraphrases and new
instruction/answer pairs, never copies (augment/instructions.py); a kind may make none.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from finetune_pipeline.augment.generators import TextGenerator
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.records import DATASET_ROW, SPLITS, StageResult, StageStats, make_record_id, sha256_text
from finetune_pipeline.settings import Settings
from finetune_pipeline.shards import DatasetWriter, ShardedDataset, open_dataset
from finetune_pipeline.splits import (TextSource, check_assignment_covers, cross_split_near_duplicates,
                                      split_assignment)
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
    train_records: int = 0  # originals in train by the split assignment: the only ones augmented
    held_out_records: int = 0  # originals in validation or test: never a source of augmented rows
AUGMENT_COLUMNS = {"augmented_from": pl.String, "augmentation": pl.String, "augmentation_model": pl.String}


def augment_corpus(corpus: pl.DataFrame, settings: Settings, generator: TextGenerator | None = None,
                   embedding_cache: EmbeddingCache | None = None,
                   assignment: pl.DataFrame | None = None) -> StageResult:
    """Originals (null `augmented_from`) plus augmented training rows, made by the task (`Task.augment`).
    `assignment`: the split of the originals (`splits.split_assignment`: record_id, split, group_id; computed
    here when None); only records it puts in train are augmented. `embedding_cache`: the candidate filters'
    sentence vectors are looked up there first."""
    originals = corpus.with_columns([pl.lit(None, t).alias(c) for c, t in AUGMENT_COLUMNS.items()])
    extra, stats = augmented_rows(corpus, settings, generator, embedding_cache, assignment)
    return StageResult(kept=pl.concat([originals, extra.select(originals.columns)]) if extra.height else originals,
                       stats=stats)


def augmented_rows(corpus: pl.DataFrame, settings: Settings, generator: TextGenerator | None = None,
                   embedding_cache: EmbeddingCache | None = None, assignment: pl.DataFrame | None = None,
                   texts: ShardedDataset | None = None) -> tuple[pl.DataFrame, AugmentStats]:
    """The augmented rows alone (corpus columns plus AUGMENT_COLUMNS) and the statistics: what
    `augment_corpus` appends to the originals (a caller that streams the originals writes these after them).

    `texts`: the dataset `corpus` was read from, when `corpus` has no `text` column but each row's
    `DATASET_ROW` there (`copies_only`: nothing but copies is made, so no text is read into memory); the copies
    then have no `text` or `content_sha256` either (the caller writes their source's, from the source's row), and
    the near-held-out filter reads the texts from `texts` shard by shard."""
    cfg = settings.augmentation
    stats = AugmentStats()
    task = task_for(settings)
    empty = pl.DataFrame(schema={**corpus.schema, **AUGMENT_COLUMNS})
    if corpus.is_empty() or not (cfg.oversample or cfg.paraphrase or cfg.synthetic):
        return empty, stats
    if assignment is None:
        assignment, _ = split_assignment(corpus, settings.splits, settings.dedup, task)
    check_assignment_covers(corpus, assignment, "labeled_corpus")
    in_train = pl.col("record_id").is_in(assignment.filter(pl.col("split") == "train")["record_id"].implode())
    train, held_out = corpus.filter(in_train), corpus.filter(~in_train)
    stats.train_records, stats.held_out_records = train.height, held_out.height
    made = task.augment(train, settings, generator, embedding_cache)
    stats.generator, stats.generator_error = made.generator, made.generator_error
    stats.generated_dropped = dict(made.dropped)
    extra = _materialize(train, made.rows, generated_label_source="synthetic")
    extra = _drop_near_held_out(extra, held_out, train, assignment, settings, stats, texts)
    stats.augmented_rows = extra.height
    stats.by_label = task.augmented_counts(extra)
    stats.by_technique = dict(extra.group_by("augmentation").len().sort("augmentation").iter_rows())
    return extra.select(empty.columns), stats


def copies_only(settings: Settings) -> bool:
    """Whether augmentation makes nothing but copies of training records (oversampling on, no paraphrases and
    no synthetic examples: the default), so that it never reads a text to make a row."""
    cfg = settings.augmentation
    return cfg.oversample and not (cfg.paraphrase or cfg.synthetic)


def _drop_near_held_out(extra: pl.DataFrame, held_out: pl.DataFrame, train: pl.DataFrame, assignment: pl.DataFrame,
                        settings: Settings, stats: AugmentStats, texts: ShardedDataset | None = None
                        ) -> pl.DataFrame:
    """`extra` without the rows that share a near-copy cluster (MinHash at `splits.contamination_threshold`,
    as the contamination check sees them) with a validation or test record: a generated text that resembles
    held-out data would put it in train. Counted in `stats.generated_dropped` as `near_held_out`.

    A copy (`oversample`) has its source's text, so the look compares the source record once (a train record)
    for all its copies: a copy is dropped when its source's cluster reaches validation or test. `texts`: where
    the texts are read when the frames carry `DATASET_ROW` instead (copies only, see `augmented_rows`)."""
    if extra.is_empty() or held_out.is_empty():
        return extra
    copy = pl.col("augmentation") == "oversample"
    sources = extra.filter(copy)["augmented_from"].unique()
    represented = train.filter(pl.col("record_id").is_in(sources.implode()))  # a copy's text is its source's
    generated = extra.filter(~copy)
    text = [pl.col(DATASET_ROW).cast(pl.Int64).alias("_row")] if texts is not None else ["text"]
    if texts is not None and generated.height:
        raise ValueError("augmentation: generated rows have texts of their own; read the corpus with its texts")
    split_of = assignment.select("record_id", "split")
    rows = pl.concat([held_out.select("record_id", *text).join(split_of, on="record_id"),
                      represented.select("record_id", *text, pl.lit("train").alias("split")),
                      generated.select("record_id", *text, pl.lit("train").alias("split"))])
    order = pl.col("split").replace_strict({name: i for i, name in enumerate(SPLITS)}, return_dtype=pl.Int8)
    rows = rows.sort(order, "record_id")
    with contextlib.ExitStack() as temporary:
        if texts is None:
            # The texts go to a temporary sharded dataset and the look reads them from there, as it reads the
            # corpus's shards otherwise: shard by shard, with the signatures spilled to disk (dedup/sharded.py; the
            # same clusters as in memory): the in-memory look's candidate pairs of templated short texts at the
            # contamination threshold took 7.6 GiB at 1M records.
            folder = Path(temporary.enter_context(tempfile.TemporaryDirectory(prefix="finetune-pipeline-augment-")))
            with DatasetWriter(folder / "texts") as writer:
                writer.write(rows.select("text"))
            rows = rows.drop("text").with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
            texts = open_dataset(folder / "texts")
        crossing = cross_split_near_duplicates(rows, settings.splits.contamination_threshold, settings.dedup,
                                               texts=TextSource(texts))
    near = pl.Series(crossing.explode("record_ids")["record_ids"], dtype=pl.String).implode()
    kept = extra.filter(~pl.when(copy).then(pl.col("augmented_from")).otherwise(pl.col("record_id")).is_in(near))
    if kept.height < extra.height:
        stats.generated_dropped["near_held_out"] = stats.generated_dropped.get("near_held_out", 0) \
            + extra.height - kept.height
        log.info("augmentation: %d augmented row(s) dropped as near copies of validation or test records",
                 extra.height - kept.height)
    return kept


def _materialize(train: pl.DataFrame, rows: list[dict], generated_label_source: str) -> pl.DataFrame:
    """Full corpus rows for augmented rows: the source record's fields, the new text, a stable new id."""
    schema = {**train.schema, **AUGMENT_COLUMNS}
    if not rows:
        return pl.DataFrame(schema=schema)
    # the source records of the rows only, as dicts (every train record as a dict was gigabytes at 1M records)
    used = train.filter(pl.col("record_id").is_in(pl.Series(list({row["augmented_from"] for row in rows}),
                                                            dtype=pl.String).implode()))
    sources = {r["record_id"]: r for r in used.iter_rows(named=True)}
    numbering: Counter = Counter()
    out = []
    for row in rows:
        source = sources[row["augmented_from"]]
        key = (row["augmented_from"], row["augmentation"])
        numbering[key] += 1
        new = {**source, **row,
               "record_id": make_record_id(row["augmented_from"], f"{row['augmentation']} {numbering[key]}")}
        if "text" in new:  # not when the texts were left in the corpus's shards (copies: their source's text)
            new["content_sha256"] = sha256_text(new["text"])
        new.setdefault("augmentation_model", None)
        if "redactions" in new and row["augmentation"] != "oversample":
            new["redactions"] = "[]"  # generated text: cleaning redacted nothing in it
        if row["augmentation"] == "synthetic":
            new["label_source"] = generated_label_source
        out.append(new)
    return pl.DataFrame(out, schema=schema)
