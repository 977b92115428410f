"""The local streaming path (streaming.py) gives what the in-memory stages give: the same rows, in the same
order, with the same values, rejects and statistics, on a slice of the sample data (its CSV, JSONL and
SQLite tables, every ninth without its label; its documents are left out to keep the test fast) plus a generated
multi-page PDF's chunks (page headers are found across a document's pages, so a document is cleaned in one
batch) placed in the middle, with shards of 64 rows: several shards, batches cut between documents, the
dedup keep order and the split order different from the input's (windowed writes)."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from finetune_pipeline import shards
from finetune_pipeline import streaming as st
from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.cleaning.cache import cached_clean_corpus
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.labeling import apply_labels
from finetune_pipeline.labeling.annotations import load_annotations
from finetune_pipeline.labeling.zero_shot import Predictions
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import make_record_id, sha256_text
from finetune_pipeline.settings import load_settings
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline.splits import apply_split_assignment, split_assignment
from finetune_pipeline.tasks import task_for
from finetune_pipeline_tests.conftest import copy_sample_data

ROWS = 64
HEADER = "Northwind Logistics - internal handbook - do not forward"
TOPICS = ["late parcels", "lost parcels", "damaged boxes", "wrong addresses", "customs forms", "courier strikes",
          "signature refusals", "return labels", "pallet deliveries", "locker pickups", "weekend slots"]


def _manual_pages(template: dict, pages: int) -> list[dict]:
    """A paged document's chunks: each page starts with the same header line (removed by cleaning only when
    the pages are seen together) and ends with its number."""
    uri = "raw/manuals/handbook.pdf"
    rows = []
    for page in range(1, pages + 1):
        topic = TOPICS[page % len(TOPICS)]
        text = (f"{HEADER}\nSection {page} is about {topic}: how the depot handles it, who signs for it "
                f"and what the customer is told by the support team in the first reply, with "
                f"{TOPICS[(page * 7) % len(TOPICS)]} included.\n{page}")  # over 120 characters: never a header
        rows.append({**template, "record_id": make_record_id(uri, f"page {page}"), "text": text,
                     "source_uri": uri, "source_type": "pdf", "locator": f"page {page}",
                     "content_sha256": sha256_text(text), "label": "shipping", "label_source": "folder",
                     "label_confidence": None})
    return rows


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return sample_corpus(tmp_path_factory.mktemp("streaming") / "data")


def sample_corpus(folder):
    """(data root, its settings, the module's corpus): also read by test_ray_backend.py."""
    root = copy_sample_data(folder)
    for path in list(DataRoot(root).raw.rglob("*")):  # the tables only: parsing documents takes seconds
        if path.is_file() and path.parent.name not in ("exports", "db"):
            path.unlink()
    settings = load_settings(root, overrides="privacy: {detector: patterns}\n"
                                             "domain: {description: null, examples_dir: null}")
    raw = collect_raw_corpus(root, settings).kept
    # every ninth record without its label, for the zero-shot model
    unlabeled = pl.int_range(pl.len()) % 9 == 4
    raw = raw.with_columns([pl.when(unlabeled).then(None).otherwise(pl.col(c)).alias(c)
                            for c in ("label", "label_source", "label_confidence")])
    pages = pl.DataFrame(_manual_pages(raw.row(0, named=True), 75), schema=raw.schema)
    corpus = pl.concat([raw.slice(0, 40), pages, raw.slice(40)])  # the document spans shards 1 and 2
    return root, settings, corpus


def _keyword_labeler(texts, labels, cfg, train_texts=None, train_labels=None):
    """A stand-in for the zero-shot model, from the text alone: every text it gets must be there."""
    assert all(isinstance(text, str) and text for text in texts)
    words = {"billing": "refund", "shipping": "parcel", "account_access": "login", "technical_issue": "error"}
    chosen = [next((label for label in labels if words.get(label, label) in text.lower()), labels[0])
              for text in texts]
    confidences = [0.9 if words.get(label, label) in text.lower() else 0.3 for label, text in zip(chosen, texts)]
    return Predictions(labels=chosen, confidences=confidences, model="keywords")


def _frame(location) -> pl.DataFrame:
    return shards.open_dataset(location).collect()


def _writers(tmp_path, name):
    return (shards.DatasetWriter(tmp_path / name, shard_rows=ROWS),
            shards.DatasetWriter(tmp_path / f"{name}-rejects", shard_rows=ROWS))


def test_every_stage_streamed_equals_the_in_memory_stage(sample, tmp_path):
    root, settings, corpus = sample
    settings = settings.model_copy(update={"execution": settings.execution.model_copy(update={"shard_rows": ROWS})})
    shards.write_dataset(corpus, tmp_path / "raw", shard_rows=ROWS)
    raw = shards.open_dataset(tmp_path / "raw")
    assert len(raw.manifest.shards) >= 3

    # cleaning, batch by batch, with the cache: from scratch, then every unit reused
    cleaned, _ = cached_clean_corpus(corpus, settings, [], None)
    assert not cleaned.kept["text"].str.contains(HEADER).any()  # the pages were cleaned together
    for run in ("cold", "warm"):
        kept, rejected = _writers(tmp_path, f"cleaned-{run}")
        stats, reuse = st.clean_dataset(raw, settings, [], kept, rejected, cache_file=tmp_path / "cache.parquet")
        kept.commit(), rejected.commit()
        assert _frame(tmp_path / f"cleaned-{run}").equals(cleaned.kept)
        assert _frame(tmp_path / f"cleaned-{run}-rejects").equals(cleaned.rejected)
        assert stats.to_dict() == cleaned.stats.to_dict()
        assert (reuse.rows_reused, reuse.rows_cleaned) == ((0, corpus.height) if run == "cold" else (corpus.height, 0))
    batches = list(st.document_batches(raw, ROWS))
    assert len(batches) >= 3 and sum(b.height for b in batches) == corpus.height
    assert sum(b["source_type"].eq("pdf").any() for b in batches) == 1  # the document in one batch
    # the same cuts read from the deciding columns only (the Ray path's batches)
    heights = [b.height for b in batches]
    assert st.document_ranges(raw, ROWS) == [(sum(heights[:i]), sum(heights[:i + 1])) for i in range(len(heights))]

    # dedup: the keep order is not the input's (a windowed write)
    deduplicated = deduplicate(cleaned.kept, settings)
    kept, rejected = _writers(tmp_path, "dedup")
    stats = st.deduplicate_dataset(shards.open_dataset(tmp_path / "cleaned-warm"), settings, kept, rejected)
    kept.commit(), rejected.commit()
    assert deduplicated.rejected.height > 0
    assert _frame(tmp_path / "dedup").equals(deduplicated.kept)
    assert _frame(tmp_path / "dedup-rejects").equals(deduplicated.rejected)
    assert stats.to_dict() == deduplicated.stats.to_dict()

    # labeling: a model on the records without a label (a keyword labeler: the zero-shot model takes 8 s to
    # load), given texts never read whole
    annotations, problems = load_annotations(DataRoot(root).annotations)
    labeled = apply_labels(deduplicated.kept, settings, annotations, problems, labeler=_keyword_labeler)
    kept, rejected = _writers(tmp_path, "labeled")
    stats, review = st.label_dataset(shards.open_dataset(tmp_path / "dedup"), settings, kept, rejected,
                                     annotations, problems, labeler=_keyword_labeler)
    kept.commit(), rejected.commit()
    assert labeled.stats.model.predicted > 0
    assert _frame(tmp_path / "labeled").equals(labeled.kept)
    assert _frame(tmp_path / "labeled-rejects").equals(labeled.rejected)
    assert stats.to_dict() == labeled.stats.to_dict() and review.equals(labeled.review_queue)

    # the split decided on the columns it reads, augmentation, the split applied in split order
    assignment, _ = split_assignment(labeled.kept, settings.splits, settings.dedup, task_for(settings))
    streamed_assignment, _ = st.split_assignment_dataset(shards.open_dataset(tmp_path / "labeled"), settings)
    assert streamed_assignment.equals(assignment)
    # a column the split reads only when it is the group column (`streaming.SPLIT_PASSENGERS`) is read then
    by_locator = settings.model_copy(update={"splits": settings.splits.model_copy(
        update={"group_by": "column", "group_column": "locator"})})
    streamed, _ = st.split_assignment_dataset(shards.open_dataset(tmp_path / "labeled"), by_locator)
    assert streamed.equals(split_assignment(labeled.kept, by_locator.splits, settings.dedup, task_for(settings))[0])
    columns = {name: st.split_inputs(shards.open_dataset(tmp_path / "labeled"), s)[0].columns
               for name, s in (("default", settings), ("by locator", by_locator))}
    assert "locator" not in columns["default"] and "locator" in columns["by locator"]
    augmented = augment_corpus(labeled.kept, settings, assignment=assignment)
    kept, _ = _writers(tmp_path, "augmented")
    stats = st.augment_dataset(shards.open_dataset(tmp_path / "labeled"), settings, kept, assignment=assignment)
    kept.commit()
    assert augmented.stats.augmented_rows > 0
    assert _frame(tmp_path / "augmented").equals(augmented.kept) and stats.to_dict() == augmented.stats.to_dict()
    splits = apply_split_assignment(augmented.kept, assignment)
    writer = shards.DatasetWriter(tmp_path / "splits", shard_rows=ROWS)
    st.apply_split_dataset(shards.open_dataset(tmp_path / "augmented"), assignment, writer, rows=ROWS)
    writer.commit()
    assert _frame(tmp_path / "splits").equals(splits)


def test_augmentation_off_streams_the_originals(sample, tmp_path):
    _, settings, corpus = sample
    settings = settings.model_copy(update={"augmentation": settings.augmentation.model_copy(
        update={"oversample": False, "paraphrase": False, "synthetic": False})})
    frame = corpus.with_columns(pl.lit("x").alias("group_id"))
    shards.write_dataset(frame, tmp_path / "in", shard_rows=ROWS)
    writer = shards.DatasetWriter(tmp_path / "out", shard_rows=ROWS)
    stats = st.augment_dataset(shards.open_dataset(tmp_path / "in"), settings, writer)
    writer.commit()
    expected = augment_corpus(frame, settings)
    assert _frame(tmp_path / "out").equals(expected.kept) and stats.to_dict() == expected.stats.to_dict()


def test_a_document_split_across_the_corpus_is_refused(sample, tmp_path):
    _, _, corpus = sample
    pages = corpus.filter(pl.col("source_type") == "pdf")
    others = corpus.filter(pl.col("source_type") != "pdf")
    torn = pl.concat([pages.head(3), others.head(ROWS * 2), pages.slice(3)])
    shards.write_dataset(torn, tmp_path / "torn", shard_rows=ROWS)
    with pytest.raises(ValueError, match="handbook.pdf are not together"):
        list(st.document_batches(shards.open_dataset(tmp_path / "torn"), ROWS))


def test_combine_stats_sums_counts_and_merges_dicts():
    from finetune_pipeline.cleaning.erasure import ErasureReport
    from finetune_pipeline.cleaning.stage import CleaningStats

    first = CleaningStats(texts_changed=2, pii_by_type={"EMAIL": 1}, warnings=["no tokenizer"],
                          erasure=ErasureReport(requests=2, records_removed=1, removed_by_request={"r1": 1, "r2": 0}))
    second = CleaningStats(texts_changed=3, pii_by_type={"EMAIL": 2, "PHONE": 1}, warnings=["no tokenizer"],
                           erasure=ErasureReport(requests=2, records_removed=1, removed_by_request={"r1": 0, "r2": 1}))
    both = st.combine_stats(first, second, same=frozenset({"requests"}))
    assert both.texts_changed == 5 and both.pii_by_type == {"EMAIL": 3, "PHONE": 1}
    assert both.warnings == ["no tokenizer"]
    assert both.erasure == ErasureReport(requests=2, records_removed=2, removed_by_request={"r1": 1, "r2": 1})


def test_write_joined_names_an_output_row_without_input(tmp_path):
    shards.write_dataset(pl.DataFrame({"record_id": ["a", "b"], "text": ["x", "y"]}), tmp_path / "d", shard_rows=1)
    writer = shards.DatasetWriter(tmp_path / "o")
    with pytest.raises(ValueError, match="no input row for output record"):
        st.write_joined(shards.open_dataset(tmp_path / "d"), pl.DataFrame({"record_id": ["b", "zz"]}), writer,
                        passengers=("text",), columns=["record_id", "text"])
    writer.abort()
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_texts_where_reads_the_chosen_texts_in_place_across_shards(tmp_path):
    frame = pl.DataFrame({"record_id": [f"r{i:03d}" for i in range(200)],
                          "text": [f"text number {i} " * 3 for i in range(200)],
                          "label": [None if i % 9 == 0 else "a" for i in range(200)],
                          "label_source": ["human" if i % 31 == 0 else "column" for i in range(200)]})
    shards.write_dataset(frame, tmp_path / "d", shard_rows=64)
    read = pl.col("label").is_null() | pl.col("label_source").is_in(["human"])
    got = st.texts_where(shards.open_dataset(tmp_path / "d"), read)
    assert got.to_list() == frame.select(pl.when(read).then(pl.col("text")))["text"].to_list()
    assert 0 < got.drop_nulls().len() < 200
    nothing = st.texts_where(shards.open_dataset(tmp_path / "d"), pl.col("label") == "none")
    assert nothing.len() == 200 and nothing.null_count() == 200


def test_collection_hands_over_one_source_at_a_time_and_adds_up_to_the_whole(sample):
    from finetune_pipeline.sources import collect_sources

    root, _, _ = sample
    settings = load_settings(root, overrides="privacy: {detector: patterns}")
    parts = []
    stats = collect_sources(root, settings, lambda rows, rejects: parts.append((rows, rejects)))
    whole = collect_raw_corpus(root, settings)
    assert stats.files >= 2 and len(parts) >= stats.files  # one hand-over per file (and the SQL sources')
    assert max(rows.height for rows, _ in parts) < whole.kept.height
    assert all(rows.schema == whole.kept.schema for rows, _ in parts)
    assert pl.concat([rows for rows, _ in parts]).drop("ingested_at").equals(whole.kept.drop("ingested_at"))
    assert pl.concat([rejects for _, rejects in parts]).equals(whole.rejected)


@pytest.mark.parametrize("source_rows", [[1, 2, 2, 4], [3, 4, 4, 6], [0, 1, 2, 3], [6, 3, 4, 4, 0], [2, 2, 2]],
                         ids=["repeats-in-a-shard", "repeats-across-shards", "a-run", "out-of-order", "one-row-thrice"])
def test_write_rows_takes_each_input_row_as_often_and_in_the_order_named(tmp_path, source_rows):
    """`streaming.write_rows` (the window writer of the local path and of the Ray tasks): an oversampled copy
    names its source's row again, so rows repeat; a run of consecutive rows is read as a slice, any other
    selection gathered. Every output row must be the input row named, in the order named, across shards."""
    frame = pl.DataFrame({"record_id": [f"r{i}" for i in range(8)], "text": [f"text {i}" for i in range(8)]})
    shards.write_dataset(frame, tmp_path / "in", shard_rows=5)  # rows 0-4 and 5-7
    dataset = shards.open_dataset(tmp_path / "in")
    decided = pl.DataFrame({"n": list(range(len(source_rows)))})
    part = st.JoinedRows(np.array(source_rows), ["record_id", "text"], decided)
    schema = {"n": pl.Int64, "record_id": pl.String, "text": pl.String}
    with shards.DatasetWriter(tmp_path / "out", shard_rows=2) as writer:
        assert st.write_rows(dataset, [part], writer, schema, rows=3) == len(source_rows)
    written = shards.open_dataset(tmp_path / "out").collect()
    assert written["text"].to_list() == [f"text {i}" for i in source_rows]
    assert written["n"].to_list() == list(range(len(source_rows)))


def _assert_close(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """The same frame but for its floats, which agree to 1e-5."""
    assert got.schema == want.schema and got.height == want.height
    for name, dtype in got.schema.items():
        if dtype.is_float():
            assert np.allclose(got[name].to_numpy(), want[name].to_numpy(), atol=1e-5, equal_nan=True), name
        else:
            assert got[name].equals(want[name]), name


@pytest.mark.parametrize("model", ["zero-shot", "classifier"])
def test_the_built_in_labeler_reads_no_text_it_labels_and_labels_as_in_memory(sample, tmp_path, monkeypatch, model):
    """The zero-shot model (and the classifier on given labels) names the records it labels by their row
    (`labeling.rows`): their texts are embedded shard by shard and never read into the stage but for the review
    queue's; labels, confidences, rejects, statistics and the review queue (its texts and its order, from the
    label probabilities) are the in-memory labeler's."""
    root, settings, corpus = sample
    labeling = {"review_threshold": 0.95, "audit_share": 0.5}  # some held for review, some audited
    if model == "classifier":  # trained on the given labels
        labeling |= {"classifier_label_sources": ["column", "folder"], "min_human_labels_for_classifier": 20}
    settings = settings.model_copy(update={
        "labeling": settings.labeling.model_copy(update=labeling),
        "execution": settings.execution.model_copy(update={"shard_rows": ROWS})})
    annotations, problems = load_annotations(DataRoot(root).annotations)
    expected = apply_labels(corpus, settings, annotations, problems)  # the built-in labeler on the whole frame
    assert expected.stats.model.predicted > 0 and expected.stats.model.name.startswith(
        "zero-shot" if model == "zero-shot" else "logistic regression")
    reasons = expected.review_queue["reason"].to_list()
    assert "low_confidence" in reasons and "audit" in reasons

    shards.write_dataset(corpus, tmp_path / "in", shard_rows=ROWS)
    read, taken = [], []
    texts_where, take = st.texts_where, shards.ShardedDataset.take
    monkeypatch.setattr(st, "texts_where", lambda *a: read.append(texts_where(*a)) or read[-1])
    monkeypatch.setattr(shards.ShardedDataset, "take",
                        lambda self, rows, columns: taken.append(np.array(rows)) or take(self, rows, columns))
    kept, rejected = _writers(tmp_path, "labeled")
    stats, review = st.label_dataset(shards.open_dataset(tmp_path / "in"), settings, kept, rejected,
                                     annotations, problems)
    kept.commit(), rejected.commit()
    # The vectors are embedded shard by shard here, all at once in memory: the encoder's batches differ, and a
    # text's vector with them in its last bits (at most 3e-7 a component on the soak corpus), so a confidence
    # may differ in its 6th decimal (one of these 11 did); everything else is the same.
    _assert_close(_frame(tmp_path / "labeled"), expected.kept)
    assert _frame(tmp_path / "labeled-rejects").equals(expected.rejected)
    got, want = stats.to_dict(), expected.stats.to_dict()
    assert abs(got["model"].pop("mean_confidence") - want["model"].pop("mean_confidence")) < 1e-5 and got == want
    _assert_close(review.sort("record_id"), expected.review_queue.sort("record_id"))
    assert review["text"].null_count() == 0

    # the texts of the records the model labeled stayed in the shards: read only for the review queue's
    annotated = annotations["record_id"].unique().implode()
    model_labeled = corpus.select((pl.col("label").is_null() & ~pl.col("record_id").is_in(annotated)).alias("x"))
    assert len(read) == 1 and read[0].filter(model_labeled["x"]).null_count() == model_labeled["x"].sum()
    assert len(taken) == 1 and len(taken[0]) == expected.stats.model.in_review + reasons.count("audit")
