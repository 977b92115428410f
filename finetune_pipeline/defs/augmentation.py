"""Augmentation: `augmented_corpus`, the originals plus augmented training rows, with its blocking suite
and accounting check (originals only: augmented rows are added, not counted). It reads the split decided
before it (`split_assignment`) and augments only the records in train."""


import dagster as dg
import polars as pl

from finetune_pipeline import streaming
from finetune_pipeline import validation as v
from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import (accounting_check, check_specs, checked, label_suite_check,
                                          require_upstream_checks)
from finetune_pipeline.defs.metadata import augmentation_metadata, embedding_reuse, settings_used, stage_metadata
from finetune_pipeline.defs.progress import logged
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.records import empty_rejects
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.defs.streams import committed, identities, writers
from finetune_pipeline.defs.types import CORPUS_COLUMNS, CorpusFrame, column_schema


augmented_corpus_expectations = label_suite_check(
    "augmented_corpus", lambda s, labels, records: v.augmented_expectations(s.checks.min_records, labels, records),
    "Unique record ids, labels from the set, augmentation columns present.")
augmented_corpus_accounting = accounting_check("augmented_corpus", "labeled_corpus")


@dg.asset(group_name="augmentation", kinds={"polars"}, owners=OWNERS, dagster_type=CorpusFrame,
          metadata=column_schema(CORPUS_COLUMNS), check_specs=check_specs("augmented_corpus"),
          description="Originals plus augmented training rows: each label topped up to its target by paraphrases "
                      "and capped synthetic examples (when on; OpenAI-compatible endpoint, local model or rule "
                      "variations, filtered with reasons), then copies. Only records split_assignment puts in "
                      "train are augmented, so every new row is in train (it takes its source's split and group); "
                      "one that is a near copy of a validation or test record is dropped (near_held_out). New rows "
                      "carry `augmented_from`, `augmentation` and `augmentation_model`.")
def augmented_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     labeled_corpus: ShardedDataset, split_assignment: pl.DataFrame):
    require_upstream_checks(context, "labeled_corpus", "split_assignment")
    settings = pipeline.settings()
    cache = pipeline.embedding_cache("augmented_corpus")
    with logged(context, "augmented_corpus"):
        if streaming.enabled(settings):  # originals streamed through (the corpus read whole when a technique is on)
            with writers(pipeline, "augmented_corpus") as (kept, rejected):
                stats = streaming.augment_dataset(labeled_corpus, settings, kept, assignment=split_assignment,
                                                  embedding_cache=cache)
                rejected.write(empty_rejects())  # augmentation rejects nothing
            result, read = committed(pipeline, "augmented_corpus", stats), identities(labeled_corpus)
        else:
            read = labeled_corpus.collect()
            result = augment_corpus(read, settings, embedding_cache=cache, assignment=split_assignment)
    if cache is not None:
        cache.save()
    meta = {**stage_metadata(labeled_corpus.height, result), **embedding_reuse(cache),
            "train_records": result.stats.train_records, "held_out_records": result.stats.held_out_records}
    meta["rows_out"] = labeled_corpus.height  # originals out; augmented rows are added, not counted as originals
    context.add_output_metadata({**settings_used(settings, "augmentation"), **meta,
                                 **augmentation_metadata(result.stats)}, output_name="result")
    if result.stats.generator_error:
        context.log.warning(f"generator failed, gaps filled by copies: {result.stats.generator_error}")
    yield from checked(context, pipeline, "augmented_corpus", result, labeled_corpus=read)
