"""Incremental runs: what did not change is not computed again, and the results are those of a run from scratch.

Through the nightly job (`refresh_all`) on a small classification root with a tiny model: an unchanged rerun
trains nothing and writes byte-identical exports; a few new records give the exports a run from scratch gives;
a new erasure request removes its subject from every output on the next run. Through the library: the cleaning
cache equals `clean_corpus`, and a changed cleaning setting cleans again while a training setting does not.
"""

import hashlib
import json
import random
import shutil

import dagster as dg
import polars as pl
import pytest

from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.cache import cached_clean_corpus
from finetune_pipeline.cleaning.erasure import ErasureRequest
from finetune_pipeline.definitions import definitions_for
from finetune_pipeline.incremental import ResultCache, frame_digest
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import corpus_frame, make_record_id
from finetune_pipeline.settings import Settings
from finetune_pipeline.splits import split_key
from finetune_pipeline.tasks import task_for
from finetune_pipeline_tests.conftest import write_tiny_bert

SUBJECT = "anna.kowalski@example.com"
WORDS = {
    "billing": ["invoice", "refund", "charged", "twice", "payment", "receipt", "subscription", "fee", "credit", "note",
                "card", "statement", "amount", "bank", "transfer", "discount", "voucher", "price"],
    "shipping": ["parcel", "tracking", "courier", "delivery", "depot", "late", "package", "lost", "address", "box",
                 "driver", "warehouse", "label", "doorstep", "neighbour", "shipment", "van", "postcode"],
}
FILLER = ["please", "help", "me", "with", "this", "today", "since", "monday", "again", "still", "nothing", "happened",
          "my", "order", "number", "was", "and", "the", "team", "said"]


def _ticket(rng: random.Random, label: str) -> str:
    words = rng.sample(WORDS[label], 8) + rng.sample(FILLER, 10)
    rng.shuffle(words)
    return f"Hello, {' '.join(words)}. Order {rng.randint(1000, 9999)}, thanks."


def _write_tickets(root, n: int, seed: int, prefix: str = "t") -> None:
    rng = random.Random(seed)
    for label in WORDS:
        folder = root / "raw" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"{prefix}{i:03d}.txt").write_text(_ticket(rng, label) + "\n")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), dropout=0.0)


def _root(base, model: str):
    root = base / "data"
    _write_tickets(root, 16, seed=3)
    (root / "raw" / "billing" / "t000.txt").write_text(
        f"Hello, I was charged twice for order 4411 and want a refund. Write to {SUBJECT} please, thanks.\n")
    settings = {"labels": ["billing", "shipping"], "privacy": {"detector": "patterns"}, "checks": {"min_records": 5},
                # the feature approach (frozen tiny encoder + logistic regression) beats the baseline in seconds;
                # skipping is the same for every approach, and the comparison trains a LoRA adapter too
                "training": {"base_model": model, "approach": "feature", "epochs": 1, "batch_size": 8,
                             "max_length": 32, "compare": ["feature", "lora"]}}
    (root / "finetune.yaml").write_text(json.dumps(settings))
    return root


def _refresh(root, instance):
    result = definitions_for(DataRoot(root)).resolve_job_def("refresh_all").execute_in_process(
        instance=instance, raise_on_error=False)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    meta = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            meta[event.asset_key.to_user_string()] = {
                **materialization.metadata, "data_version": materialization.tags.get("dagster/data_version")}
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            meta[f"check {evaluation.check_name}"] = {**evaluation.metadata, "passed": evaluation.passed}
    return meta


