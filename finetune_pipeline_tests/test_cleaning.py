"""Cleaning on real messy text: encoding repair, control characters, markup, boilerplate, page headers,
normalisation switches, and each quality filter with its own reason."""

import json

import polars as pl
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.filters import quality_reject
from finetune_pipeline.cleaning.normalize import normalize_text
from finetune_pipeline.cleaning.quality_filters import identify_language
from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text
from finetune_pipeline.settings import CleaningSettings, PrivacySettings, Settings, SettingsError, parse_settings

GOOD = ("Hi,\nMy parcel arrived with the lid of the espresso grinder cracked and the burr set missing. "
        "The box itself looked fine, so it must have happened in your warehouse. Could you send a replacement "
        "or tell me how to return it?\nThanks")


def test_normalize_repairs_mojibake_controls_markup_and_whitespace():
    raw = "I donâ€™t  see\tmy\x07 refund<br/> on the   invoi-\nce.\r\n\r\n\r\nThanks"
    assert normalize_text(raw, CleaningSettings()) == "I don't see my refund on the invoice.\n\nThanks"


def test_markdown_html_entities_and_boilerplate_lines_are_removed():
    raw = ("# Refund missing\n\nHi ,\n\nMy **order** was [returned](https://shop.example/returns) on May 2 &amp; "
           "the refund never came .Please check\n\n> quoted line\n\nSent from my iPhone\nPage 2 of 3\n"
           "© 2024 Shop Inc. All rights reserved.")
    assert normalize_text(raw, CleaningSettings()) == (
        "Refund missing\n\nHi,\n\nMy order was returned on May 2 & the refund never came. Please check\n\nquoted line")


def test_quotes_dashes_unicode_form_and_punctuation_spacing_are_switchable():
    raw = "\u201cFast\u201d shipping \u2014 not really ,it took 9\u00a0days\u2026 \ufb01ne"
    assert normalize_text(raw, CleaningSettings()) == '"Fast" shipping - not really, it took 9 days... fine'
    off = CleaningSettings(normalize_quotes_dashes=False, normalize_punctuation_spacing=False, unicode_form="none")
    assert normalize_text(raw, off) == "\u201cFast\u201d shipping \u2014 not really ,it took 9 days\u2026 \ufb01ne"


def test_numbers_domains_and_ellipses_survive_punctuation_spacing():
    text = "It costs 1,000.50 dollars, see example.com... ok"
    assert normalize_text(text, CleaningSettings()) == text


def test_lowercase_is_off_by_default_and_switchable():
    assert normalize_text("Hello World", CleaningSettings()) == "Hello World"
    assert normalize_text("Hello World", CleaningSettings(lowercase=True)) == "hello world"


def _corpus(texts, source="raw/x.csv", source_type="csv", locators=None):
    locators = locators or [f"row {i}" for i in range(len(texts))]
    return corpus_frame([{"record_id": make_record_id(source, loc), "text": t, "source_uri": source,
                          "source_type": source_type, "locator": loc, "content_sha256": sha256_text(t)}
                         for t, loc in zip(texts, locators)])


def test_repeated_pdf_headers_and_footers_are_removed_per_document():
    pages = [f"ACME Support - Ticket export\n{body}\nConfidential - page {n} of 2"
             for n, body in ((1, GOOD), (2, GOOD.replace("espresso grinder", "cork yoga mat")))]
    result = clean_corpus(_corpus(pages, "raw/t.pdf", "pdf", ["page 1", "page 2"]),
                          Settings(privacy=PrivacySettings(detector="patterns")))
    for text in result.kept["text"]:
        assert "ACME Support" not in text and "Confidential" not in text and "My parcel arrived" in text
    # The same lines in tabular rows are content, not page furniture.
    tabular = clean_corpus(_corpus(pages), Settings(privacy=PrivacySettings(detector="patterns")))
    assert all("ACME Support" in t for t in tabular.kept["text"])


