"""Cleaning: erasure, noise removal, normalisation, privacy and quality filters (`cleaned_corpus`), then
exact, near and semantic deduplication (`deduplicated_corpus`), each with its blocking suite and
accounting check."""


import dagster as dg
import polars as pl

from finetune_pipeline import stored, streaming, versions
from finetune_pipeline import validation as v
from finetune_pipeline.cleaning.cache import CODE as CLEANING_CODE
from finetune_pipeline.cleaning.cache import CleaningCacheReport, cached_clean_corpus
from finetune_pipeline.cleaning.stage import CleaningStats
from finetune_pipeline.cleaning.quality_filters import short_rows_kept
from finetune_pipeline.cleaning.erasure import ErasureFileError, erase_from_collection, load_erasure_requests
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.domain import DomainFilterRefused
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import accounting_check, check_specs, checked, require_upstream_checks, suite_check
from finetune_pipeline.defs.metadata import (cleaning_metadata, dedup_metadata, embedding_reuse, execution_metadata,
                                             histogram,
                                             settings_used, stage_metadata)
from finetune_pipeline.defs.progress import logged
from finetune_pipeline.defs.resources import PipelineResource, RayCluster
from finetune_pipeline.defs.types import CORPUS_COLUMNS, CorpusFrame, column_schema
from finetune_pipeline.defs.io import output_location, rejects_location
from finetune_pipeline.defs.ray_jobs import run_as_ray_job
from finetune_pipeline.defs.streams import committed, frame_of, identities, writers
from finetune_pipeline.shards import ShardedDataset


cleaned_corpus_expectations = suite_check(
    "cleaned_corpus",
    lambda s, df: v.cleaned_expectations(s.checks.min_records, s.cleaning.min_chars, s.cleaning.max_chars,
                                         short_rows_kept(s.cleaning)),
    "Record columns plus text length within cleaning.min_chars..max_chars (rows of tables, whose short texts "
    "cleaning.document_filters_on: documents keeps flagged: 1..max_chars) and the redactions column "
    "(kind and span of each redaction, no values).")
cleaned_corpus_accounting = accounting_check("cleaned_corpus", "raw_corpus")

deduplicated_corpus_expectations = suite_check(
    "deduplicated_corpus", lambda s, df: v.deduplicated_expectations(s.checks.min_records),
    "No two records with the same content hash; every record has a group_id.")
deduplicated_corpus_accounting = accounting_check("deduplicated_corpus", "cleaned_corpus")


@dg.asset(group_name="cleaning", kinds={"polars"}, owners=OWNERS, dagster_type=CorpusFrame,
          metadata=column_schema(CORPUS_COLUMNS), code_version=CLEANING_CODE, check_specs=check_specs("cleaned_corpus"),
          description="Records named by erasure_requests.csv removed; text repaired (ftfy), control characters, "
                      "markup, boilerplate and page headers removed, unicode/whitespace/quotes/punctuation "
                      "normalised; personal data redacted, dropped or kept by the privacy policy (Presidio + "
                      "patterns), in the text and in source_uri and locator; Gopher/C4 quality filters and language "
                      "ID reject with their own reason. `redactions` lists the kind and span of each redaction (no "
                      "values; no later stage keeps the original text), `quality_flags` the flags raised. Erased "
                      "records are also removed from raw_corpus's stored value and the parse cache. Records (PDF/Word: "
                      "documents) whose content, erasure matches, cleaning/privacy settings and cleaning code are "
                      "unchanged reuse their cached outcome (.pipeline/cache/; rows_reused, rows_cleaned).")
def cleaned_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster,
                   raw_corpus: ShardedDataset):
    require_upstream_checks(context, "raw_corpus")
    settings = pipeline.settings()
    try:
        requests = load_erasure_requests(pipeline.data_root().path)
    except ErasureFileError as exc:
        raise dg.Failure(description=f"{exc}. Erasure requests cannot be skipped: fix the file and re-run.") from None
    cache = pipeline.cache_file(pipeline.data_root().cleaning_cache)
    job: dict = {}  # with execution.ray_jobs: the Ray job that ran the stage
    with logged(context, "cleaned_corpus"):  # over the process pool: rows done, rate, time left
        if "cleaned_corpus" in settings.execution.ray_jobs:  # the same, from a Ray job's driver on the cluster
            answer, job_id, job_api = run_as_ray_job(context, pipeline, "cleaned_corpus", raw_corpus,
                                                     output_location(pipeline, "cleaned_corpus"),
                                                     rejects_location(pipeline, "cleaned_corpus"), cache)
            stats, reuse = CleaningStats.from_dict(answer["stats"]), CleaningCacheReport.from_dict(answer["reuse"])
            job = {"ray_job_id": job_id, "ray_job_api": dg.MetadataValue.url(job_api)}
            result = committed(pipeline, "cleaned_corpus", stats)
            read = raw_corpus
        elif streaming.enabled(settings) and settings.execution.backend == "ray":  # each batch read, cleaned and
            # written on a worker: this process reads the columns that cut the batches and commits the manifests
            stats, reuse = streaming.clean_dataset_on_ray(
                raw_corpus, settings, requests, output_location(pipeline, "cleaned_corpus"),
                rejects_location(pipeline, "cleaned_corpus"), cache_file=cache,
                progress=lambda done, total: context.log.info(f"cleaned_corpus: {done}/{total} batches done"))
            result = committed(pipeline, "cleaned_corpus", stats)
            read = raw_corpus
        elif streaming.enabled(settings):  # batch by batch, written shard by shard where the IO manager keeps it
            with writers(pipeline, "cleaned_corpus") as (kept, rejected):
                stats, reuse = streaming.clean_dataset(raw_corpus, settings, requests, kept, rejected, cache_file=cache)
            result = committed(pipeline, "cleaned_corpus", stats)
            read = raw_corpus
        else:
            read = raw_corpus.collect()
            result, reuse = cached_clean_corpus(read, settings, requests, cache)
    rejected = frame_of(result.rejected)
    read_ids = identities(read)  # before erasure rewrites raw_corpus's dataset
    _keep_raw_text_only_where_allowed(pipeline, read, rejected)
    _erase_from_published_versions(context, pipeline, result.stats, rejected)
    context.add_output_metadata({**settings_used(settings, "cleaning", "privacy"), **reuse.to_dict(),
                                 **execution_metadata(settings.execution), **job, **stage_metadata(raw_corpus.height, result),
                                 **cleaning_metadata(result.stats, settings.privacy.policy)},
                                output_name="result")
    yield from checked(context, pipeline, "cleaned_corpus", result, raw_corpus=read_ids)


