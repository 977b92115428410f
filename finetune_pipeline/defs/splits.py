"""Splits: `split_assignment`, the stratified, group-aware, contamination-free split of the original records,
decided once before augmentation; `dataset_splits`, that assignment applied to the augmented corpus (augmented
rows take their source's split and group) and written to staging with its blocking checks (leakage, personal
data left in the export, near duplicates across splits) and its warnings (label shares moved since the last
published split, too few test records per label); then `published_splits`, which replaces exports/splits (and
folds.parquet) only after every blocking check passed."""


import dagster as dg
import polars as pl

from finetune_pipeline import atomic, exports, reporting, streaming, versions
from finetune_pipeline import validation as v
from finetune_pipeline.cleaning import CleaningStats
from finetune_pipeline.cleaning.cache import PersonalDataCounts
from finetune_pipeline.dedup import DedupStats
from finetune_pipeline.defs import OWNERS
from finetune_pipeline.defs.gates import (PIPELINE_DEFECT, Refusal, check_specs, checked, gate, labels_and_records,
                                          require_upstream_checks, suite_result)
from finetune_pipeline.defs.metadata import settings_used, splits_metadata, table
from finetune_pipeline.defs.progress import logged
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.defs.types import (ASSIGNMENT_COLUMNS, SPLIT_COLUMNS, SplitAssignmentFrame, SplitsFrame,
                                          column_schema)
from finetune_pipeline.labeling import LabelingStats
from finetune_pipeline.defs.io import output_location
from finetune_pipeline.shards import DatasetWriter, ShardedDataset, open_dataset
from finetune_pipeline.records import CORPUS_STAGES, SPLITS
from finetune_pipeline.sources import CollectionStats
from finetune_pipeline.splits import (DOCUMENT_SOURCE_TYPES, SplitError, TextSource, apply_split_assignment,
                                      cross_split_near_duplicates, cross_validation_folds, split_key,
                                      split_moves)
from finetune_pipeline.splits import split_assignment as decide_split_assignment  # the asset takes the name
from finetune_pipeline.tasks import task_for

LISTED = 20  # record ids listed in a failed check's metadata
CONTAMINATION_RESULT = "contamination_check"  # its answer, shared by the split's last look and the check
ASSIGNMENT_RESULT = "split_assignment"  # the stored assignment, by `split_key` of labeled_corpus
# Where dataset_splits stored its whole split (texts included) before the split moved to split_assignment:
# nothing reads it any more, and an erasure request must not leave a subject's text there.
FORMER_SPLIT_RESULT = ("dataset_splits.parquet", "dataset_splits.json")

# What the asset and its checks read of dataset_splits besides the shard-by-shard passes over the texts (the
# export, the bias findings, the personal-data scan, the contamination look): ids, split, group, label, provenance.
RECORD_COLUMNS = ("record_id", "split", "group_id", "label", "label_source", "augmented_from", "source_uri",
                  "source_type", "locator", "category")


WARNING_COLUMNS = ("split", "label", "category", "source_uri", "augmented_from")  # the stratified column and split


def split_columns(splits: pl.DataFrame | ShardedDataset, *extra: str | None) -> pl.DataFrame:
    """The record columns (`RECORD_COLUMNS`, and `extra` ones such as splits.group_column) of `splits`: a
    dataset's read from every shard, never its texts."""
    if isinstance(splits, pl.DataFrame):
        return splits
    wanted = set(RECORD_COLUMNS) | {c for c in extra if c}
    return splits.scan().select([c for c in splits.columns if c in wanted]).collect()


@gate("split_assignment", "split_assignment_every_record",
      "Every record of labeled_corpus has exactly one split (train, validation or test), and no group "
      "(near-copy cluster, source document, group column value) has records in two splits.",
      upstream=("labeled_corpus",))
def split_assignment_every_record(pipeline: PipelineResource, current: pl.DataFrame,
                                  labeled_corpus: pl.DataFrame) -> dg.AssetCheckResult:
    wrong = v.reconciliation_frame(labeled_corpus["record_id"], current["record_id"], [])
    groups = current.group_by("group_id").agg(pl.col("split").n_unique().alias("n_splits"))
    straddling = groups.filter(pl.col("n_splits") > 1)["group_id"].sort()
    return suite_result(
        v.validate(wrong, "split_assignment_every_record", v.reconciliation_expectations()),
        v.validate(groups, "split_assignment_groups", v.leakage_expectations()[0]),
        extra={"records_not_assigned_once": ", ".join(wrong["record_id"].head(LISTED)) or "none",
               "groups_in_two_splits": ", ".join(straddling.head(LISTED)) or "none"})