# A text each document filter (past too_short) rejects, with its reason: rejected from a document, flagged on a
# table row (test_every_document_filter_flags_a_table_row_instead_of_rejecting_it).
DOCUMENT_FILTER_CASES = [
    ("see https://cdn.example.com/assets/v2/0f3a9c1e7b2d4a6f8e0c2b4d6f8a0c2e/bundle.min.js?cache=9f8e7d6c5b4a "
     "and sha256:4f2a9c1e7b2d4a6f8e0c2b4d6f8a0c2e4f2a9c1e7b2d4a6f8e0c2b4d6f8a0c2e in the console "
     "dGhpcyBpcyBhIGJhc2U2NCBibG9iIHBhc3RlZCBpbnRvIGEgdGlja2V0", "mean_word_length"),
    ("0.12 0.40 0.55 0.91 | 0.13 0.41 0.56 0.92 | 0.14 0.42 0.57 0.93 | 0.15 0.43 0.58 0.94 refund", "alpha_words"),
    ("#sale #deal #refund #shipping #free #promo #buy #now #best #price #offer #today great", "symbol_to_word_ratio"),
    ("Click here for the refund form\nClick here for the refund form\nClick here for the refund form\n"
     "Click here for the refund form\nok thanks", "repeated_lines"),
    (" ".join(["buy cheap watches online best price"] * 10), "repeated_ngrams"),
]


@pytest.mark.parametrize("text, reason", [
    ("help!!", "too_short"),
    ("   \n\t ", "empty"),
    ("Mein Paket ist beschädigt angekommen und der Deckel der Kaffeemühle fehlt. Bitte schicken Sie mir "
     "einen Ersatz oder sagen Sie mir, wie ich es zurückschicken kann.", "language"),
    *DOCUMENT_FILTER_CASES,
])
def test_each_quality_filter_rejects_with_its_own_reason(text, reason):
    result = clean_corpus(_corpus([text], "raw/x.txt", "txt"), Settings(privacy=PrivacySettings(detector="patterns")))
    assert result.kept.is_empty()
    row = result.rejected.row(0, named=True)
    assert (row["reason"], row["stage"]) == (reason, "cleaned_corpus")
    if text.strip():
        assert text.strip()[:20] not in row["detail"]  # details carry figures, never the text


def test_good_ticket_passes_every_filter():
    assert quality_reject(normalize_text(GOOD, CleaningSettings()), CleaningSettings()) == (None, [])


def test_language_id_skips_short_texts_and_respects_the_allow_list():
    short = "Danke schön, alles gut!"
    assert quality_reject(short, CleaningSettings(min_chars=5, min_words=1))[0] is None  # too short to judge
    german = ("Mein Paket ist beschädigt angekommen und der Deckel der Kaffeemühle fehlt. Bitte schicken Sie "
              "mir einen Ersatz.")
    assert identify_language(german)[0] == "de"
    assert quality_reject(german, CleaningSettings(languages=["en", "de"]))[0] is None
    assert quality_reject(german, CleaningSettings(languages=[]))[0] is None


def test_typos_are_flagged_by_default_and_dropped_when_asked():
    typos = ("my parsel arived brokn and teh lid is crakced, pleese sned a replacment or a refnud sooon becuase "
             "i ned it for a gfit next wek")
    flagged = clean_corpus(_corpus([typos, GOOD]), Settings(privacy=PrivacySettings(detector="patterns")))
    assert flagged.kept.height == 2
    flags = dict(zip(flagged.kept["locator"], flagged.kept["quality_flags"].to_list()))
    assert flags == {"row 0": ["unknown_words"], "row 1": []}
    assert flagged.stats.quality_flags == {"unknown_words": 1}
    dropped = clean_corpus(_corpus([typos]), Settings(cleaning=CleaningSettings(unknown_words_action="drop"),
                                                      privacy=PrivacySettings(detector="patterns")))
    assert dropped.rejected["reason"].to_list() == ["unknown_words"]


def test_clean_corpus_accounts_for_every_row_and_keeps_only_the_redacted_spans():
    texts = ["help!!", "   ", "My parcel arrived broken, please send a replacement to my address soon.",
             "Contact me at a.b@example.org about the refund for my last two orders please."]
    result = clean_corpus(_corpus(texts, "raw/x.txt", "txt"), Settings())
    assert result.kept.height + result.rejected.height == len(texts)
    assert sorted(result.rejected["reason"]) == ["empty", "too_short"]
    kept = result.kept.sort("locator")
    assert "text_raw" not in kept.columns and "a.b@example.org" not in kept.write_ndjson()  # no clear copy
    assert [json.loads(r) for r in kept["redactions"]] == [[], [{"field": "text", "kind": "email", "start": 14,
                                                                  "end": 21}]]
    assert kept["text"][1][14:21] == "<EMAIL>" and result.stats.texts_changed == 1
    assert "<EMAIL>" in kept["text"][1] and result.stats.pii_by_type == {"email": 1}
    assert kept["content_sha256"][1] == sha256_text(kept["text"][1])