def _erase_from_published_versions(context, pipeline: PipelineResource, stats, rejected: pl.DataFrame) -> None:
    """Erased records out of every kept split version (exports/versions/splits/*, the current one included),
    now, not at the next publication; request ids and counts only in the log."""
    erased = rejected.filter(pl.col("reason") == "erased_by_request")["record_id"].to_list()
    honoured = sorted(r for r, n in stats.erasure.removed_by_request.items() if n)
    removed = versions.erase_records(pipeline.data_root(), erased, honoured)
    if removed:
        context.log.info("erasure: rows removed from kept split versions: "
                         + ", ".join(f"{v} {n}" for v, n in removed.items()))


def _keep_raw_text_only_where_allowed(pipeline: PipelineResource, raw_corpus: pl.DataFrame | ShardedDataset,
                                      rejected: pl.DataFrame) -> None:
    """Erased records out of what collection stored (its value and the parse cache); with
    privacy.keep_raw_text: none, collection's stored value deleted now that cleaning has read it."""
    root = pipeline.data_root()
    erased = rejected.filter(pl.col("reason") == "erased_by_request")["record_id"].to_list()
    if isinstance(raw_corpus, ShardedDataset):  # only the erased rows, read before the dataset is rewritten
        ids = pl.Series(erased, dtype=pl.String).implode()
        raw_corpus = raw_corpus.scan().filter(pl.col("record_id").is_in(ids)).collect()
    if erased:  # the IO manager's dataset (or an earlier version's file) for raw_corpus, shard by shard
        ids = pl.Series(erased, dtype=pl.String).implode()
        stored.rewrite_stored(root, "raw_corpus", lambda frame: frame.filter(~pl.col("record_id").is_in(ids)),
                              shard_rows=pipeline.settings().execution.shard_rows)
    erase_from_collection(raw_corpus, erased, None, root.parse_cache)
    if pipeline.settings().privacy.keep_raw_text == "none":
        stored.remove_stored(root, "raw_corpus")


@dg.asset(group_name="cleaning", kinds={"polars"}, owners=OWNERS, dagster_type=CorpusFrame,
          metadata=column_schema(CORPUS_COLUMNS), check_specs=check_specs("deduplicated_corpus"),
          description="First, when finetune.yaml has a `domain`, records unlike it (MiniLM similarity to its "
                      "description and examples, or a classifier) rejected as off_domain or flagged. Then exact "
                      "duplicates (same text after case and whitespace folding), near duplicates (MinHash + "
                      "LSH over word 3-grams, estimated Jaccard >= 0.7, clusters by connected components) and, "
                      "when dedup.semantic is on, paraphrases (MiniLM embeddings, cosine >= 0.9) removed. The "
                      "record seen first (ingested_at, source_uri, locator) is kept; rejects name it in "
                      "duplicate_of, and `group_id` names the cluster.")
def deduplicated_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster,
                        cleaned_corpus: ShardedDataset):
    require_upstream_checks(context, "cleaned_corpus")
    settings = pipeline.settings()
    cache = pipeline.embedding_cache("deduplicated_corpus")
    with logged(context, "deduplicated_corpus"):  # the domain filter's and semantic dedup's embeddings
        try:
            if streaming.enabled(settings):  # decided on the columns dedup reads, rows streamed through
                with writers(pipeline, "deduplicated_corpus") as (kept, rejected):
                    stats = streaming.deduplicate_dataset(cleaned_corpus, settings, kept, rejected,
                                                          embedding_cache=cache)
                result, read = committed(pipeline, "deduplicated_corpus", stats), identities(cleaned_corpus)
            else:
                read = cleaned_corpus.collect()
                result = deduplicate(read, settings, embedding_cache=cache)
        except DomainFilterRefused as err:  # more than domain.max_reject_share off-domain: nothing written
            raise dg.Failure(description=str(err), metadata={
                "domain_reject_share": round(err.share, 4),
                "domain_score_histogram": histogram(err.histogram, "relevance")}, allow_retries=False) from err
    if cache is not None:
        cache.save()  # only this run's vectors; none (no file) without a domain and semantic dedup
    context.add_output_metadata({**embedding_reuse(cache), **settings_used(settings, "dedup", "domain"),
                                 **execution_metadata(settings.execution), **stage_metadata(cleaned_corpus.height, result),
                                 **dedup_metadata(result.stats)}, output_name="result")
    yield from checked(context, pipeline, "deduplicated_corpus", result, cleaned_corpus=read)