@gate("dataset_splits", "dataset_splits_no_leakage",
      "Split values valid, every label in every split, no record or group (near-duplicate cluster) in two "
      "splits, no source document's chunks in two splits (splits.group_by: document), augmented and "
      "synthetic rows only in train and in their source's split, label shares per "
      "split within splits.proportion_tolerance of the whole.", streams=True)
def dataset_splits_no_leakage(pipeline: PipelineResource, splits: pl.DataFrame | ShardedDataset
                              ) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    task = task_for(settings)
    current = split_columns(splits, settings.splits.group_column)  # the suite reads a dataset shard by shard
    labels, records = labels_and_records(settings, current, pipeline.data_root())
    groups, augmented = v.leakage_frames(current)
    group_exps, aug_exps = v.leakage_expectations()
    results = [
        v.validate(splits, "dataset_splits_expectations",
                   v.split_expectations(settings.checks.min_records, labels, records), settings.execution),
        v.validate(groups, "dataset_splits_groups", group_exps),
        v.validate(v.proportion_frame(current, settings.splits.proportion_tolerance, task.stratify_column(current)),
                   "dataset_splits_proportions", v.proportion_expectations()),
    ]
    required = task.labels_every_split_holds(labels)
    if required is not None:  # every label in every split
        results.insert(1, v.validate(v.label_coverage_frame(current, required), "dataset_splits_label_coverage",
                                     v.label_coverage_expectations()))
    if augmented.height:
        results.append(v.validate(augmented, "dataset_splits_augmented", aug_exps))
    if settings.splits.group_by == "document":  # the chunks of one document in one split
        results.append(v.validate(v.document_frame(current, DOCUMENT_SOURCE_TYPES), "dataset_splits_documents",
                                  group_exps))
    return suite_result(*results, extra=_candidate(pipeline),
                        refusal=lambda: _leakage_refusal(settings, current, required, task.stratify_column(current)))


def _leakage_refusal(settings, current: pl.DataFrame, labels: list[str] | None, column: str) -> Refusal:
    """What broke the split, record by record where records are to blame, and what to do about it."""
    causes, remedies, records = [], [], []
    spanning = current.group_by("group_id").agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1)
    if spanning.height:
        records.append(current.join(spanning.select("group_id"), on="group_id"))
        causes.append(f"{spanning.height} group(s) of near copies have records in two splits")
    if "augmented_from" in current.columns:
        source = current.select(pl.col("record_id").alias("augmented_from"), pl.col("split").alias("_source_split"))
        misplaced = current.filter(pl.col("augmented_from").is_not_null()) \
            .join(source, on="augmented_from", how="left") \
            .filter((pl.col("split") != "train") | (pl.col("split") != pl.col("_source_split")))
        if misplaced.height:
            records.append(misplaced)
            causes.append(f"{misplaced.height} augmented row(s) outside train or outside their source's split")
    if spanning.height or records:
        remedies.append("records of one group and augmented copies are placed by the split itself: "
                        + PIPELINE_DEFECT)
    if labels:  # the labels every split must hold (`Task.labels_every_split_holds`)
        held = {split: set(current.filter(pl.col("split") == split)["label"].unique().drop_nulls())
                for split in SPLITS}
        missing = [f"{split}: {', '.join(sorted(set(labels) - held[split]))}" for split in SPLITS
                   if set(labels) - held[split]]
        if missing:
            causes.append("labels with no record in a split (" + "; ".join(missing) + ")")
            remedies.append("add records of those labels to raw/ (each label needs a few in every split), or take "
                            "the label out of `labels` in finetune.yaml")
    shares = v.proportion_frame(current, settings.splits.proportion_tolerance, column).filter(~pl.col("within"))
    if shares.height:
        causes.append(f"{column} shares off by more than splits.proportion_tolerance "
                      f"({settings.splits.proportion_tolerance}): "
                      + ", ".join(f"{lab} in {split}" for split, lab in shares.select("split", "label").iter_rows()))
        remedies.append("add records of the rare labels, or raise splits.proportion_tolerance in finetune.yaml")
    if not causes:
        causes.append("the split frame breaks its contract (see the failed expectations)")
        remedies.append(PIPELINE_DEFECT)
    return Refusal("; ".join(causes), tuple(remedies), pl.concat([r.select(
        "record_id", "source_uri", "locator") for r in records]) if records else None)


