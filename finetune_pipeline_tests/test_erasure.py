"""Right to erasure: a request names a subject (email, phone, record id, source file); on the next run its
records are gone from every stage, every export and the data card, which lists the request ids only."""

import polars as pl
import pytest

from finetune_pipeline import exports, reporting
from finetune_pipeline.atomic import write_parquet, write_text
from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.bias import bias_report
from finetune_pipeline.cleaning.erasure import ErasureFileError, ErasureRequest, SubjectMatcher, load_erasure_requests
from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.labeling import apply_labels
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import make_record_id
from finetune_pipeline.settings import load_settings
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline.splits import assign_splits
from finetune_pipeline.stored import stored_frame
from finetune_pipeline_tests.conftest import copy_sample_data

EMAIL = "maria.lopez@example.com"  # in a CSV ticket
PHONE = "+1 555 014 2231"  # written "(555) 014-2231" in a PDF ticket
SOURCE = "raw/tickets/billing/ticket_001.txt"
RECORD = make_record_id("raw/exports/tickets.jsonl", "id=T-7002")


def _run_stages(root):
    """The library calls behind raw_corpus -> ... -> dataset_splits, exports and the data card."""
    settings = load_settings(root)
    raw = collect_raw_corpus(root, settings)
    cleaned = clean_corpus(raw.kept, settings, load_erasure_requests(root))
    dedup = deduplicate(cleaned.kept, settings)
    labeled = apply_labels(dedup.kept, settings)
    augmented = augment_corpus(labeled.kept, settings)
    splits = assign_splits(augmented.kept, settings.splits)
    out = root / "exports"
    exports.export_splits(splits, out / "splits")
    rejects = pl.concat([r.rejected for r in (raw, cleaned, dedup, labeled, augmented)])
    write_parquet(rejects, out / "rejects.parquet")
    card = reporting.data_card([], rejects, splits, cleaned.stats.pii_by_type, None,
                               pii_policy=settings.privacy.policy, erasure=cleaned.stats.erasure)
    write_text(card, out / "report.md")
    frames = {"raw": raw.kept, "cleaned": cleaned.kept, "deduplicated": dedup.kept, "labeled": labeled.kept,
              "augmented": augmented.kept, "splits": splits, "bias_report": bias_report(labeled.kept),
              "rejects": rejects}
    return raw, cleaned, frames


@pytest.fixture(scope="module")
def erased_run(tmp_path_factory):
    root = copy_sample_data(tmp_path_factory.mktemp("erasure") / "data")
    (root / "erasure_requests.csv").write_text(
        f"request_id,subject\nER-1,{EMAIL}\nER-2,{PHONE}\nER-3,{SOURCE}\nER-4,{RECORD}\nER-5,nobody@example.net\n")
    return root, *_run_stages(root)


def _everything_written(root, frames) -> str:
    text = "".join(p.read_text(encoding="utf-8") for p in (root / "exports").rglob("*") if p.suffix in {".jsonl", ".md"})
    text += "".join(p.read_bytes().decode("utf-8", "replace") for p in (root / "exports" / "splits").rglob("*.arrow"))
    return text + "".join(f.write_ndjson() for name, f in frames.items() if name != "raw")


def test_every_matching_record_is_erased_and_accounted_for(erased_run):
    root, raw, cleaned, frames = erased_run
    erased = cleaned.rejected.filter(pl.col("reason") == "erased_by_request")
    assert cleaned.stats.erasure.removed_by_request == {"ER-1": 1, "ER-2": 1, "ER-3": 1, "ER-4": 1, "ER-5": 0}
    assert erased.height == 4 and erased["source_uri"].is_null().all() and erased["locator"].is_null().all()
    assert raw.kept.height == cleaned.kept.height + cleaned.rejected.height
    later = frames["splits"]["record_id"].to_list() + frames["cleaned"]["record_id"].to_list()
    assert not set(erased["record_id"]) & set(later)


def test_subjects_appear_in_no_asset_or_export(erased_run):
    root, _, _, frames = erased_run
    written = _everything_written(root, frames)
    for subject in (EMAIL, "014-2231", "0142231", SOURCE, "ticket_001.txt"):
        assert subject not in written, subject
    # A record id names no person; it stays only on the erased record's reject row (for the accounting).
    assert written.count(RECORD) == frames["rejects"].filter(pl.col("record_id") == RECORD).height == 1


def test_data_card_lists_requests_as_honoured_without_subjects(erased_run):
    report = (erased_run[0] / "exports" / "report.md").read_text()
    assert "| ER-1 | honoured | 1 |" in report and "| ER-5 | honoured | 0 |" in report
    assert "erased_by_request" in report
    for subject in (EMAIL, PHONE, SOURCE, RECORD):
        assert subject not in report