def test_drop_policy_rejects_the_record():
    settings = Settings(privacy=PrivacySettings(email="drop"))
    result = clean_corpus(_corpus(["Contact me at a.b@example.org about the refund for my last orders."]), settings)
    assert result.kept.is_empty()
    assert result.rejected.row(0, named=True)["reason"] == "pii_policy"
    assert "example.org" not in result.rejected.row(0, named=True)["detail"]


def test_new_settings_are_validated_by_name():
    with pytest.raises(SettingsError) as err:
        parse_settings({"cleaning": {"unknown_words_action": "maybe", "min_mean_word_length": 12},
                        "privacy": {"person": "hide"}, "bias": {"max_label_skew": 0.5}})
    message = str(err.value)
    for field in ("cleaning.unknown_words_action", "privacy.person", "bias.max_label_skew"):
        assert field in message
    with pytest.raises(SettingsError, match="min_mean_word_length"):
        parse_settings({"cleaning": {"min_mean_word_length": 12}})


def test_ftfy_is_skipped_only_where_it_changes_nothing():
    """`noise.fix_encoding` skips ftfy on printable ASCII: ftfy returns such text unchanged."""
    import random

    import ftfy

    from finetune_pipeline.cleaning import noise

    rng = random.Random(5)
    alphabet = "\t\n" + "".join(chr(c) for c in range(0x20, 0x7f))
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))) for _ in range(3000)]
    texts += ["&amp; &lt;b&gt; \\x1b[31m", "don't \"quote\" -- dash"]
    for text in texts:
        assert noise._PLAIN_ASCII.fullmatch(text)
        assert ftfy.fix_text(text, uncurl_quotes=False, normalization=None, fix_character_width=False,
                             fix_latin_ligatures=False, unescape_html=False) == text
    assert noise.fix_encoding("don\u00e2\u20ac\u2122t") == "don\u2019t"  # not ASCII: ftfy still runs
    assert noise.fix_encoding("bell\x07") == ftfy.fix_text("bell\x07", uncurl_quotes=False, normalization=None,
                                                           fix_character_width=False, fix_latin_ligatures=False,
                                                           unescape_html=False)


def _repeated_ngrams_reference(tokens: list[str], settings: CleaningSettings):
    """Gopher's repetition rule, written out plainly: every n measured, the first share over its limit rejects."""
    from collections import Counter

    chars = max(1, sum(len(w) for w in tokens))
    repeated = settings.repetition_short_min_count if len(tokens) < settings.repetition_short_words else 2
    for n, limit in sorted(settings.max_top_ngram_share.items()):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        gram, count = counts.most_common(1)[0] if counts else ((), 0)
        if count >= repeated and count * sum(map(len, gram)) / chars > limit:
            return "top", n
    for n, limit in sorted(settings.max_duplicate_ngram_share.items()):
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        counts = Counter(grams)
        covered = {j for i, g in enumerate(grams) if counts[g] >= repeated for j in range(i, i + n)}
        if sum(len(tokens[j]) for j in covered) / chars > limit:
            return "duplicated", n
    return None


@st.composite
def _phrase_texts(draw):
    """Texts made of a few phrases (1-12 words of a 300-word vocabulary), some repeated: every amount of
    repetition, from none to most of the text."""
    phrases = draw(st.lists(st.lists(st.integers(0, 299), min_size=1, max_size=12), min_size=1, max_size=8))
    order = draw(st.lists(st.integers(0, len(phrases) - 1), min_size=1, max_size=20))
    return [f"w{'x' * (n % 7)}{n}" for i in order for n in phrases[i]]


# Gopher's limits, and limits under which a text passes at n = 5 and fails at a longer n (with Gopher's, a
# share falls with n about as fast as its limit, so that case is rare).
_REPETITION_LIMITS = [CleaningSettings(), CleaningSettings(repetition_short_words=0), CleaningSettings(
    repetition_min_words=10, max_top_ngram_share={2: 0.9, 3: 0.9, 4: 0.9},
    max_duplicate_ngram_share={5: 0.9, 7: 0.3, 10: 0.1})]


