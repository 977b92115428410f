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
from finetune_pipeline.records import make_record_id
from finetune_pipeline.settings import load_settings
from finetune_pipeline.sources import collect_raw_corpus
from finetune_pipeline.splits import assign_splits
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
