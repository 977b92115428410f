"""Personal data in file names and locators: redacted span by span with the text's detector and policy;
what cleaning changed is kept as kinds and spans, never values."""

import json

import pytest

from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.provenance import redact_provenance, redaction_spans
from finetune_pipeline.records import corpus_frame, make_record_id
from finetune_pipeline.settings import PrivacySettings, Settings

TEXT = "My parcel never arrived at the depot and the courier tracking page says nothing since monday."


@pytest.mark.parametrize("value, redacted", [
    ("raw/john_smith_cv.pdf", "raw/<PERSON>.pdf"),
    ("raw/cv/Maria_Lopez.docx", "raw/cv/<PERSON>.docx"),
    ("raw/mail/inbox/from_jane.doe@example.com_13.txt", "raw/mail/inbox/from_<EMAIL>_13.txt"),
    ("id=maria.lopez@example.com", "id=<EMAIL>"),
    ("raw/Debian Reference.pdf", "raw/Debian Reference.pdf"),  # a title, no name
    ("raw/exports/2024_05_12_0930_export.csv", "raw/exports/2024_05_12_0930_export.csv"),  # no phone
    ("raw/tickets/billing/ticket_00010_10.txt", "raw/tickets/billing/ticket_00010_10.txt"),
    ("row 1234567", "row 1234567"),
])
def test_file_names_and_locators_are_redacted_only_where_a_person_is(value, redacted):
    assert redact_provenance([value], PrivacySettings())[value].value == redacted


def test_the_cleaned_record_keeps_kinds_and_spans_of_what_changed_and_no_values():
    rows = [{"record_id": make_record_id(uri, loc), "text": text, "source_uri": uri, "source_type": "jsonl",
             "locator": loc, "label": "shipping", "label_source": "column"}
            for uri, loc, text in [("raw/tickets.jsonl", "id=maria.lopez@example.com", TEXT),
                                   ("raw/john_smith_cv.txt", "line 1", TEXT + " Write to ab@example.org.")]]
    result = clean_corpus(corpus_frame(rows), Settings())
    kept = result.kept.sort("locator")
    assert kept["locator"].to_list() == ["id=<EMAIL>", "line 1"]
    assert kept["source_uri"].to_list() == ["raw/tickets.jsonl", "raw/<PERSON>.txt"]
    assert kept["record_id"].to_list() == [r["record_id"] for r in rows]  # ids stay those of the collection
    assert [json.loads(r) for r in kept["redactions"]] == [
        [{"field": "locator", "kind": "email", "start": 3, "end": 10}],
        [{"field": "text", "kind": "email", "start": len(TEXT) + 10, "end": len(TEXT) + 17},
         {"field": "source_uri", "kind": "person", "start": 4, "end": 12}]]
    assert result.stats.provenance_redacted == 2 and result.stats.pii_by_type == {"email": 2, "person": 1}
    written = kept.write_ndjson()
    for value in ("maria.lopez", "john_smith", "ab@example.org"):
        assert value not in written


def test_a_drop_policy_rejects_a_record_whose_locator_holds_the_kind():
    rows = [{"record_id": "a", "text": TEXT, "source_uri": "raw/t.jsonl", "source_type": "jsonl",
             "locator": "id=maria.lopez@example.com", "label": "shipping", "label_source": "column"}]
    result = clean_corpus(corpus_frame(rows), Settings(privacy={"email": "drop"}))
    assert result.kept.is_empty()
    reject = result.rejected.row(0, named=True)
    assert reject["reason"] == "pii_policy" and reject["detail"] == "its locator contains email; privacy.email=drop"
    assert "maria" not in str(reject)


def test_redaction_spans_skip_placeholders_the_original_already_held():
    assert redaction_spans("see <EMAIL> or a@b.org", "see <EMAIL> or <EMAIL>") == [
        {"kind": "email", "start": 15, "end": 22}]


def test_a_kind_the_policy_keeps_is_not_counted_from_a_path():
    """NER reads "001" in a file name as a place: with location: keep nothing changes, and nothing may be
    counted either (it was counted once per record of the file: 1,000 'locations' in bench_cleaning)."""
    from finetune_pipeline.cleaning.provenance import redact_provenance
    from finetune_pipeline.settings import PrivacySettings

    found = redact_provenance(["bench://quotes/001.jsonl"], PrivacySettings())["bench://quotes/001.jsonl"]
    assert found.value == "bench://quotes/001.jsonl" and not found.counts
