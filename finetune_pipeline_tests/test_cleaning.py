"""Cleaning on real messy text: encoding repair, control characters, markup, whitespace, PII, filters."""

import polars as pl

from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.normalize import normalize_text
from finetune_pipeline.cleaning.privacy import apply_pii_policy, luhn_valid
from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text
from finetune_pipeline.settings import CleaningSettings, PrivacySettings, Settings


def test_normalize_repairs_mojibake_controls_markup_and_whitespace():
    raw = "I donâ€™t  see\tmy\x07 refund<br/> on the   invoi-\nce.\r\n\r\n\r\nThanks"
    assert normalize_text(raw, CleaningSettings()) == "I don't see my refund on the invoice.\n\nThanks"


def test_lowercase_is_off_by_default_and_switchable():
    assert normalize_text("Hello World", CleaningSettings()) == "Hello World"
    assert normalize_text("Hello World", CleaningSettings(lowercase=True)) == "hello world"


def test_pii_redacted_with_typed_placeholders():
    text = ("Mail jane.doe@example.com or call +1 555-013-4477. Card 4111 1111 1111 1111, "
            "SSN 078-05-1120, from 203.0.113.42, IBAN DE89 3704 0044 0532 0130 00.")
    result = apply_pii_policy(text, PrivacySettings())
    assert result.text == ("Mail <EMAIL> or call <PHONE>. Card <CREDIT_CARD>, SSN <US_SSN>, from <IP_ADDRESS>, "
                           "IBAN <IBAN>.")
    assert dict(result.counts) == {"email": 1, "phone": 1, "credit_card": 1, "us_ssn": 1, "ip_address": 1, "iban": 1}


def test_card_numbers_must_pass_luhn_and_ips_must_be_valid():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    result = apply_pii_policy("order 4111 1111 1111 1112 at 999.1.1.1", PrivacySettings())
    assert "credit_card" not in result.counts and "ip_address" not in result.counts


def _corpus(texts):
    return corpus_frame([{"record_id": make_record_id("raw/x.csv", f"row {i}"), "text": t, "source_uri": "raw/x.csv",
                          "source_type": "csv", "locator": f"row {i}", "content_sha256": sha256_text(t)}
                         for i, t in enumerate(texts)])


def test_clean_corpus_accounts_for_every_row_and_keeps_text_raw():
    texts = ["help!!", "   ", "My parcel arrived broken, please send a replacement to my address soon.",
             "Contact me at a.b@example.org about the refund for my last two orders please."]
    result = clean_corpus(_corpus(texts), Settings())
    assert result.kept.height + result.rejected.height == len(texts)
    assert sorted(result.rejected["reason"]) == ["empty", "too_short"]
    kept = result.kept.sort("locator")
    assert kept["text_raw"].to_list() == texts[2:]
    assert "<EMAIL>" in kept["text"][1] and result.stats["pii_by_type"] == {"email": 1}
    assert kept["content_sha256"][1] == sha256_text(kept["text"][1])


def test_drop_policy_rejects_the_record():
    settings = Settings(privacy=PrivacySettings(email="drop"))
    result = clean_corpus(_corpus(["Contact me at a.b@example.org about the refund for my last orders."]), settings)
    assert result.kept.is_empty()
    assert result.rejected.row(0, named=True)["reason"] == "pii_policy"
    assert "example.org" not in result.rejected.row(0, named=True)["detail"]
