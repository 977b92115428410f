"""Collection: the raw folder as an observable source (`raw_files`) and every input parsed into records
(`raw_corpus`), with its blocking suite."""


import shutil
import time
import warnings

import dagster as dg

from finetune_pipeline import streaming
from finetune_pipeline import validation as v
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import check_specs, checked, files_check, suite_check
from finetune_pipeline.defs.metadata import collection_metadata, execution_metadata, settings_used, stage_metadata
from finetune_pipeline.defs.resources import PipelineResource, RayCluster
from finetune_pipeline.defs.streams import committed, writers
from finetune_pipeline.defs.types import CORPUS_COLUMNS, CorpusFrame, column_schema
from finetune_pipeline.raw_inventory import inventory, inventory_version
from finetune_pipeline.sources import collect_raw_corpus, collect_sources

RAW_FILES = dg.AssetKey("raw_files")

# observable_source_asset is marked beta in dagster 1.13; its behaviour here is tested (test_automation.py).
warnings.filterwarnings("ignore", message=".*observable_source_asset.*", category=dg.BetaWarning)


@dg.observable_source_asset(
    key=RAW_FILES, group_name="collection", owners=OWNERS,
    description="The files under raw/ (any depth). Its data version is a hash of every path and content "
                "hash, so when raw/ changes, raw_corpus and everything downstream show as stale in the UI.")
def raw_files(pipeline: PipelineResource) -> dg.DataVersion:
    return dg.DataVersion(inventory_version(inventory(pipeline.data_root().raw)))


raw_corpus_expectations = suite_check(
    "raw_corpus", lambda s, df: v.corpus_expectations(s.checks.min_records),
    "Standard record columns, unique non-null record_id, non-empty text, at least checks.min_records rows.")
raw_corpus_every_file_accounted = files_check("raw_corpus")


@dg.asset(group_name="collection", kinds={"polars", "unstructured"}, owners=OWNERS, deps=[RAW_FILES],
          check_specs=check_specs("raw_corpus"),
          dagster_type=CorpusFrame, metadata=column_schema(CORPUS_COLUMNS),
          description="Every file under raw/ (txt, md, html, pdf, docx, eml, csv, jsonl, parquet, SQLite) and "
                      "every SQL source in finetune.yaml, parsed into records with provenance. Unreadable "
                      "inputs become rejects naming the file and the reason. The only stored value with the "
                      "original text (privacy.keep_raw_text); cleaning removes erased records from it and from "
                      "the parse cache.")
def raw_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource, ray_cluster: RayCluster):
    settings, root = pipeline.settings(), pipeline.data_root()
    # privacy.keep_raw_text: none keeps no parsed copy of raw/ between runs
    keep = settings.privacy.keep_raw_text == "collection"
    if not keep:
        shutil.rmtree(root.parse_cache, ignore_errors=True)
    cache_dir, progress = root.parse_cache if keep else None, _progress_logger(context)
    if streaming.enabled(settings):  # each source's rows written as it is read, shard by shard
        with writers(pipeline, "raw_corpus") as (kept, rejected):
            stats = collect_sources(root.path, settings, lambda rows, rejects: (kept.write(rows),
                                                                               rejected.write(rejects)),
                                    cache_dir=cache_dir, progress=progress)
        result = committed(pipeline, "raw_corpus", stats)
    else:
        result = collect_raw_corpus(root.path, settings, cache_dir=cache_dir, progress=progress)
    context.add_output_metadata({
        **settings_used(settings, "sources"), **execution_metadata(settings.execution),
        **stage_metadata(result.kept.height + result.rejected.height, result),
        **collection_metadata(result.stats, sql_sources=len(settings.sources.sql)),
    }, output_name="result")
    yield from checked(context, pipeline, "raw_corpus", result)


def _progress_logger(context: dg.AssetExecutionContext, every_s: float = 5.0):
    """Per-source progress in the run log: every source for small folders, else one line per `every_s`."""
    last = [0.0]

    def report(done: int, total: int, uri: str, status: str) -> None:
        now = time.monotonic()
        if total <= 50 or done == total or now - last[0] >= every_s:
            last[0] = now
            context.log.info(f"[{done}/{total}] {uri} ({status})")
    return report