@gate("dataset_splits", "dataset_splits_no_personal_data",
      "The PII detector (privacy.detector) run over every text written to the split export (each turn "
      "of a conversation included) finds nothing of a kind the privacy policy redacts or drops.",
      columns=("record_id", "source_uri", "locator"))
def dataset_splits_no_personal_data(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    settings, root = pipeline.settings(), pipeline.data_root()
    cache = pipeline.cache_file(root.personal_data_check_cache)  # by text and settings
    # per part: each exported record's count, and the ids of the records with something found (a frame, not a
    # Python set per record: an export of uncleaned text finds something in nearly every record)
    frames, by_kind, kinds, leaking = [], {}, set(), []
    with PersonalDataCounts(settings.privacy, cache) as detector:  # the export read a part at a time
        for exported in exports.iter_exported_texts(root.staged(root.splits_export), task_for(settings)):
            found = detector.counts(exported["text"].to_list())
            frames.append(v.personal_data_frame(exported.drop("text"), found))
            for counts in found:
                for kind, n in counts.items():
                    by_kind[kind] = by_kind.get(kind, 0) + n
                    if n:
                        kinds.add(kind)
            leaking.append(frames[-1].filter(pl.col("personal_data_found") > 0)["record_id"])
    frame = pl.concat(frames) if frames else v.personal_data_frame(pl.DataFrame(
        schema={"split": pl.String, "record_id": pl.String}), [])
    leaking = pl.concat(leaking).unique().sort() if leaking else pl.Series("record_id", [], pl.String)
    return suite_result(v.validate(frame, "dataset_splits_no_personal_data", v.personal_data_expectations()),
                        refusal=_personal_data_refusal(settings, current, leaking, kinds),
                        extra={**_candidate(pipeline), "rows_scanned": frame.height,
                               "found_by_kind": ", ".join(f"{k}: {n}" for k, n in sorted(by_kind.items())) or "none",
                               "records_with_personal_data": ", ".join(leaking.head(LISTED).to_list()) or "none"})


def _personal_data_refusal(settings, current: pl.DataFrame, leaking: pl.Series, kinds: set[str]) -> Refusal:
    """Which records hold what kind of personal data (kinds and counts, never the values), and the ways out."""
    records = current.filter(pl.col("record_id").is_in(leaking.implode())).select("record_id", "source_uri", "locator")
    every = sorted(kinds)
    return Refusal(
        f"the detector (privacy.detector: {settings.privacy.detector}) found {', '.join(every)} in the exported "
        f"text of {len(leaking)} record(s): personal data that cleaning did not remove, or that a later stage "
        "(augmentation, generated text) added",
        ("if what it found is not personal data (a product, a title, a format name), add the phrase to "
         "privacy.allow in finetune.yaml: it is then never taken for personal data, in cleaning and in this check",
         "if it is personal data, correct or remove the record in its source file (or file an erasure request), "
         "or set privacy.<kind> to drop in finetune.yaml to reject records that hold it; then run again",
         "explain a record with `finetune-pipeline explain RECORD_ID`: what each stage did to it"),
        records)


@gate("dataset_splits", "dataset_splits_no_contamination",
      "No near-duplicate cluster (word 3-gram MinHash at splits.contamination_threshold, looser than "
      "dedup's; short texts on word sets) has records in two splits: nothing in test or validation is a light edit of training "
      "data.", streams=True)
def dataset_splits_no_contamination(pipeline: PipelineResource, splits: pl.DataFrame | ShardedDataset
                                    ) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    cache = pipeline.result_cache(CONTAMINATION_RESULT)
    if isinstance(splits, ShardedDataset) and "text" in splits.columns:  # texts read shard by shard
        current, texts = split_columns(splits).with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64)), \
            TextSource(splits, settings.execution)
    else:
        current, texts = split_columns(splits), None
    crossing = cross_split_near_duplicates(current, settings.splits.contamination_threshold, settings.dedup, cache,
                                           texts=texts)
    frame = v.contamination_frame(current, crossing)
    crossing_ids = crossing["record_ids"].explode().to_list() if crossing.height else []
    refusal = Refusal(
        f"{crossing.height} cluster(s) of near copies (similarity at least splits.contamination_threshold, "
        f"{settings.splits.contamination_threshold}) have records in two splits: test or validation would hold "
        "light edits of training data",
        ("the split puts near copies in one group, so this is a defect of the split: " + PIPELINE_DEFECT,
         "if these records are different texts that merely look alike, raise splits.contamination_threshold",
         "if they are copies, remove all but one from raw/"),
        current.filter(pl.col("record_id").is_in(crossing_ids)))
    return suite_result(v.validate(frame, "dataset_splits_no_contamination", v.contamination_expectations()),
                        refusal=refusal, extra={**_candidate(pipeline), "clusters_across_splits": crossing.height,
                               "answer_reused": bool(cache and cache.hits),  # asked of the same rows already
                               "clusters": table(["cluster", "records", "splits"], [
                                   [c, ", ".join(r), ", ".join(s)] for c, r, s in crossing.head(LISTED).iter_rows()])
                               if crossing.height else "none"})