@given(_phrase_texts(), st.sampled_from(_REPETITION_LIMITS))
@hypothesis_settings(max_examples=400, deadline=None)
def test_repeated_ngrams_filter_decides_as_the_plain_rule_does(tokens, settings):
    """The filter stops measuring at the first n with no repeated n-gram; the plain rule measures every n."""
    from finetune_pipeline.cleaning.quality_filters import repeated_ngrams_filter

    got = repeated_ngrams_filter(" ".join(tokens), settings)
    expected = _repeated_ngrams_reference(tokens, settings) if len(tokens) >= settings.repetition_min_words else None
    assert (got is None) == (expected is None)
    if got:
        kind, n = expected
        assert got[0] == "repeated_ngrams" and f"{n}-gram" in got[1] and (kind == "top") == got[1].startswith("top")


def test_a_short_manual_page_that_says_its_name_twice_is_kept_and_short_spam_is_not():
    """Real shape from the gauntlet's manual pages (chmem(8), 118 words): phrases said twice covered 0.35 of
    the text under Gopher's rule and it was rejected; 60 words of spam repeat each phrase ten times."""
    from finetune_pipeline.cleaning.quality_filters import repeated_ngrams_filter

    page = ("chmem - configure memory. The chmem command sets a particular size or range of memory online or offline. "
            "Specify SIZE as size with m or M: size specifies the memory size in MiB (1024 x 1024 bytes). With g or "
            "G, size specifies the memory size in GiB (1024 x 1024 x 1024 bytes). The default unit is MiB. Specify "
            "RANGE in the form start-end as shown in the output of the lsmem(1) command. start is the hexadecimal "
            "address of the first byte and end is the hexadecimal address of the last byte in the memory range. "
            "Specify BLOCKRANGE in the form first-last or block as shown in the output of the lsmem(1) command.")
    settings = CleaningSettings()
    assert repeated_ngrams_filter(page, settings) is None
    assert repeated_ngrams_filter(page, CleaningSettings(repetition_short_words=0))[0] == "repeated_ngrams"
    assert repeated_ngrams_filter(" ".join(["buy cheap watches online best price"] * 10), settings)[0] \
        == "repeated_ngrams"


def test_a_conversation_read_from_a_table_with_an_answer_that_repeats_itself_is_still_rejected():
    """Conversations come from tables (JSONL, CSV), but a turn looping on one phrase is a degenerate answer:
    the per-turn repetition filters reject it; only the row-shaped filters (too_short...) merely flag."""
    from finetune_pipeline.cleaning.filters import quality_reject

    turns = ["How do I list the files in a folder?", " ".join(["use ls to list the files"] * 20)]
    reject, _ = quality_reject("\n".join(turns), CleaningSettings(), turns, table_row=True)
    assert reject is not None and reject[0] == "repeated_ngrams"
    reject, flags = quality_reject("\n".join(turns[:1] + ["ls"]), CleaningSettings(), turns[:1] + ["ls"],
                                   table_row=True)
    assert reject is None


# ---- document filters on documents, not on the rows of a table (issue 33) ------------------------------------

# Real one-line Debian package synopses (`apt-cache dumpavail`), labeled by archive section: short by nature.
SYNOPSES = [("GNU awk, a pattern scanning language", "interpreters"), ("Tiny Python shell", "python"),
            ("X11 screen locker", "x11"), ("lightweight IRC client", "net"), ("LaTeX editor", "tex")]
PATTERNS = Settings(privacy=PrivacySettings(detector="patterns"))


def _labeled(rows, source, source_type):
    frame = _corpus([t for t, _ in rows], source, source_type)
    return frame.with_columns(label=pl.Series([label for _, label in rows]), label_source=pl.lit("column"))


@pytest.mark.parametrize("source, source_type", [("raw/packages.jsonl", "jsonl"), ("raw/packages.csv", "csv"),
                                                 ("raw/db.sqlite", "sqlite"), ("raw/packages", "hf_dataset")])
def test_labeled_table_rows_of_three_words_are_kept_with_a_flag(source, source_type):
    result = clean_corpus(_labeled(SYNOPSES, source, source_type), PATTERNS)
    assert result.rejected.is_empty()
    assert result.kept["label"].to_list() == [label for _, label in SYNOPSES]
    flags = dict(zip(result.kept["text"], result.kept["quality_flags"].to_list()))
    assert flags["X11 screen locker"] == ["too_short"] and flags["LaTeX editor"] == ["too_short"]
    assert result.stats.quality_flags["too_short"] == 5  # every synopsis is under min_chars=40


def test_table_rows_are_rejected_by_document_filters_when_configured():
    strict = Settings(cleaning=CleaningSettings(document_filters_on="all"), privacy=PrivacySettings(detector="patterns"))
    result = clean_corpus(_labeled(SYNOPSES, "raw/packages.jsonl", "jsonl"), strict)
    assert result.kept.is_empty() and set(result.rejected["reason"]) == {"too_short"}


