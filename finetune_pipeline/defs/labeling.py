"""Labeling: `labeled_corpus` (records with a label from the label set) and `review_queue` (records waiting
for a person), computed together from one labeling pass, with the blocking checks on the labels.

The two are one multi-asset that can be subset: materializing one of them (e.g. `*dataset_splits`, which
needs only labeled_corpus) stores and exports only that one.
"""


import dagster as dg

from finetune_pipeline import streaming
from finetune_pipeline import validation as v
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import (accounting_check, check_specs, checked, label_suite_check,
                                          require_upstream_checks)
from finetune_pipeline.defs.metadata import (embedding_reuse, execution_metadata, labeling_metadata, review_metadata,
                                             settings_used, stage_metadata)
from finetune_pipeline.defs.progress import logged
from finetune_pipeline.defs.resources import PipelineResource, RayCluster
from finetune_pipeline.defs.streams import committed, identities, writers
from finetune_pipeline.defs.types import CORPUS_COLUMNS, REVIEW_COLUMNS, CorpusFrame, ReviewFrame, column_schema
from finetune_pipeline.labeling import apply_labels, label_studio
from finetune_pipeline.labeling.annotations import load_annotations
from finetune_pipeline.labeling.assign import LabelingResult
from finetune_pipeline.labeling.review import write_review_export
from finetune_pipeline.shards import ShardedDataset


labeled_corpus_expectations = label_suite_check(
    "labeled_corpus", lambda s, labels, records: v.labeled_expectations(s.checks.min_records, labels, records),
    "Every record has a label from the label set, a known label_source and a confidence in [0, 1].")
labeled_corpus_accounting = accounting_check("labeled_corpus", "deduplicated_corpus")


@dg.multi_asset(
    name="labeling",
    can_subset=True,
    check_specs=check_specs("labeled_corpus"),
    outs={
        "labeled_corpus": dg.AssetOut(
            group_name="labeling", kinds={"polars"}, owners=OWNERS, is_required=False, dagster_type=CorpusFrame,
            metadata=column_schema(CORPUS_COLUMNS),
            description="Records with a label from the label set. Precedence: expert annotator > crowd consensus "
                        "(Dawid-Skene or majority) or a single annotator > column/folder label > model label "
                        "(zero-shot by embedding similarity, or a classifier once enough human labels exist). "
                        "Model labels under labeling.review_threshold and crowd labels under "
                        "labeling.agreement_threshold are rejected as in_review and wait in review_queue."),
        "review_queue": dg.AssetOut(
            group_name="labeling", kinds={"polars", "labelstudio"}, owners=OWNERS, is_required=False,
            dagster_type=ReviewFrame, metadata=column_schema(REVIEW_COLUMNS),
            description="Records waiting for a person: low-confidence model labels, open annotator disagreements "
                        "and an audit sample of accepted model labels, highest priority first (the expected value "
                        "of a label: model uncertainty, annotator disagreement, the class's shortfall), each with "
                        "the number of annotators to ask and who (reliable ones, by Dawid-Skene). Exported as Label "
                        "Studio import tasks (exports/review/tasks.json, with the prediction and these scores) and a "
                        "labeling config (exports/review/label_config.xml)."),
    },
)
def labeling(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster,
             deduplicated_corpus: ShardedDataset):
    require_upstream_checks(context, "deduplicated_corpus")
    settings, root = pipeline.settings(), pipeline.data_root()
    annotations, problems = load_annotations(root.annotations)
    # review.backend: label_studio: the server's annotations too (labeling/label_studio.py)
    pulled = label_studio.pull_annotations(settings, root)
    if pulled is not None:
        if pulled.unavailable:
            context.log.warning(pulled.unavailable)
        annotations = label_studio.merge_annotations(annotations, pulled.poll.annotations)
        problems = problems + pulled.poll.problems
    cache = pipeline.embedding_cache("labeled_corpus")
    with logged(context, "labeling"):
        if streaming.enabled(settings) and "labeled_corpus" in context.selected_output_names:
            # decided on the columns labeling reads, rows streamed through to the IO manager's location
            with writers(pipeline, "labeled_corpus") as (kept, rejected):
                stats, review = streaming.label_dataset(deduplicated_corpus, settings, kept, rejected, annotations,
                                                        problems, embedding_cache=cache)
            result = committed(pipeline, "labeled_corpus", stats, kind=LabelingResult, review_queue=review)
            read = identities(deduplicated_corpus)
        else:
            read = deduplicated_corpus.collect()
            result = apply_labels(read, settings, annotations, problems, embedding_cache=cache)
    if cache is not None:
        cache.save()
    for problem in problems:
        context.log.warning(f"annotations/{problem['file']} {problem['where']}: {problem['reason']}")

    if "labeled_corpus" in context.selected_output_names:
        yield from checked(context, pipeline, "labeled_corpus", dg.Output(result, "labeled_corpus", metadata={
            **stage_metadata(deduplicated_corpus.height, result),
            **settings_used(settings, "labels", "labeling"), **execution_metadata(settings.execution),
            **labeling_metadata(result.stats),
            **embedding_reuse(cache),
        }), deduplicated_corpus=read)
    if "review_queue" in context.selected_output_names:
        paths = write_review_export(result.review_queue, result.stats.labels, root.review)
        pushed, unavailable = label_studio.push_review(settings, root)
        if unavailable:
            context.log.warning(unavailable)
        server = pushed.metadata() if pushed is not None else {}
        yield dg.Output(result.review_queue, "review_queue",
                        metadata={**review_metadata(result.review_queue, paths), **server})