def test_matching_rules():
    matcher = SubjectMatcher([ErasureRequest("a", "Jane.Doe@Example.com"), ErasureRequest("b", "0049 30 1234567"),
                              ErasureRequest("c", "raw/people/"), ErasureRequest("d", "Jane Doe")])
    assert matcher.matches("x", "raw/a.txt", "mail jane.doe@example.com now") == ["a"]
    assert matcher.matches("x", "raw/a.txt", "mail xjane.doe@example.com.au") == []
    assert matcher.matches("x", "raw/a.txt", "call +49 (30) 123-4567 please") == ["b"]
    assert matcher.matches("x", "raw/a.txt", "reach me on 030 1234567") == ["b"]  # national format
    assert matcher.matches("x", "raw/a.txt", "order 1234567 of 30 pieces") == []
    assert matcher.matches("x", "raw/people/cv.pdf", "") == ["c"]
    assert matcher.matches("x", "raw/a.txt", "ask JANE DOE") == ["d"]
    assert matcher.matches("x", "raw/a.txt", "ask Jane Doerr") == []


def test_a_malformed_request_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "erasure_requests.csv").write_text("id,who\n1,x\n")
    with pytest.raises(ErasureFileError, match="erasure_requests.csv: missing column"):
        load_erasure_requests(tmp_path)
    (tmp_path / "erasure_requests.csv").write_text("request_id,subject\nER-1,\n")
    with pytest.raises(ErasureFileError, match="line 2"):
        load_erasure_requests(tmp_path)
    assert load_erasure_requests(tmp_path / "nowhere") == []


def test_a_subject_in_a_file_name_or_locator_is_matched():
    matcher = SubjectMatcher([ErasureRequest("a", "jane.doe@example.com"), ErasureRequest("b", "+44 20 7946 0958")])
    assert matcher.matches("x", "raw/cv/jane.doe@example.com.pdf", "no address in the text") == ["a"]
    assert matcher.matches("x", "raw/users.jsonl", "nothing here", "id=jane.doe@example.com") == ["a"]
    assert matcher.matches("x", "raw/users.jsonl", "nothing here", "phone=020 7946 0958") == ["b"]
    assert matcher.matches("x", "raw/users.jsonl", "nothing here", "line 3") == []


# ---- through Dagster: what the stages store under .pipeline/ and write to exports/

SUBJECT = "anna.kowalski@example.com"  # in a ticket's text; erased by request
IN_FILE_NAME = "lena.berg@example.org"  # in a file name; redacted, not erased
KEPT_BY_DAGSTER = ("published_splits", "rejected_records", "bias_report")  # with everything upstream; no training


def _dagster_root(base, keep_raw_text: str = "collection"):
    import json

    from finetune_pipeline_tests.test_incremental import _write_tickets

    root = base / "data"
    _write_tickets(root, 12, seed=3)
    (root / "raw" / "billing" / "t000.txt").write_text(
        f"Hello, I was charged twice for order 4411 and want a refund. Write to {SUBJECT} please, thanks.\n")
    (root / "raw" / "shipping" / f"from_{IN_FILE_NAME}.txt").write_text(
        "Hello, my parcel is lost since monday and the courier tracking page says nothing, thanks.\n")
    (root / "finetune.yaml").write_text(json.dumps({
        "labels": ["billing", "shipping"], "checks": {"min_records": 5},
        "privacy": {"detector": "patterns", "keep_raw_text": keep_raw_text}}))
    return root


def _run_dagster(root, instance) -> dict:
    import dagster as dg

    from finetune_pipeline.definitions import definitions_for
    from finetune_pipeline.layout import DataRoot

    defs = definitions_for(DataRoot(root))
    keys = dg.AssetSelection.assets(*KEPT_BY_DAGSTER).upstream().resolve(defs.get_repository_def().asset_graph)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, raise_on_error=False, asset_selection=list(keys))
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    meta = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            meta[event.asset_key.to_user_string()] = event.step_materialization_data.materialization.metadata
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            meta[evaluation.check_name] = {**evaluation.metadata, "passed": evaluation.passed}
    return meta


def _files_holding(root, value: str) -> list[str]:
    """Every file under .pipeline/ and exports/ that holds `value`: Parquet read back with polars (every
    column), anything else as raw bytes; a shard of a sharded dataset named by its dataset's folder."""
    found = []
    for folder in (root / ".pipeline", root / "exports"):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            content = (pl.read_parquet(path).write_ndjson() if path.suffix == ".parquet"
                       else path.read_bytes().decode("utf-8", "replace"))
            if value in content:
                dataset = path.parent.parent  # <dataset>/<generation>/part-*.parquet
                shown = dataset if (dataset / "manifest.json").exists() else path
                found.append(shown.relative_to(root).as_posix())
    return sorted(set(found))


