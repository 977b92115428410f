"""The real-data gauntlet's pure parts (scripts/bench_real_data.py): planting and measuring on tiny inputs.
No apt, no manual pages, no pipeline run."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_real_data.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_real_data"] = module
    spec.loader.exec_module(module)
    return module


def test_edit_words_stays_within_the_share(bench):
    text = " ".join(f"word{i}" for i in range(40))
    copy, edits = bench.edit_words(text, 0.1, random.Random(1), ["other"])
    assert edits == 4
    assert copy != text
    assert len(set(text.split()) - set(copy.split())) <= edits


def test_edit_words_keeps_line_breaks(bench):
    text = "NAME line here\n\n" + " ".join(f"w{i}" for i in range(30)) + "\n\nlast paragraph of words"
    copy, _ = bench.edit_words(text, 0.05, random.Random(4), ["x"])
    assert copy.count("\n\n") == 2


def test_edit_words_edits_at_least_one_word(bench):
    copy, edits = bench.edit_words("a short synopsis of six words", 0.03, random.Random(2), ["zzz"])
    assert edits == 1 and copy != "a short synopsis of six words"


def test_person_maintainer_takes_people_not_teams(bench):
    assert bench.person_maintainer("Jonas Smedegaard <dr@jones.dk>") == ("Jonas Smedegaard", "dr@jones.dk")
    assert bench.person_maintainer("Debian Games Team <pkg-games-devel@lists.alioth.debian.org>") is None
    assert bench.person_maintainer("Python Applications Packaging Team <team@example.org>") is None
    assert bench.person_maintainer("nobody") is None


def test_contact_line_answers_are_in_the_line(bench):
    rng = random.Random(3)
    for _ in range(20):
        line, answers = bench.contact_line(rng)
        assert answers[0]["type"] == "person"
        assert all(a["value"] in line for a in answers)


def test_man_excerpt_keeps_name_and_description(bench):
    rendered = ("LS(1)    User Commands    LS(1)\n\nNAME\n       ls - list directory contents\n\nSYNOPSIS\n"
                "       ls [OPTION]... [FILE]...\n\nDESCRIPTION\n       List information about the FILEs\n"
                "       (the current directory by default).\n\n       Mandatory arguments.\n\nAUTHOR\n       Someone\n")
    excerpt = bench.man_excerpt(rendered)
    assert excerpt.startswith("ls - list directory contents\n\nList information about the FILEs (the current")
    assert "Someone" not in excerpt and "OPTION" not in excerpt


def test_pii_scores_recall_and_precision(bench):
    planted = [{"key": "a", "type": "person", "value": "Bobby Tran", "style": "nickname"},
               {"key": "a", "type": "email", "value": "bobby.tran1@example.org", "style": "planted"},
               {"key": "b", "type": "person", "value": "Haruto SATO", "style": "all_caps_surname"},
               {"key": "gone", "type": "person", "value": "Ngozi Eze", "style": "igbo"}]
    exported = {"a": ["Reported by <PERSON> (<EMAIL>)."], "b": ["Questions to Haruto SATO, phone <PHONE>."],
                "c": ["split MP3, <PERSON>, or FLAC files"], "d": ["a plain synopsis"]}
    scores = bench.pii_scores(planted, exported, {"a", "b", "gone"})
    assert scores["by_type"]["person"]["planted"] == 2  # the rejected record is not counted
    assert scores["by_type"]["person"]["recall"] == 0.5
    assert scores["by_type"]["person"]["missed"] == [{"key": "b", "style": "all_caps_surname"}]
    assert scores["by_type"]["email"]["recall"] == 1.0
    assert scores["person_by_style"]["all_caps_surname"]["recall"] == 0.0
    assert scores["records_without_person"] == 2 and scores["false_person_records"] == 1
    assert scores["false_person_keys"] == ["c"]


def test_dedup_scores_recall_false_merges_and_split_families(bench):
    families = [{"original": "o1", "copies": ["c1"]}, {"original": "o2", "copies": ["c2"]},
                {"original": "o3", "copies": ["c3"]}, {"original": "o4", "copies": ["c4"]},
                {"original": "o5", "copies": ["c5"]}]
    outcome = {
        "o1": {"status": "kept", "record_id": "r-o1", "split": "train"},
        "c1": {"status": "duplicate", "record_id": "r-c1", "duplicate_of": "r-o1"},  # found
        "o2": {"status": "kept", "record_id": "r-o2", "split": "train"},
        "c2": {"status": "kept", "record_id": "r-c2", "split": "test"},  # missed and split apart
        "o3": {"status": "rejected", "record_id": "r-o3"},  # not counted
        "c3": {"status": "kept", "record_id": "r-c3", "split": "train"},
        "o4": {"status": "kept", "record_id": "r-o4", "split": "train"},
        "c4": {"status": "duplicate", "record_id": "r-c4", "duplicate_of": "r-x"},  # merged with a stranger
        "x": {"status": "kept", "record_id": "r-x", "split": "train"},
        "o5": {"status": "duplicate", "record_id": "r-o5", "duplicate_of": "r-c5"},  # the copy came first: found
        "c5": {"status": "kept", "record_id": "r-c5", "split": "test"},
        "y": {"status": "duplicate", "record_id": "r-y", "duplicate_of": "r-x"},  # real data's own duplicate
    }
    scores = bench.dedup_scores(families, outcome)
    assert (scores["copies"], scores["found"], scores["missed"]) == (4, 2, 2)
    assert scores["recall"] == 0.5
    assert scores["missed_keys"] == ["c2"]
    assert scores["false_merges"] == 1 and scores["false_merge_pairs"] == [("c4", "x")]
    assert scores["families_split_apart"] == 1
    assert scores["unplanted_duplicates"] == 1


def test_conflict_scores(bench):
    planted = [{"a", "b"}, {"c", "d"}, {"h", "i"}]
    tasks = [{"a", "b"}, {"c", "d", "e"}, {"f", "g"}]  # one pure, one with an innocent record, one false
    assert bench.conflict_scores(tasks, planted) == {"tasks": 3, "real": 1, "precision": round(1 / 3, 4),
                                                     "planted": 3, "caught": 2, "recall": round(2 / 3, 4),
                                                     "largest_task": 3, "innocent_in_review": 3}


def test_domain_scores(bench):
    reasons = {"doc|1": "off_domain", "doc|2": "too_short", "row|1": "off_domain"}
    scores = bench.domain_scores({"doc|1", "doc|2"}, reasons, {"doc|1", "doc|2", "row|1", "row|2"})
    assert scores == {"off_domain": 2, "off_domain_caught": 1, "in_domain": 2, "in_domain_lost": 1,
                      "in_domain_lost_share": 0.5}


def test_record_key_and_cli_lines(bench):
    assert bench.record_key("/tmp/x/raw/packages.jsonl", "id=pkg-1", by_file=False) == "packages.jsonl|id=pkg-1"
    assert bench.record_key("file:///tmp/x/raw/man/ls.1.txt", "element 1", by_file=True) == "man/ls.1.txt"
    lines = bench.cli_check_lines("noise\nFAILED CHECK dataset_splits_no_leakage on dataset_splits: 2 copies\n"
                                  "WARNING dataset_splits_test_support on dataset_splits: few\n")
    assert [(line["kind"], line["check"]) for line in lines] == [
        ("FAILED CHECK", "dataset_splits_no_leakage"), ("WARNING", "dataset_splits_test_support")]
