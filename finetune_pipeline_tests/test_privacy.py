"""Personal data: detection per type (Presidio + patterns), the per-type policy, the benchmark targets on a
Faker test set, and no detected value in logs or Dagster metadata."""

import importlib.util
import logging

import dagster as dg
import pytest
from hypothesis import given, settings, strategies as st

from finetune_pipeline.definitions import resources_for
from finetune_pipeline.cleaning.privacy import apply_pii_policy, iban_valid, luhn_valid
from finetune_pipeline.settings import PrivacySettings
from finetune_pipeline_tests.conftest import REPO


def test_pii_redacted_with_typed_placeholders():
    text = ("Mail jane.doe@example.com or call +1 555-013-4477. Card 4111 1111 1111 1111, "
            "SSN 078-05-1120, from 203.0.113.42, IBAN DE89 3704 0044 0532 0130 00.")
    result = apply_pii_policy(text, PrivacySettings())
    assert result.text == ("Mail <EMAIL> or call <PHONE>. Card <CREDIT_CARD>, SSN <US_SSN>, from <IP_ADDRESS>, "
                           "IBAN <IBAN>.")
    assert dict(result.counts) == {"email": 1, "phone": 1, "credit_card": 1, "us_ssn": 1, "ip_address": 1, "iban": 1}


def test_a_sign_off_name_ending_a_one_line_ticket_is_redacted_even_when_the_surname_is_a_word():
    """Tickets and chats flattened to one line end in "... Thanks, Crystal King": the sign-off cue must not
    need a line break, and NER misses such names (3,000 generated tickets: 22 leaked this way)."""
    body = "The parcel is still not sorted and I need help with the tracking number."
    for name in ("Crystal King", "Kimberly Hall", "Theresa Price", "Emily Day", "Madison Rivera"):
        for ending in ("", ".", "!"):
            result = apply_pii_policy(f"{body} You can reach me at me@example.com. Thanks, {name}{ending}",
                                      PrivacySettings())
            assert result.text.endswith(f"Thanks, <PERSON>{ending}"), result.text
            assert not any(part in result.text for part in name.split())
    # the cue is a sign-off ending the text, after a sentence: not any "thanks," with capitalised words
    kept = apply_pii_policy(f"{body} Thanks, Support Team", PrivacySettings()).text
    assert kept.endswith("Support Team")


def test_two_layers_finding_parts_of_one_name_leave_no_part_of_it():
    """The gazetteer finds "Jason Hernandez", a pattern "Hernandez Beyond": the longer alone left "Jason"."""
    text = "Realize what we ordered. Thanks, Jason Hernandez Beyond rock data price card couple by remember."
    result = apply_pii_policy(text, PrivacySettings())
    assert result.text == "Realize what we ordered. Thanks, <PERSON> rock data price card couple by remember."
    assert result.counts["person"] == 1


def test_names_addresses_ipv6_and_international_phones():
    text = ("Dear Mrs. Jane Doe-Smith,\nplease ship it to 6234 Smith Mountains Suite 880, Port Amanda, NV 12345 "
            "or call +44 20 7946 0958, +49(0)30 1234567 or (05553) 123456. The VPN gave me 2001:db8::8a2e:370:7334.\n"
            "Kind regards, Kenji Watanabe")
    result = apply_pii_policy(text, PrivacySettings())
    assert result.text == ("Dear Mrs. <PERSON>,\nplease ship it to <STREET_ADDRESS> or call <PHONE>, <PHONE> or "
                           "<PHONE>. The VPN gave me <IP_ADDRESS>.\nKind regards, <PERSON>")


def test_validators_reject_lookalikes():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    result = apply_pii_policy("order 4111 1111 1111 1112 at 999.1.1.1, IBAN DE89 3704 0044 0532 0130 01",
                              PrivacySettings())
    assert not {"credit_card", "ip_address", "iban"} & set(result.counts)
    harmless = "version 4.3.2, on 2024-03-12, order #40321, $192.95, 24 hours, 3 x 20 cm, std::vector"
    assert apply_pii_policy(harmless, PrivacySettings()).text == harmless