def test_erasure_leaves_the_subject_nowhere_under_pipeline_or_exports(tmp_path):
    import dagster as dg

    root = _dagster_root(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    first = _run_dagster(root, instance)
    # Before a request the clear text is only in what collection stored: its value and the parse cache.
    holding = _files_holding(root, SUBJECT)
    assert ".pipeline/assets/raw_corpus" in holding
    assert [f for f in holding if f != ".pipeline/assets/raw_corpus"
            and not f.startswith(".pipeline/parse_cache/")] == []
    assert first["cleaned_corpus"]["records_with_pii"].value >= 2  # the ticket's text and the file name
    stored = [*(root / ".pipeline" / "assets").glob("*.parquet"), *(root / ".pipeline" / "assets").glob("*/")]
    assert any(path.name == "cleaned_corpus" for path in stored)  # a sharded dataset
    for path in stored:
        columns = stored_frame(DataRoot(root), path.stem).columns if path.is_dir() else pl.read_parquet_schema(path)
        assert "text_raw" not in columns, path.name
        assert path.stem == "raw_corpus" or "redactions" in columns or "text" not in columns, path.name

    (root / "erasure_requests.csv").write_text(f"request_id,subject\nER-7,{SUBJECT}\n")
    meta = _run_dagster(root, instance)
    assert meta["cleaned_corpus"]["records_erased"].value == 1
    assert _files_holding(root, SUBJECT) == []
    assert _files_holding(root, "billing/t000.txt") == []  # nor where it came from: the reject keeps only the id
    erased = pl.read_parquet(root / "exports" / "rejects.parquet").filter(pl.col("reason") == "erased_by_request")
    assert erased.height == 1 and erased["source_uri"].is_null().all() and erased["locator"].is_null().all()
    assert (root / "raw" / "billing" / "t000.txt").exists()  # raw/ is the user's: the subject stays there

    _run_dagster(root, instance)  # the source is parsed again, erased again, and gone again
    assert _files_holding(root, SUBJECT) == []


def test_a_file_name_with_an_address_is_redacted_in_the_export_and_counted(tmp_path):
    import dagster as dg

    root = _dagster_root(tmp_path)
    meta = _run_dagster(root, dg.DagsterInstance.ephemeral())
    assert _files_holding(root, IN_FILE_NAME) == [".pipeline/assets/raw_corpus"]
    exported = pl.concat([pl.read_ndjson(p) for p in (root / "exports" / "splits").glob("*.jsonl")],
                         how="diagonal_relaxed")
    assert "raw/shipping/<EMAIL>" in exported["source_uri"].to_list()
    assert meta["dataset_splits_no_personal_data"]["passed"]
    texts = exports.exported_texts(root / "exports" / "splits")
    assert set(texts["field"]) >= {"text", "source_uri", "locator"}  # the check scans file names and locators
    stats = stored_frame(DataRoot(root), "cleaned_corpus")
    assert stats.filter(pl.col("redactions").str.contains('"field": "source_uri", "kind": "email"')).height == 1
    assert "| email | 2 | redact |" in meta["cleaned_corpus"]["pii_report"].value  # text and file name


def test_with_keep_raw_text_none_no_clear_text_stays_under_pipeline(tmp_path):
    import dagster as dg

    root = _dagster_root(tmp_path, keep_raw_text="none")
    _run_dagster(root, dg.DagsterInstance.ephemeral())
    assert (root / "exports" / "splits" / "train.jsonl").exists()
    assert _files_holding(root, SUBJECT) == [] and _files_holding(root, IN_FILE_NAME) == []
    assert not (root / ".pipeline" / "parse_cache").exists()
    assert not (root / ".pipeline" / "assets" / "raw_corpus.parquet").exists()
    assert stored_frame(DataRoot(root), "raw_corpus") is None and not (root / ".pipeline" / "assets" / "raw_corpus").exists()


def test_an_exported_locator_or_file_name_with_personal_data_fails_the_export_check(tmp_path):
    from finetune_pipeline.cleaning.privacy import personal_data_left
    from finetune_pipeline.settings import PrivacySettings

    target = tmp_path / "splits"
    target.mkdir()
    rows = [{"record_id": "a", "text": "A plain ticket about a parcel.", "source_uri": "raw/t.jsonl",
             "locator": "id=jane.doe@example.com", "split": "train"},
            {"record_id": "b", "text": "Another plain ticket.", "source_uri": "raw/from_jane.doe@example.com.txt",
             "locator": "element 0", "split": "train"}]
    pl.DataFrame(rows).write_ndjson(target / "train.jsonl")
    texts = exports.exported_texts(target)
    found = personal_data_left(texts["text"].to_list(), PrivacySettings(detector="patterns"))
    leaking = {(r, f) for r, f, c in zip(texts["record_id"], texts["field"], found) if c}
    assert leaking == {("a", "locator"), ("b", "source_uri")}