def _digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _content(path) -> str:
    """A file's text: Parquet (compressed) read back as rows, anything else as bytes."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path).write_ndjson()
    return path.read_bytes().decode("utf-8", "replace")


def _card(root) -> str:
    """The dataset card without its version line (a version names its time and run: versions.py)."""
    lines = (root / "exports" / "splits" / "README.md").read_text().splitlines()
    assert sum(line.startswith("Version: `") for line in lines) == 1
    return "\n".join(line for line in lines if not line.startswith("Version: `"))


def _split_exports(root) -> dict[str, str]:
    return {name: (root / "exports" / "splits" / f"{name}.jsonl").read_text() for name in ("train", "validation", "test")}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, model):
    root = _root(tmp_path_factory.mktemp("incremental"), model)
    instance = dg.DagsterInstance.ephemeral()
    meta = _refresh(root, instance)
    return root, instance, meta


def test_an_unchanged_rerun_trains_nothing_and_writes_byte_identical_exports(first_run):
    root, instance, first = first_run
    assert first["lora_adapter"]["trained"].value is True and first["approach_comparison"]["trained"].value is True
    exports_before, models_before = _digests(root / "exports"), _digests(root / "models")

    again = _refresh(root, instance)
    assert first["split_assignment"]["split_reused"].value is False
    assert again["split_assignment"]["split_reused"].value is True  # the stored split of the same corpus
    # The check reads every row: on the first run the split's last look asked the same of the originals, the
    # same rows only when augmentation added none; on the rerun, the check's own answer of the same rows.
    added = first["augmented_corpus"]["augmented_rows"].value
    for run, reused in ((first, added == 0), (again, True)):
        contamination = run["check dataset_splits_no_contamination"]
        assert contamination["passed"] and contamination["answer_reused"].value is reused
    assert again["cleaned_corpus"]["rows_cleaned"].value == 0
    assert again["cleaned_corpus"]["rows_reused"].value == first["cleaned_corpus"]["rows_in"].value
    for asset in ("lora_adapter", "approach_comparison"):
        assert again[asset]["trained"].value is False
        assert "unchanged" in again[asset]["training_decision"].value
        assert again[asset]["data_version"] == first[asset]["data_version"] is not None  # Dagster sees no change
    assert _digests(root / "exports") == exports_before
    models_after = _digests(root / "models")
    registry = "registry.json"
    assert {k: v for k, v in models_after.items() if k != registry} == \
        {k: v for k, v in models_before.items() if k != registry}


def test_a_rerun_with_new_records_equals_a_run_from_scratch(first_run, tmp_path, model):
    root, instance, _ = first_run
    _write_tickets(root, 2, seed=99, prefix="new")
    incremental = _refresh(root, instance)
    assert incremental["cleaned_corpus"]["rows_cleaned"].value == 4
    assert incremental["split_assignment"]["split_reused"].value is False  # another corpus: split again
    assert incremental["lora_adapter"]["trained"].value is True  # the data snapshot changed

    scratch = tmp_path / "data"  # the dataset card is named after the root folder
    shutil.copytree(root / "raw", scratch / "raw")
    shutil.copy(root / "finetune.yaml", scratch / "finetune.yaml")
    from_scratch = _refresh(scratch, dg.DagsterInstance.ephemeral())
    assert from_scratch["cleaned_corpus"]["rows_reused"].value == 0
    assert _split_exports(root) == _split_exports(scratch)
    assert pl.read_parquet(root / "exports" / "rejects.parquet").equals(
        pl.read_parquet(scratch / "exports" / "rejects.parquet"))
    assert _card(root) == _card(scratch)
    assert incremental["lora_adapter"]["data_snapshot"].value == from_scratch["lora_adapter"]["data_snapshot"].value


def test_a_new_erasure_request_removes_the_subject_from_every_output_on_the_next_run(first_run):
    root, instance, _ = first_run
    written = [root / "exports", root / "models", root / ".pipeline"]

    def found() -> list[str]:
        return [str(p) for folder in written for p in folder.rglob("*") if p.is_file() and SUBJECT in _content(p)]

    # before the request the address is only in what collection stored (raw_corpus, the parse cache): later
    # stages hold the redacted text and no clear copy
    assert found() and all("/assets/raw_corpus/" in p or "parse_cache" in p for p in found())
    (root / "erasure_requests.csv").write_text(f"request_id,subject\nER-9,{SUBJECT}\n")
    meta = _refresh(root, instance)
    assert meta["cleaned_corpus"]["records_erased"].value == 1
    assert meta["cleaned_corpus"]["rows_cleaned"].value == 1  # only the record the request names is cleaned again
    assert found() == []
    assert meta["lora_adapter"]["trained"].value is True


# ---- the cleaning cache through the library

def _corpus() -> pl.DataFrame:
    rng = random.Random(5)
    rows = [{"record_id": make_record_id(f"raw/{label}/{i}.txt", "element 0"), "text": _ticket(rng, label),
             "source_uri": f"raw/{label}/{i}.txt", "source_type": "txt", "locator": "element 0", "label": label,
             "label_source": "folder"} for label in WORDS for i in range(6)]
    rows[0]["text"] += f" Mail me at {SUBJECT} or call +1 555 014 2231."
    rows[1]["text"] = "Too short."
    # a PDF whose pages share a header line: cleaned together, cached as one unit
    header = "ACME Shop - Customer Service - Confidential"
    rows += [{"record_id": make_record_id("raw/letter.pdf", f"page {p}"), "source_uri": "raw/letter.pdf",
              "source_type": "pdf", "locator": f"page {p}", "label": "billing", "label_source": "folder",
              "text": f"{header}\n{_ticket(rng, 'billing')}\nPage {p}"} for p in (1, 2, 3)]
    return corpus_frame(rows)


def _same(result, reference) -> None:
    assert result.kept.equals(reference.kept)
    assert result.rejected.equals(reference.rejected)
    assert result.stats == reference.stats


@pytest.mark.parametrize("detector", ["patterns", "presidio"])
def test_the_cleaning_cache_gives_what_cleaning_from_scratch_gives(tmp_path, detector):
    corpus, settings = _corpus(), Settings(privacy={"detector": detector})
    cache = tmp_path / "cleaned.parquet"
    reference = clean_corpus(corpus, settings)
    assert reference.rejected.height and reference.stats.pii_by_type

    first, report = cached_clean_corpus(corpus.head(corpus.height - 2), settings, None, cache)
    assert report.rows_reused == 0
    again, report = cached_clean_corpus(corpus, settings, None, cache)
    # the two missing PDF pages change the document: its three pages are one unit, cleaned again
    assert (report.rows_reused, report.rows_cleaned, report.units_cleaned) == (corpus.height - 3, 3, 1)
    _same(again, reference)
    rerun, report = cached_clean_corpus(corpus, settings, None, cache)
    assert report.rows_cleaned == 0
    _same(rerun, reference)


def test_a_changed_cleaning_setting_cleans_again_and_a_training_setting_does_not(tmp_path):
    corpus, settings = _corpus(), Settings(privacy={"detector": "patterns"})
    cache = tmp_path / "cleaned.parquet"
    cached_clean_corpus(corpus, settings, None, cache)

    stricter = settings.model_copy(update={"cleaning": settings.cleaning.model_copy(update={"min_chars": 150})})
    result, report = cached_clean_corpus(corpus, stricter, None, cache)
    assert report.rows_reused == 0 and report.rows_cleaned == corpus.height
    _same(result, clean_corpus(corpus, stricter))
    assert result.rejected.filter(pl.col("reason") == "too_short").height > 1

    other_training = stricter.model_copy(update={"training": stricter.training.model_copy(update={"epochs": 2})})
    _, report = cached_clean_corpus(corpus, other_training, None, cache)
    assert report.rows_cleaned == 0


def test_an_erasure_request_cleans_only_what_it_names_and_leaves_no_trace_in_the_cache(tmp_path):
    corpus, settings = _corpus(), Settings(privacy={"detector": "patterns"})
    cache = tmp_path / "cleaned.parquet"
    cached_clean_corpus(corpus, settings, None, cache)
    assert SUBJECT not in _content(cache)  # the cleaning cache holds the redacted text only, no clear copy
    requests = [ErasureRequest("ER-1", SUBJECT)]
    result, report = cached_clean_corpus(corpus, settings, requests, cache)
    assert report.rows_cleaned == 1
    _same(result, clean_corpus(corpus, settings, requests))
    assert result.stats.erasure.records_removed == 1
    assert SUBJECT not in _content(cache) and "555 014 2231" not in _content(cache)


# ---- the sensor on finetune.yaml and erasure_requests.csv

def test_a_changed_section_or_erasure_request_runs_the_stages_it_affects_and_no_others(tmp_path):
    from finetune_pipeline.defs.automation import settings_changed
    from finetune_pipeline.defs.resources import PipelineResource

    settings = tmp_path / "finetune.yaml"
    settings.write_text("labels: [billing, shipping]\n")

    defs = definitions_for(DataRoot(tmp_path))

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, definitions=defs,
                                          resources={"pipeline": PipelineResource(data_dir=str(tmp_path))})
        result = settings_changed(context)
        stages = sorted(k.to_user_string() for k in result.asset_selection) \
            if isinstance(result, dg.RunRequest) else None
        return stages, context.cursor

    stages, cursor = tick(None)
    assert stages is None  # the first evaluation records the settings
    stages, cursor = tick(cursor)
    assert stages is None

    settings.write_text("labels: [billing, shipping]\ntraining: {epochs: 2}\n")
    stages, cursor = tick(cursor)
    assert stages == ["approach_comparison", "data_card", "lora_adapter", "published_adapter", "published_comparison"]

    settings.write_text("labels: [billing, shipping]\ntraining: {epochs: 2}\nsplits: {seed: 7}\n")
    stages, cursor = tick(cursor)  # the split is decided before augmentation, which reads it
    assert {"split_assignment", "augmented_corpus", "dataset_splits", "published_splits", "lora_adapter"} \
        <= set(stages) and "labeled_corpus" not in stages

    settings.write_text("labels: [billing, shipping]\ntraining: {epochs: 2}\ncleaning: {min_chars: 60}\n")
    stages, cursor = tick(cursor)
    assert "cleaned_corpus" in stages and "lora_adapter" in stages and "raw_corpus" not in stages

    (tmp_path / "erasure_requests.csv").write_text("request_id,subject\nER-1,someone@example.com\n")
    stages, cursor = tick(cursor)
    assert {"cleaned_corpus", "deduplicated_corpus", "published_splits"} <= set(stages) and "raw_corpus" not in stages

    settings.write_text("labels: [billing, shipping]\ntraining: {epochs: 2}\ncleaning: {min_chars: 60}\n"
                        "execution: {batch_size: 7}\n")  # where work runs, not what it gives
    stages, cursor = tick(cursor)
    assert stages is None

    settings.write_text("training: {epochs: -1}\n")  # invalid: nothing runs, and the cursor stays
    stages, after = tick(cursor)
    assert stages is None and after == cursor
    sensor = defs.get_sensor_def("settings_changed")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.job_name == "refresh_all"


def test_the_export_check_scans_only_texts_it_has_not_seen_with_these_settings(tmp_path, monkeypatch):
    from collections import Counter

    from finetune_pipeline.cleaning import cache as cleaning_cache
    from finetune_pipeline.cleaning.privacy import personal_data_left
    from finetune_pipeline.settings import PrivacySettings

    texts = ["My parcel never came, call me on +44 20 7946 0958.", "The app crashes at login.",
             "Ask <PERSON> about the refund.", "Mail anna.berg@example.com with the receipt.",
             "The app crashes at login."]
    policy, file = PrivacySettings(detector="patterns"), tmp_path / "personal_data_check.parquet"
    scanned: list[int] = []

    def counting(batch, settings):
        scanned.append(len(batch))
        return personal_data_left(batch, settings)

    monkeypatch.setattr(cleaning_cache, "personal_data_left", counting)
    expected = personal_data_left(texts, policy)
    assert cleaning_cache.cached_personal_data_left(texts, policy, file) == expected
    assert expected[0] == Counter(phone=1) and expected[3] == Counter(email=1) and not expected[1]
    assert scanned == [4]  # the repeated text once
    assert cleaning_cache.cached_personal_data_left(texts, policy, file) == expected and scanned == [4]
    assert cleaning_cache.cached_personal_data_left(texts + ["Or ring 020 7946 0958."], policy, file)[-1] \
        == Counter(phone=1) and scanned == [4, 1]
    keep_phones = PrivacySettings(detector="patterns", phone="keep")
    assert cleaning_cache.cached_personal_data_left(texts, keep_phones, file)[0] == Counter()  # scanned again
    assert scanned == [4, 1, 4]
    assert not any(t in file.read_bytes().decode("latin-1") for t in ("anna.berg", "7946"))  # keys, not texts
    file.write_bytes(b"not parquet")  # a damaged cache: every text scanned again, the same counts
    assert cleaning_cache.cached_personal_data_left(texts, policy, file) == expected and scanned == [4, 1, 4, 4]


# ---- whole results kept with their key: the split of an unchanged corpus, the contamination check's answer

def _split_corpus(n: int = 30) -> pl.DataFrame:
    rng = random.Random(11)
    rows = [{"record_id": f"r{i:03d}", "text": _ticket(rng, label), "label": label, "group_id": f"r{i:03d}",
             "source_uri": f"raw/{label}/{i}.txt", "source_type": "txt", "augmented_from": None} for i, label in enumerate(list(WORDS) * (n // 2))]
    rows.append({**rows[0], "record_id": "r999", "group_id": "r999",
                 "text": rows[0]["text"].replace("thanks", "thank you")})  # a light edit of r000
    return pl.DataFrame(rows, schema_overrides={"augmented_from": pl.String})


def test_frame_digest_sees_every_value_its_type_and_the_order():
    frame = _split_corpus()
    assert frame_digest(frame) == frame_digest(frame.clone())
    assert frame_digest(frame) != frame_digest(frame.reverse())
    assert frame_digest(frame) != frame_digest(frame.with_columns(
        pl.when(pl.col("record_id") == "r004").then(pl.lit("shipping")).otherwise("label").alias("label")))
    assert frame_digest(frame) != frame_digest(frame.with_columns(pl.col("augmented_from").cast(pl.Categorical)))


def test_a_result_cache_returns_only_what_was_stored_under_the_key(tmp_path):
    cache, frame = ResultCache(tmp_path, "x"), _split_corpus()
    assert cache.load("k1") is None
    cache.store("k1", frame, {"joined": 2})
    stored, info = cache.load("k1")
    assert stored.equals(frame) and info == {"joined": 2}
    assert cache.load("k2") is None
    cache.frame_file.write_bytes(b"not parquet")  # damaged: computed again, no crash
    assert cache.load("k1") is None


def test_the_contamination_answer_is_reused_only_for_the_same_rows(tmp_path, monkeypatch):
    from finetune_pipeline import splits as splits_module

    settings = Settings()
    corpus = _split_corpus()
    splits, joined = splits_module.contamination_free_splits(corpus, settings.splits, settings.dedup)
    cache = ResultCache(tmp_path, "contamination")
    reference = splits_module.cross_split_near_duplicates(splits, 0.5, settings.dedup)
    assert splits_module.cross_split_near_duplicates(splits, 0.5, settings.dedup, cache).equals(reference)

    calls = []
    real = splits_module._contamination_clusters
    monkeypatch.setattr(splits_module, "_contamination_clusters", lambda *a: calls.append(1) or real(*a))
    assert splits_module.cross_split_near_duplicates(splits, 0.5, settings.dedup, cache).equals(reference)
    assert calls == []  # the same rows: the stored answer
    # r999 (a light edit of r000) moved to another split: a leak the check must find, and it does
    leak = splits.with_columns(pl.when(pl.col("record_id") == "r999")
                               .then(pl.lit("test" if splits.filter(pl.col("record_id") == "r000")["split"][0] != "test"
                                            else "train")).otherwise("split").alias("split"))
    found = splits_module.cross_split_near_duplicates(leak, 0.5, settings.dedup, cache)
    assert calls == [1] and found["record_ids"].to_list() == [["r000", "r999"]]
    assert splits_module.cross_split_near_duplicates(leak, 0.6, settings.dedup, cache) is not None
    assert calls == [1, 1]  # another threshold: asked again


def test_the_split_key_changes_with_the_corpus_and_the_split_settings():
    settings, corpus = Settings(), _split_corpus()
    task = task_for(settings)
    key = split_key(corpus, settings.splits, settings.dedup, task)
    assert key == split_key(corpus.clone(), settings.splits, settings.dedup, task)
    assert key != split_key(corpus.head(corpus.height - 1), settings.splits, settings.dedup, task)
    assert key != split_key(corpus, settings.splits.model_copy(update={"seed": 7}), settings.dedup, task)
    assert key != split_key(corpus, settings.splits.model_copy(update={"contamination_threshold": 0.6}),
                            settings.dedup, task)


def test_without_incremental_runs_the_stages_delete_what_an_earlier_run_cached(tmp_path):
    """A run from scratch after an erasure request must not leave the subject's text in an old cache."""
    from finetune_pipeline.defs.resources import PipelineResource

    (tmp_path / "finetune.yaml").write_text(json.dumps({"execution": {"incremental": False}}))
    root = DataRoot(tmp_path)
    pipeline = PipelineResource(data_dir=str(tmp_path))
    files = [root.cleaning_cache, root.personal_data_check_cache, root.embedding_cache / "labeled_corpus.parquet",
             root.result_cache / "split_assignment.parquet", root.result_cache / "split_assignment.json"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SUBJECT)
    assert pipeline.cache_file(root.cleaning_cache) is None and pipeline.cache_file(root.personal_data_check_cache) is None
    assert pipeline.embedding_cache("labeled_corpus") is None and pipeline.result_cache("split_assignment") is None
    assert [p for p in files if p.exists()] == []

    (tmp_path / "finetune.yaml").write_text(json.dumps({"execution": {"incremental": True}}))
    pipeline = PipelineResource(data_dir=str(tmp_path))
    assert pipeline.cache_file(root.cleaning_cache) == root.cleaning_cache
    assert pipeline.result_cache("split_assignment") is not None