def _warning(passed: bool, description: str, frame: pl.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, description=description,
                               metadata={"values": table(frame.columns, [list(r) for r in frame.rows()])
                                         if frame.height else "none"})


@gate("dataset_splits", "dataset_splits_share_drift", blocking=False,
      description="Warning: no label (category for conversations) moved its share of the records by more than "
                  "checks.max_share_drift since the last published split.", columns=WARNING_COLUMNS)
def dataset_splits_share_drift(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    settings, root = pipeline.settings(), pipeline.data_root()
    column = task_for(settings).stratify_column(current)
    previous = _published(root)
    frame = v.share_drift_frame(current, previous, column, settings.checks.max_share_drift)
    moved = frame.filter(~pl.col("within"))
    description = ("nothing published yet" if previous.is_empty() else
                   f"{moved.height} {column} value(s) moved more than {settings.checks.max_share_drift:.0%}: "
                   + ", ".join(moved["value"]) if moved.height else f"every {column} share within "
                   f"{settings.checks.max_share_drift:.0%} of the last published split")
    return _warning(moved.is_empty(), description, frame)


@gate("dataset_splits", "dataset_splits_test_support", blocking=False,
      description="Warning: every label (category for conversations) has at least checks.min_test_per_label "
                  "records in the test split, enough to be measured at all.", columns=WARNING_COLUMNS)
def dataset_splits_test_support(pipeline: PipelineResource, current: pl.DataFrame) -> dg.AssetCheckResult:
    settings = pipeline.settings()
    column = task_for(settings).stratify_column(current)
    frame = v.test_support_frame(current, column)
    few = frame.filter(pl.col("test_records") < settings.checks.min_test_per_label)
    description = (f"{few.height} {column} value(s) with fewer than {settings.checks.min_test_per_label} test "
                   "records: " + ", ".join(f"{a} ({b})" for a, b in few.rows()) if few.height
                   else f"every {column} value has {settings.checks.min_test_per_label}+ test records")
    return _warning(few.is_empty(), description, frame)


@dg.asset(group_name="splits", kinds={"polars"}, owners=OWNERS, dagster_type=SplitAssignmentFrame,
          metadata=column_schema(ASSIGNMENT_COLUMNS), check_specs=check_specs("split_assignment"),
          description="The split of every original record (record_id, split, group_id), decided once, before "
                      "augmentation: stratified, group-aware (default 0.8/0.1/0.1, seeded); near copies (MinHash "
                      "at splits.contamination_threshold), the chunks of one document (splits.group_by) share a "
                      "group, and clusters the check would find across splits after a split have their groups "
                      "joined and the split made again. augmented_corpus augments only the records in train; "
                      "dataset_splits applies this assignment and decides nothing.")
def split_assignment(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     labeled_corpus: ShardedDataset):
    require_upstream_checks(context, "labeled_corpus")
    settings, root = pipeline.settings(), pipeline.data_root()
    task = task_for(settings)
    # streaming: only the columns the split reads (record ids, groups, labels), the texts read shard by shard
    labeled_corpus, texts = streaming.split_inputs(labeled_corpus, settings) if streaming.enabled(settings) \
        else (labeled_corpus.collect(), None)
    for name in FORMER_SPLIT_RESULT:
        (root.result_cache / name).unlink(missing_ok=True)
    cache = pipeline.result_cache(ASSIGNMENT_RESULT)
    key = split_key(labeled_corpus, settings.splits, settings.dedup, task, texts) if cache is not None else None
    hit = cache.load(key) if cache is not None else None
    if hit is not None:
        assignment, joined = hit[0], hit[1].get("clusters_joined_after_split", 0)
        context.log.info("split_assignment: the corpus, the split settings and the split code are those of the "
                         "stored assignment; it is reused, not computed again")
    else:
        try:  # the last look's answer is stored where the contamination check finds it (no augmented rows)
            assignment, joined = decide_split_assignment(labeled_corpus, settings.splits, settings.dedup, task,
                                                         check_cache=pipeline.result_cache(CONTAMINATION_RESULT),
                                                         texts=texts)
        except SplitError as err:
            raise dg.Failure(description=f"split_assignment: {err}", allow_retries=False) from err
        if cache is not None:
            cache.store(key, assignment, {"clusters_joined_after_split": joined})
    if joined:
        context.log.info(f"split_assignment: {joined} near-copy cluster(s) found across splits after the split; "
                         "their groups were joined and the split made again")
    sizes = dict(assignment.group_by("split").len().iter_rows())
    context.add_output_metadata({
        **settings_used(settings, "splits"), **_moves_metadata(assignment, _published(root)),
        "split_sizes": table(["split", "records"], [[name, sizes.get(name, 0)] for name in SPLITS]),
        "groups": assignment["group_id"].n_unique(), "clusters_joined_after_split": joined,
        "split_reused": hit is not None, "dagster/row_count": assignment.height}, output_name="result")
    yield from checked(context, pipeline, "split_assignment", assignment, labeled_corpus=labeled_corpus)


@dg.asset(group_name="splits", kinds={"polars", "huggingface"}, owners=OWNERS, dagster_type=SplitsFrame,
          metadata=column_schema(SPLIT_COLUMNS), check_specs=check_specs("dataset_splits"),
          description="Every record with its split and group: split_assignment applied to the augmented corpus "
                      "(originals by record id; augmented rows take their source's split and group, train). "
                      "Written as a candidate to .pipeline/staging/exports/splits/ (a datasets.DatasetDict and "
                      "JSONL, plus folds.parquet when k-fold is on); published_splits publishes it once the "
                      "blocking checks pass.")
def dataset_splits(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                   augmented_corpus: ShardedDataset, split_assignment: pl.DataFrame):
    require_upstream_checks(context, "augmented_corpus", "split_assignment")
    settings, root = pipeline.settings(), pipeline.data_root()
    task = task_for(settings)
    try:
        if streaming.enabled(settings):  # the rows streamed through in split order, written shard by shard (on Ray
            # each output shard joined and written by a Ray task: this process reads the ids, places the rows)
            with logged(context, "dataset_splits"), DatasetWriter(output_location(pipeline, "dataset_splits"),
                                                                  shard_rows=settings.execution.shard_rows) as writer:
                streaming.apply_split_dataset(augmented_corpus, split_assignment, writer,
                                              rows=streaming.batch_rows(settings), execution=settings.execution)
            splits = open_dataset(output_location(pipeline, "dataset_splits"))
        else:
            splits = apply_split_assignment(augmented_corpus.collect(), split_assignment)
    except SplitError as err:
        raise dg.Failure(description=f"dataset_splits: {err}", allow_retries=False) from err
    records = split_columns(splits, settings.splits.group_column)  # what the card, the folds, the metadata read
    target = exports.export_splits(splits, root.staged(root.splits_export), task)  # a dataset: shard by shard
    atomic.write_text(_dataset_card(pipeline, records, splits), target / "README.md")
    staged_folds = root.staged(root.folds)
    folds = cross_validation_folds(records, settings.splits, task)
    if folds.height:
        atomic.write_parquet(folds, staged_folds)
    else:
        staged_folds.unlink(missing_ok=True)
    context.add_output_metadata({**settings_used(settings, "splits"), **splits_metadata(records),
                                 "candidate_path": dg.MetadataValue.path(str(target))}, output_name="result")
    del records, folds, augmented_corpus, split_assignment  # the checks read what they need themselves
    yield from checked(context, pipeline, "dataset_splits", splits)


def _published(root) -> pl.DataFrame:
    """The last published split (exports/splits/), its record columns (`RECORD_COLUMNS`, never the texts);
    empty before the first publish."""
    return exports.published_columns(root.splits_export, RECORD_COLUMNS)


def _moves_metadata(splits: pl.DataFrame, previous: pl.DataFrame) -> dict:
    """How many original records of the last published split kept their split (ids and counts only)."""
    moves = split_moves(splits, previous)
    return {"split_stability": dg.MetadataValue.md(
        "nothing published yet" if previous.is_empty() else
        f"{moves['kept_split']} of {moves['old_records']} records of the last published split kept their split"
        + ("; moved: " + ", ".join(f"{k} {v}" for k, v in moves["moved"].items()) if moves["moved"] else "")
        + ". A group's place in its stratum is a hash of its id (splits.group_ranks): new records move few "
          "old ones, and the split equals a run from scratch."),
        "records_moved_split": sum(moves["moved"].values())}


def _dataset_card(pipeline: PipelineResource, splits: pl.DataFrame, texts: pl.DataFrame | ShardedDataset) -> str:
    """The Hugging Face dataset card of the export, from the stages' stored statistics and rejects; `splits`
    the records (their texts not needed), `texts` where the bias findings read the original records' texts."""
    settings, root = pipeline.settings(), pipeline.data_root()
    collection = CollectionStats.from_dict(pipeline.stage_stats("raw_corpus"))
    cleaning = CleaningStats.from_dict(pipeline.stage_stats("cleaned_corpus"))
    labeling = LabelingStats.from_dict(pipeline.stage_stats("labeled_corpus"))
    rejects = pl.concat([pipeline.stage_rejects(stage) for stage in CORPUS_STAGES])
    if isinstance(texts, pl.DataFrame) and "augmented_from" in texts.columns:
        texts = texts.filter(pl.col("augmented_from").is_null())
    findings = task_for(settings).bias_findings(texts, settings)  # a dataset: its augmented rows left out
    return reporting.dataset_card(
        settings, root.path.name, splits, pipeline.stage_counts(), dict(rejects.group_by("reason").len().iter_rows()),
        cleaning.pii_by_type, {t: c.files for t, c in collection.by_source_type.items()}, labeling.agreement, findings,
        domain=DedupStats.from_dict(pipeline.stage_stats("deduplicated_corpus")).domain)


@dg.asset(group_name="splits", kinds={"huggingface"}, owners=OWNERS,
          description="The published dataset, versioned: the dataset_splits candidate (and its folds) kept as a "
                      "new version under exports/versions/splits/<time>-<digest>/ with its run id, and made "
                      "current (exports/splits and exports/folds.parquet name it), only after every blocking "
                      "check of dataset_splits passed; the last publish.keep versions are kept, and a candidate "
                      "equal to a kept version makes no new one. A failed check leaves the current version as it "
                      "was. `finetune-pipeline rollback VERSION` makes an older one current.")
def published_splits(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                     dataset_splits: ShardedDataset) -> dict:
    require_upstream_checks(context, "dataset_splits")
    root = pipeline.data_root()
    version, new = versions.publish(root, versions.SPLITS, root.staged(root.splits_export), run_id=context.run_id,
                                    keep=pipeline.settings().publish.keep, folds=root.staged(root.folds),
                                    data_snapshot=exports.content_digest(dataset_splits.scan()))
    target = root.splits_export
    rows = {name: exports.jsonl_rows(target / f"{name}.jsonl") for name in SPLITS}
    context.add_output_metadata({"path": dg.MetadataValue.path(str(target)), "rows": sum(rows.values()),
                                 "version": version.version, "new_version": new,
                                 "data_snapshot": version.data_snapshot})
    return {"path": str(target), "rows": rows, "version": version.version}


def _candidate(pipeline: PipelineResource) -> dict:
    root = pipeline.data_root()
    return {"candidate": dg.MetadataValue.path(str(root.staged(root.splits_export)))}