@pytest.mark.parametrize("source, source_type", [("raw/notes.txt", "txt"), ("raw/notes.md", "md"),
                                                 ("raw/manual.pdf", "pdf"), ("raw/page.html", "html")])
def test_document_chunks_of_three_words_are_still_too_short(source, source_type):
    result = clean_corpus(_labeled(SYNOPSES, source, source_type), PATTERNS)
    assert result.kept.is_empty()
    assert result.rejected["reason"].to_list() == ["too_short"] * len(SYNOPSES)


@pytest.mark.parametrize("text, reason", DOCUMENT_FILTER_CASES)
def test_every_document_filter_flags_a_table_row_instead_of_rejecting_it(text, reason):
    result = clean_corpus(_corpus([text]), PATTERNS)
    assert result.rejected.is_empty()
    assert result.kept["quality_flags"].to_list() == [[reason]]


def test_table_rows_still_get_empty_too_long_language_and_the_privacy_policy():
    german = ("Mein Paket ist beschädigt angekommen und der Deckel der Kaffeemühle fehlt. Bitte schicken Sie mir "
              "einen Ersatz oder sagen Sie mir, wie ich es zurückschicken kann.")
    texts = ["   ", "word " * 5000, german, "mail a.b@example.org", "Tiny Python shell"]
    settings = Settings(privacy=PrivacySettings(detector="patterns", email="drop"))
    result = clean_corpus(_corpus(texts, "raw/rows.csv", "csv"), settings)
    assert result.rejected["reason"].to_list() == ["empty", "too_long", "language", "pii_policy"]
    assert result.kept["text"].to_list() == ["Tiny Python shell"]


def test_short_table_rows_are_not_judged_by_the_language_filter():
    """Language identification is unreliable on a few words: short rows keep their language unjudged."""
    short = [("Mehrsprachiges Wörterbuch", "text"), ("Tiny Python shell", "python"), ("lecteur de musique", "sound")]
    result = clean_corpus(_labeled(short, "raw/packages.jsonl", "jsonl"), PATTERNS)
    assert result.rejected.is_empty()


def test_the_table_source_types_are_those_the_readers_produce():
    from finetune_pipeline.cleaning.quality_filters import TABLE_SOURCE_TYPES, is_table_row
    from finetune_pipeline.sources import HF_DATASET, files, sql, tabular

    assert TABLE_SOURCE_TYPES == {*tabular.TABULAR_TYPES.values(), *sql.SQLITE_TYPES.values(), HF_DATASET, "sql"}
    assert not any(is_table_row(t) for t in files.DOCUMENT_TYPES.values())
    assert not is_table_row(None)  # a record of unknown kind gets every filter, as before


# ---- the reject-share guard ------------------------------------------------------------------------------------

def _rejects(reasons: list[str]):
    from finetune_pipeline.records import rejects_frame

    return rejects_frame([{"record_id": f"r{i:03d}", "stage": "cleaned_corpus", "reason": reason, "detail": ""}
                          for i, reason in enumerate(reasons)])


def test_the_guard_names_reason_share_ids_and_setting_above_the_share():
    from finetune_pipeline.records import reject_share_warnings

    rejected = _rejects(["too_short"] * 41 + ["language"] * 3)
    [warning] = reject_share_warnings("cleaned_corpus", 100, rejected, 0.2)
    assert (warning.reason, warning.rejected, warning.rows_in, warning.share) == ("too_short", 41, 100, 0.41)
    assert warning.record_ids == ["r000", "r001", "r002", "r003", "r004"]
    message = warning.message()
    for part in ("cleaned_corpus", "'too_short'", "41 of 100", "41%", "checks.max_reject_share=0.2", "r004",
                 "cleaning.min_chars", "cleaning.document_filters_on"):
        assert part in message, part
    assert "r005" not in message  # a few ids, not all


def test_the_guard_is_silent_at_or_below_the_share():
    from finetune_pipeline.records import reject_share_warnings

    assert reject_share_warnings("cleaned_corpus", 100, _rejects(["too_short"] * 20 + ["language"] * 19), 0.2) == []
    assert reject_share_warnings("cleaned_corpus", 0, _rejects([]), 0.2) == []