def test_brands_and_places_are_not_names_and_locations_are_kept_by_default():
    text = "I tried Chrome, Safari and Firefox on my iPad, the parcel went from Denver to Toronto."
    result = apply_pii_policy(text, PrivacySettings())
    assert result.text == text and "person" not in result.counts and result.counts["location"] >= 1
    redacted = apply_pii_policy(text, PrivacySettings(location="redact"))
    assert "Toronto" not in redacted.text and "<LOCATION>" in redacted.text


def test_person_policy_drop_and_keep():
    text = "Thanks for the help.\nBest regards, Maria Lopez"
    assert apply_pii_policy(text, PrivacySettings(person="drop")).drop_because == "person"
    kept = apply_pii_policy(text, PrivacySettings(person="keep"))
    assert kept.text == text and kept.counts["person"] == 1


def _bench():
    spec = importlib.util.spec_from_file_location("bench_pii", REPO / "scripts" / "bench_pii.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recall_targets_on_a_faker_test_set():
    """A smaller, differently seeded run of scripts/bench_pii.py (docs/benchmarks.md has the full one)."""
    from finetune_pipeline.cleaning.privacy import detect_pii

    bench = _bench()
    cases = bench.make_cases(per_type=100, seed=11)  # about 110 names, mostly without a cue word
    table = bench.score(cases, detect_pii([text for text, _ in cases], PrivacySettings()))
    for kind in ("email", "phone", "credit_card", "us_ssn", "ip_address"):
        assert table[kind]["recall"] >= 0.98, (kind, table[kind])
    assert table["person"]["recall"] >= bench.TARGETS["person"] == 0.97, table["person"]
    for kind in bench.TYPES:
        assert table[kind]["precision"] >= 0.9, (kind, table[kind])


PLANTED = ["maria.lopez@example.com", "+1 555-013-4477", "4111 1111 1111 1111", "078-05-1120", "203.0.113.42",
           "DE89 3704 0044 0532 0130 00", "42 Baker Street", "Jonas Weber"]


def _root_with_pii(tmp_path):
    root = tmp_path / "data"
    (root / "raw" / "billing").mkdir(parents=True)
    body = ("I was charged twice for order 52311 and would like one of the two payments refunded to my card. "
            "You can reach me at maria.lopez@example.com or +1 555-013-4477. The card was 4111 1111 1111 1111, "
            "my SSN 078-05-1120 was asked for, my IP is 203.0.113.42 and my IBAN DE89 3704 0044 0532 0130 00. "
            "Ship the receipt to 42 Baker Street.\nKind regards, Jonas Weber")
    for i in range(3):
        (root / "raw" / "billing" / f"t{i}.txt").write_text(f"Ticket {i}. {body}")
    (root / "finetune.yaml").write_text("labels: [billing]\nchecks:\n  min_records: 1\n")
    return root


def test_no_detected_value_reaches_logs_or_dagster_metadata(tmp_path, caplog):
    from finetune_pipeline.defs.cleaning import cleaned_corpus
    from finetune_pipeline.defs.collection import raw_corpus
    from finetune_pipeline.defs.resources import PipelineResource

    root = _root_with_pii(tmp_path)
    pipeline = PipelineResource(data_dir=str(root))
    caplog.set_level(logging.DEBUG)
    result = dg.materialize([raw_corpus, cleaned_corpus],  # each with its checks
                            resources=resources_for(pipeline),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["cleaned_corpus_accounting"].passed and checks["cleaned_corpus_expectations"].passed
    materialization = result.asset_materializations_for_node("cleaned_corpus")[0]
    assert materialization.metadata["records_with_pii"].value == 3
    assert "| person | 3 | redact |" in materialization.metadata["pii_report"].value

    seen = caplog.text + "".join(str(e) for e in result.all_events)
    from finetune_pipeline.stored import stored_frame

    kept = stored_frame(pipeline.data_root(), "cleaned_corpus")
    texts = "".join(kept["text"])
    for value in PLANTED:
        assert value not in seen, value
        assert value not in texts, value
    assert "text_raw" not in kept.columns  # the original only in the collection stage's value
    assert "maria.lopez@example.com" in "".join(stored_frame(pipeline.data_root(), "raw_corpus")["text"])


@pytest.mark.parametrize("policy", ["redact", "drop"])
def test_rejects_never_carry_values(policy):
    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.records import corpus_frame, sha256_text
    from finetune_pipeline.settings import Settings

    text = "Please call me back on +1 555-013-4477 about the damaged blender from order 55120, thanks."
    frame = corpus_frame([{"record_id": "r1", "text": text, "source_uri": "raw/a.csv", "source_type": "csv",
                           "locator": "row 1", "content_sha256": sha256_text(text)}])
    result = clean_corpus(frame, Settings(privacy=PrivacySettings(phone=policy)))
    assert "555-013-4477" not in str(result.rejected.rows()) + str(result.stats)


def test_fast_detector_against_presidio_itself():
    """The default detector's fast path (NER alone, on the sentences where a name can be; Presidio's
    recognizers on texts with enough digits) against the full Presidio analyzer on the benchmark's texts:
    spaCy's NER alone finds the same entities as the pipeline Presidio runs, and what the default policy
    redacts agrees on nearly every text."""
    from finetune_pipeline.cleaning.privacy import (fast_presidio_spans, ner_pipeline, pattern_spans,
                                                    presidio_analyzer, presidio_spans, propagate_names,
                                                    resolve_overlaps)

    texts = [text for text, _ in _bench().make_cases(per_type=25, seed=13)]
    full = presidio_analyzer().nlp_engine.nlp["en"]
    for ours, theirs in zip(ner_pipeline().pipe(texts), full.pipe(texts)):
        assert [(e.start_char, e.end_char, e.label_) for e in ours.ents] == \
               [(e.start_char, e.end_char, e.label_) for e in theirs.ents]

    def final(found):  # what the default policy redacts (locations are kept, and looked for only near names)
        return [[s for s in resolve_overlaps(propagate_names(t, pattern_spans(t) + f)) if s.kind != "location"]
                for t, f in zip(texts, found)]

    fast, reference = final(fast_presidio_spans(texts, 0.4)), final(presidio_spans(texts, 0.4))
    same = sum(a == b for a, b in zip(fast, reference))
    assert same >= 0.97 * len(texts), (same, len(texts))
    for a, b in zip(fast, reference):  # only names may differ
        assert [s for s in a if s.kind != "person"] == [s for s in b if s.kind != "person"]


def test_names_without_a_cue_by_gazetteer_and_not_places_or_brands():
    from finetune_pipeline.cleaning.privacy import PiiSpan, detect_pii, gazetteer_name_spans

    def names(text, **settings):
        return [text[s.start:s.end] for s in detect_pii([text], PrivacySettings(**settings))[0]
                if s.kind == "person"]

    assert names("Only Nadia Choi knew the password.") == ["Nadia Choi"]  # known first name after a capital
    assert names("Aimée van der Klein had left.") == ["Aimée van der Klein"]
    assert names("Ask Adedeji Olukunga about it.") == ["Adedeji Olukunga"]  # no English word in it, no place
    assert names("Ask Adedeji Olukunga about it.", detector="patterns") == []  # no NER to rule out a place
    assert names("Things fall apart (Chinua Achebe, 1958).") == ["Chinua Achebe"]
    assert names("\u201cNever again.\u201d \u2014 Ünsever Fırat") == ["Ünsever Fırat"]
    assert names("Only Nadia Choi knew.", name_gazetteer=False) == []
    assert "name_gazetteer" not in PrivacySettings().policy  # a switch, not a type of personal data
    for text in ("Our Georgia office moved to San Diego.", "The Santa Cruz bike and the Monte Carlo poster.",
                 "We use Microsoft Teams and Adobe Acrobat.", "Grace Street is closed.", "The Golden Gate tour and the Victoria Station pass."):
        assert names(text) == [], text
    assert gazetteer_name_spans("We flew to Buenos Aires.", [PiiSpan(11, 23, "location")]) == []
    assert gazetteer_name_spans("We flew to Buenos Aires.", None) == []


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab_é1.-' \n", max_size=24), name=st.text(alphabet="ab_é1.-' ", min_size=1, max_size=4))
def test_name_occurrences_finds_what_the_whole_word_regex_finds(text, name):
    import re

    from finetune_pipeline.cleaning.privacy import name_occurrences

    expected = [(m.start(), m.end()) for m in re.finditer(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text)]
    assert [(s.start, s.end) for s in name_occurrences(text, name)] == expected


def test_ner_is_skipped_only_where_every_possible_name_is_found_already():
    from finetune_pipeline.cleaning.privacy import PiiSpan, ner_segments

    def to_ner(text, *found):
        spans = [PiiSpan(text.index(name), text.index(name) + len(name), "person") for name in found]
        return bool(ner_segments(text, False, spans))

    assert not to_ner("According to Ana Lima, the parcel is late.", "Ana Lima")  # the cue word is no part of it
    assert not to_ner("Note from Ana Lima: Zooming does not help.", "Ana Lima")  # not across the colon
    assert to_ner("I asked Thiago da Costa twice.", "Thiago")  # the name may go on: NER reads it
    assert to_ner("Ana Lima spoke to Tom Baker yesterday.", "Ana Lima")  # another name nothing found
    assert to_ner("Ana Lima spoke to Tom Baker yesterday.")
    assert not to_ner("Ana Lima spoke to Tom Baker yesterday.", "Ana Lima", "Tom Baker")
    assert to_ner("no capitals here, so maybe a lower-case name")


def test_the_detector_loads_without_torch_or_transformers_and_they_still_import_afterwards():
    """Presidio and thinc try transformers and torch for models the detector never runs: 8 s of every
    cleaning process. The detector must find the same values without them, and leave them importable."""
    import subprocess
    import sys

    code = """
import sys
from finetune_pipeline.cleaning.privacy import fast_presidio_spans, presidio_spans
text = "Yesterday Kenji Watanabe called from +44 20 7946 0958 about card 4111 1111 1111 1111."
fast = sorted((s.start, s.end, s.kind) for s in fast_presidio_spans([text], 0.4)[0])
full = sorted((s.start, s.end, s.kind) for s in presidio_spans([text], 0.4)[0])
loaded = [name for name in ("torch", "transformers") if name in sys.modules]
import torch, transformers
print(fast == full, sorted({kind for *_, kind in fast}), loaded, torch.tensor([1]).item())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split("\n")[-2] == "True ['credit_card', 'person', 'phone'] [] 1", out.stdout + out.stderr


# ---- issue 33: redaction at a fixed point, names both ways, allow and deny lists -------------------------

# Real texts whose first redaction left something the detector finds again: "Klaus" was redacted, then
# "D. Kitzmann" read as a name beside the placeholder (scripts/bench_cleaning.py's texts).
NEEDS_A_SECOND_PASS = "Note from Klaus-D. Kitzmann: Since the update the Sign in button only refreshes the login page."
REDACTED_BEFORE = [  # what a redaction writes, in which the old detector found a new "person"
    "<PERSON> and the Holy Grail",
    "Static code checker for C++\nMaintainer: <PERSON> <<EMAIL>>",
    "Debian Squeeze themes\nMaintainer: <PERSON> <<EMAIL>>",
]


def _records(texts):
    from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text

    return corpus_frame([{"record_id": make_record_id("raw/q.jsonl", f"line {i}"), "text": t,
                          "source_uri": "raw/q.jsonl", "source_type": "jsonl", "locator": f"line {i}",
                          "content_sha256": sha256_text(t)} for i, t in enumerate(texts)])


def _chat_records(conversations):
    import json

    from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text

    rows = []
    for i, turns in enumerate(conversations):
        text = "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
        rows.append({"record_id": make_record_id("raw/chats.jsonl", f"line {i}"), "text": text,
                     "source_uri": "raw/chats.jsonl", "source_type": "jsonl", "locator": f"line {i}",
                     "content_sha256": sha256_text(text), "messages": json.dumps(turns),
                     "prompt": turns[-2]["content"], "response": turns[-1]["content"], "category": None})
    return corpus_frame(rows)


def _settings(**privacy):
    from finetune_pipeline.settings import Settings

    return Settings(privacy=PrivacySettings(**privacy))


def test_placeholders_do_not_make_new_names():
    from finetune_pipeline.cleaning.privacy import personal_data_left

    for text in REDACTED_BEFORE:
        assert not personal_data_left([text], PrivacySettings())[0], text


def test_cleaning_output_passes_the_export_detector_in_prose():
    """Every text that leaves cleaning passes `personal_data_left` (the export check's detector, same
    settings); the record that needed a second pass is counted in the stage statistics."""
    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.cleaning.privacy import personal_data_left

    texts = [NEEDS_A_SECOND_PASS, "My favourite films are Monty Python and the Holy Grail and Life of Brian.",
             "Static code checker for C++\nMaintainer: Wolfgang Silbermayr <wolfgang@silbermayr.at>"]
    result = clean_corpus(_records(texts), _settings())
    kept = result.kept["text"].to_list()
    assert len(kept) == 3 and not any(personal_data_left(kept, PrivacySettings())), kept
    assert "Kitzmann" not in kept[0] and "Silbermayr" not in kept[2]
    assert result.stats.pii_passes == {"2": 1} and result.stats.pii_unresolved == 0


def test_cleaning_output_passes_the_export_detector_in_chat_turns():
    import json

    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.cleaning.privacy import personal_data_left
    from finetune_pipeline.settings import Settings

    turns = [{"role": "user", "content": NEEDS_A_SECOND_PASS + " What should I try next?"},
             {"role": "assistant", "content": "Clear the browser's cookies for the shop and sign in again; "
                                              "if it still fails, reply here and we will reset the session."}]
    chats = Settings(task="instruction", privacy=PrivacySettings(),  # the kind cleans turn by turn
                     training={"instruction": {"base_model": "/nonexistent/model"}})  # no model: too-long skipped
    result = clean_corpus(_chat_records([turns]), chats)
    cleaned = [t["content"] for t in json.loads(result.kept["messages"][0])]
    assert not any(personal_data_left(cleaned, PrivacySettings())), cleaned
    assert "Kitzmann" not in cleaned[0] and result.stats.pii_passes == {"2": 1}


def test_a_text_still_holding_personal_data_after_the_last_pass_is_rejected(monkeypatch):
    """A detector that finds something new in every redaction cannot reach a fixed point: the record is
    rejected as pii_policy, naming the allow list, never exported."""
    from finetune_pipeline.cleaning import clean_corpus, privacy

    real = privacy.detect_pii_lists

    def always_one_more(texts, policy):  # each pass finds the first word that is not a placeholder yet
        found = real(texts, policy)
        for text, detection in zip(texts, found):
            word = next((m for m in re.finditer(r"[a-z]{4,}", text)), None)
            if word:
                detection.spans = privacy.resolve_overlaps(detection.spans + [
                    privacy.PiiSpan(word.start(), word.end(), "person")])
        return found

    import re

    monkeypatch.setattr(privacy, "detect_pii_lists", always_one_more)
    result = clean_corpus(_records(["the quick brown foxes jump over lazy dogs every single morning here"]),
                          _settings())
    assert result.kept.height == 0 and result.rejected["reason"].to_list() == ["pii_policy"]
    assert "privacy.allow" in result.rejected["detail"][0] and result.stats.pii_unresolved == 1


def test_names_before_an_email_in_any_case_and_capital_surnames():
    """Real maintainer lines of Debian's package index (scripts/bench_pii.py --debian): lower-case names,
    surnames in capitals, a nickname in brackets; a team's address is not a person."""
    cases = {"Maintainer: guillaume pernot <gpernot@praksys.org>": "guillaume pernot",
             "Maintainer: YOKOTA Hiroshi <yokota.hgml@gmail.com>": "YOKOTA Hiroshi",
             "Maintainer: Bofu Chen (bafu) <bofu@dt42.io>": "Bofu Chen (bafu)",
             "Maintainer: Jakub Ružička <jakub.ruzicka@nic.cz>": "Jakub Ružička",
             "The report came from Corentin LABBE yesterday.": "Corentin LABBE"}
    for text, name in cases.items():
        result = apply_pii_policy(text, PrivacySettings())
        assert name not in result.text and "<PERSON>" in result.text, result.text
    team = apply_pii_policy("Maintainer: Debian Python Team <team+python@tracker.debian.org>", PrivacySettings())
    assert team.text == "Maintainer: Debian Python Team <<EMAIL>>"
    assert apply_pii_policy("Send it to <a.b@example.org> today", PrivacySettings()).text == "Send it to <<EMAIL>> today"


def test_product_format_and_language_names_are_not_people():
    """Package synopses with no person in them (Debian's index): nothing may be lost to <PERSON>."""
    for text in ("split MP3, Ogg Vorbis, or FLAC files without re-encoding", "Debian Squeeze themes",
                 "Python bindings for GTK", "Java API for handling Windows ini file format (library)",
                 "Thai Loma font (dependency package)", "Synchronous Ruby AMQP client", "Mir Display Server",
                 "Perl implementation of Syslog Listener", "Qt 6 Virtual Keyboard QML module"):
        assert "person" not in apply_pii_policy(text, PrivacySettings()).counts, text


def test_allow_and_deny_lists_in_cleaning_and_the_export_check(tmp_path):
    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.cleaning.cache import cached_personal_data_left

    text = "Ada Lovelace wrote to Jane Doe about Project Falcon and ticket INT-4821."
    policy = PrivacySettings(allow=["Ada Lovelace"], deny={"custom": ["project falcon", r"re:INT-\d{4}"]})
    result = apply_pii_policy(text, policy)
    assert result.text == "Ada Lovelace wrote to <PERSON> about <CUSTOM> and ticket <CUSTOM>."
    assert (result.allowed, result.denied) == (1, 2)
    stats = clean_corpus(_records([text]), _settings(allow=["Ada Lovelace"],
                                                     deny={"custom": ["project falcon", r"re:INT-\d{4}"]})).stats
    assert (stats.pii_allowed, stats.pii_denied, stats.pii_by_type.get("custom")) == (1, 2, 2)
    # the export check uses the same lists, and its cache is keyed by them
    cache = tmp_path / "check.parquet"
    assert cached_personal_data_left([text], PrivacySettings(), cache)[0]["person"] == 2
    assert cached_personal_data_left([text], policy, cache)[0] == {"person": 1, "custom": 2}
    assert cached_personal_data_left([result.text], policy, cache)[0] == {}
    # a denied kind of the policy takes its placeholder; a deny entry beats the allow list
    both = PrivacySettings(allow=["Jane Doe"], deny={"person": ["Jane Doe"], "location": ["Springfield"]})
    assert apply_pii_policy("Jane Doe lives in Springfield.", both).text == "<PERSON> lives in <LOCATION>."
    # "the Holy Grail" inside an allowed phrase is no name, whatever the context
    assert apply_pii_policy("<PERSON> and the Holy Grail", PrivacySettings(allow=["Holy Grail"])).text \
        == "<PERSON> and the Holy Grail"


def test_allow_and_deny_entries_are_checked_when_settings_load():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a valid regular expression"):
        PrivacySettings(allow=["re:(unclosed"])
    with pytest.raises(ValidationError, match="lower-case"):
        PrivacySettings(deny={"Bad Kind": ["x"]})
    with pytest.raises(ValidationError, match="empty entry"):
        PrivacySettings(deny={"custom": [" "]})


def test_data_card_counts_the_fixed_point_and_the_lists():
    from finetune_pipeline import reporting
    from finetune_pipeline.records import rejects_frame

    card = reporting.data_card([], rejects_frame([]), None, {"person": 3, "custom": 2}, None,
                               pii_policy=PrivacySettings().policy,
                               redaction={"pii_passes": {"2": 4}, "pii_unresolved": 1, "pii_allowed": 5,
                                          "pii_denied": 2})
    assert "| custom | 2 | redact (privacy.deny) |" in card
    assert "4 a pass 2; 1 rejected" in card and "privacy.allow left 5 findings" in card
    assert "privacy.deny redacted 2 spans" in card


def test_names_of_fonts_scripts_products_and_titles_are_not_people():
    """Real Debian synopses and manual-page lines the detector took for names (issue 33): a name after a
    determiner or inside a longer capitalised run, before a technical word, in a list of language names
    with its code, a title after a cue, an em dash before a description."""
    keep = ["Development files for the Emilia Pinball Emulator",
            "typeface reflecting the traditional hand-written style of the Tai Viet script",
            "Nanum Eco Korean font", "Lexi Saebom Korean font",
            "Debian Edu Homeworld \"bullseye\" theme and artwork",
            "gcloud alpha asset feeds describe - describe a Cloud Asset Inventory Feed",
            "Miao (Pollard) fonts for Aluo / Gan Yi [yna]",
            "Miao (Pollard) fonts for Small Flowery Miao / Xiaohua Miao [sfm]",
            "Monte Carlo Particle Lists - library", "Grid Community Toolkit - Globus Gass Copy Programs",
            "According to The Single Unix Specification, the behavior is unspecified.",
            "rpc_gss_is_installed — Query for the presence of a security mechanism"]
    for text in keep:
        assert apply_pii_policy(text, PrivacySettings()).text == text, text
    # people in the same shapes stay redacted
    people = {"Steve Harris's LADSPA plugins": "<PERSON> LADSPA plugins",
              "Free unicode TrueType fonts by George Williams": "Free unicode TrueType fonts by <PERSON>",
              "A quote, as the saying goes.\n— Ada Lovelace": "A quote, as the saying goes.\n— <PERSON>"}
    for text, redacted in people.items():
        assert apply_pii_policy(text, PrivacySettings()).text == redacted, text


def test_lower_case_names_and_capital_surnames_after_credit_cues():
    cases = {"Thanks to liam obrien for the patch; reach them at liam@example.org.": "liam obrien",
             "Questions to maria gonzalez, phone +1 212 555 0129.": "maria gonzalez",
             "Thanks to kwame mensah for the patch.": "kwame mensah",
             "Reported by Haruto SATO (haruto@example.com).": "Haruto SATO"}
    for text, name in cases.items():
        result = apply_pii_policy(text, PrivacySettings()).text
        assert name not in result and "<PERSON>" in result, text
    # English words after the cue are no name, in lower case or in capitals
    for text in ("thanks to maria for the patch", "Reported by Debian QA team.", "thanks to upstream for the fix"):
        assert "<PERSON>" not in apply_pii_policy(text, PrivacySettings()).text, text


def test_the_export_check_reads_its_cache_part_by_part_and_keeps_every_part(tmp_path, monkeypatch):
    """The personal-data check reads the export a part at a time (`PersonalDataCounts`): the counts equal one
    call over every text, the cache then holds every part's texts (a second pass asks the detector nothing),
    a part's texts are looked up by key only, and a pass that fails leaves the cache as it was."""
    import polars as pl

    from finetune_pipeline.cleaning import cache as cache_module
    from finetune_pipeline.cleaning.cache import PersonalDataCounts, cached_personal_data_left

    texts = ["Write to lena.berg@example.org today.", "Nothing personal here.", "Call +1 415 555 0100 now.",
             "Nothing personal here.", "Order 88123 was charged twice."]
    policy, file = PrivacySettings(detector="patterns"), tmp_path / "check.parquet"
    whole = cached_personal_data_left(texts, policy, None)
    asked = []
    real = cache_module.personal_data_left
    monkeypatch.setattr(cache_module, "personal_data_left", lambda t, p: asked.extend(t) or real(t, p))
    with PersonalDataCounts(policy, file) as counts:
        parts = counts.counts(texts[:2]) + counts.counts(texts[2:])
    assert parts == whole and whole[0]["email"] == 1 and not whole[1]
    assert asked == texts[:2] + [texts[2], texts[3], texts[4]]  # each part's distinct texts (no cache yet)
    assert pl.read_parquet(file)["key"].n_unique() == 4  # every distinct text of both parts
    asked.clear()
    with PersonalDataCounts(policy, file) as counts:
        assert counts.counts(texts[3:]) + counts.counts(texts[:3]) == whole[3:] + whole[:3]
    assert asked == []  # all stored
    before = file.read_bytes()
    try:
        with PersonalDataCounts(policy, file) as counts:
            counts.counts(["A new text, never seen."])
            raise RuntimeError("the check stopped")
    except RuntimeError:
        pass
    assert file.read_bytes() == before and not list(tmp_path.glob(".check.parquet.*"))