def test_the_guard_names_the_setting_of_each_stage_and_none_for_a_data_defect():
    from finetune_pipeline.records import reject_share_warnings

    settings_named = {w.reason: w.setting for stage, reasons in (
        ("deduplicated_corpus", ["near_duplicate"] * 3 + ["off_domain"] * 3 + ["exact_duplicate"] * 3),
        ("labeled_corpus", ["in_review"] * 3)) for w in reject_share_warnings(stage, 10, _rejects(reasons), 0.2)}
    assert settings_named["near_duplicate"].startswith("dedup.threshold")
    assert settings_named["off_domain"].startswith("domain.threshold")
    assert settings_named["in_review"].startswith("labeling.review_threshold")
    assert settings_named["exact_duplicate"] is None


def test_the_run_summary_prints_the_guard_from_the_stored_rejects(tmp_path):
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.reporting import reject_share_summary

    root = DataRoot(tmp_path)
    root.stage_rejects("cleaned_corpus").parent.mkdir(parents=True)
    _rejects(["too_short"] * 30 + ["empty"]).write_parquet(root.stage_rejects("cleaned_corpus"))
    counts = [{"stage": "cleaned_corpus", "rows_in": 100}]
    lines = reject_share_summary(root, counts)
    assert len(lines) == 3 and "'too_short' rejected 30 of 100 records (30%" in lines[2]
    (tmp_path / "finetune.yaml").write_text("checks: {max_reject_share: 0.5}\n")
    assert reject_share_summary(root, counts) == []


def test_the_reject_share_check_warns_without_blocking(tmp_path):
    """The stage's non-blocking check (the UI's warning) on the stored rejects and kept rows."""
    import dagster as dg

    from finetune_pipeline.defs.gates import GATES
    from finetune_pipeline.defs.resources import PipelineResource
    from finetune_pipeline.layout import DataRoot

    [check] = [g for g in GATES["cleaned_corpus"] if g.name == "cleaned_corpus_reject_share"]
    assert not check.blocking
    root = DataRoot(tmp_path)
    root.stage_rejects("cleaned_corpus").parent.mkdir(parents=True)
    _rejects(["too_short"] * 3).write_parquet(root.stage_rejects("cleaned_corpus"))
    kept = _corpus(["a kept record"] * 7)
    result = check.evaluate(PipelineResource(data_dir=str(tmp_path)), kept)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert "'too_short' rejected 3 of 10 records (30%" in result.description and "r000" in result.description
    [warning] = result.metadata["reject_share_warnings"].value
    assert (warning["reason"], warning["share"]) == ("too_short", 0.3)
    assert check.evaluate(PipelineResource(data_dir=str(tmp_path)), _corpus(["a kept record"] * 20)).passed


def test_the_cleaned_suite_holds_documents_to_min_chars_and_rows_of_tables_to_max_chars():
    """The blocking suite of cleaned_corpus accepts the short rows cleaning keeps flagged, and only those."""
    from finetune_pipeline import validation as v
    from finetune_pipeline.cleaning.quality_filters import short_rows_kept

    def suite(cleaning: CleaningSettings) -> list:
        return v.cleaned_expectations(0, cleaning.min_chars, cleaning.max_chars, short_rows_kept(cleaning))

    kept = clean_corpus(_labeled(SYNOPSES, "raw/packages.jsonl", "jsonl"), PATTERNS).kept
    assert v.validate(kept, "cleaned", suite(CleaningSettings())).passed
    as_documents = kept.with_columns(source_type=pl.lit("txt"))  # cleaning never keeps such documents
    assert not v.validate(as_documents, "cleaned", suite(CleaningSettings())).passed
    assert not v.validate(kept, "cleaned", suite(CleaningSettings(document_filters_on="all"))).passed
    too_long = kept.with_columns(text=pl.lit("word " * 5000))
    assert not v.validate(too_long, "cleaned", suite(CleaningSettings())).passed


def test_the_run_summary_keeps_a_million_records_apart_from_the_next_column():
    """The stage table printed after a run: counts of seven digits ran into each other ("924457924210")."""
    from finetune_pipeline.defs.cli import _table

    lines = _table(("stage", "in", "out", "rejected", "added"),
                   [("raw_corpus", 1_000_056, 1_000_056, 0, 0), ("labeled_corpus", 924_457, 924_210, 247, 0)])
    assert [line.split() for line in lines[1:]] == [["raw_corpus", "1000056", "1000056", "0", "0"],
                                                    ["labeled_corpus", "924457", "924210", "247", "0"]]
    assert len({len(line) for line in lines}) == 1  # the counts right-aligned under their headers
