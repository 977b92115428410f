"""Preference pairs, the data side (finetune_pipeline/tasks/preference.py): TRL's preference format from every
table form, UltraFeedback-style rated answers, malformed rows naming the fix, pairs from resolved instruction
conflicts, the pair filters, the text units, and the committed example root."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from finetune_pipeline.dedup.conflicts import prompt_dedup
from finetune_pipeline.labeling.conflicts import review_conflicts
from finetune_pipeline.records import REJECTS_SCHEMA, corpus_frame, make_record_id
from finetune_pipeline.settings import DedupSettings, PreferenceSettings, Settings
from finetune_pipeline.tasks import preference as P

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "preference"

SKY = [{"role": "user", "content": "What color is the sky?"}]
BLUE = [{"role": "assistant", "content": "It is blue."}]
GREEN = [{"role": "assistant", "content": "It is green."}]
SYSTEM = [{"role": "system", "content": "Answer briefly."}]


def read(path: Path, settings: Settings | None = None) -> P.PreferenceRead:
    return P.read_preference_source(path, settings or Settings())


def pairs_of(read_result: P.PreferenceRead) -> list[P.PreferencePair]:
    return [P.PreferencePair.from_record(r) for r in read_result.pairs]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- reading TRL's preference format

def test_explicit_plain_text_from_jsonl(tmp_path):
    result = read(jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "What color is the sky?",
                                                  "chosen": "It is blue.", "rejected": "It is green."}]))
    assert pairs_of(result) == [P.PreferencePair(SKY, BLUE, GREEN)]
    record = result.pairs[0]
    assert record["prompt"] == "What color is the sky?" and record["locator"] == "id=a"
    assert json.loads(record["chosen"]) == BLUE
    assert result.stats.explicit_prompts == 1 and result.stats.implicit_prompts == 0


def test_explicit_conversational_from_json(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": SYSTEM + SKY, "chosen": BLUE, "rejected": GREEN}]), encoding="utf-8")
    result = read(path)
    assert pairs_of(result) == [P.PreferencePair(SYSTEM + SKY, BLUE, GREEN)]
    assert result.pairs[0]["locator"] == "item 1"


def test_implicit_conversational_from_parquet_matches_trl(tmp_path):
    from trl.data_utils import maybe_extract_prompt

    chosen, rejected = SYSTEM + SKY + BLUE, SYSTEM + SKY + GREEN
    pl.DataFrame({"chosen": [chosen], "rejected": [rejected]}).write_parquet(tmp_path / "p.parquet")
    result = read(tmp_path / "p.parquet")
    trl = maybe_extract_prompt({"chosen": chosen, "rejected": rejected})
    assert pairs_of(result) == [P.PreferencePair(trl["prompt"], trl["chosen"], trl["rejected"])]
    assert result.stats.implicit_prompts == 1


def test_implicit_plain_text_splits_where_trl_does():
    from trl.data_utils import extract_prompt

    row = {"chosen": "The sky is blue.", "rejected": "The sky is green."}
    pair, implicit = P.pair_from_row(row, PreferenceSettings())
    trl = extract_prompt(row)
    assert implicit and pair.prompt == trl["prompt"].strip() == "The sky is"
    assert (pair.chosen_text, pair.rejected_text) == (trl["chosen"].strip(), trl["rejected"].strip())


def test_text_prompt_with_conversational_answers_takes_the_implicit_prompt_as_trl_does():
    from trl.data_utils import maybe_extract_prompt

    row = {"prompt": "What color is the sky?", "chosen": SKY + BLUE, "rejected": SKY + GREEN}
    pair, implicit = P.pair_from_row(row, PreferenceSettings())
    trl = maybe_extract_prompt(row)
    assert implicit and pair == P.PreferencePair(trl["prompt"], trl["chosen"], trl["rejected"])


def test_hf_save_to_disk_folder_prefixes_the_split(tmp_path):
    import datasets

    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"prompt": SKY, "chosen": BLUE, "rejected": GREEN}]),
        "test": datasets.Dataset.from_list([{"prompt": SKY, "chosen": GREEN, "rejected": BLUE}]),
    }).save_to_disk(str(tmp_path / "prefs"))
    result = read(tmp_path / "prefs")
    by_locator = {r["locator"]: P.PreferencePair.from_record(r) for r in result.pairs}
    assert by_locator == {"split train; row 1": P.PreferencePair(SKY, BLUE, GREEN),
                          "split test; row 1": P.PreferencePair(SKY, GREEN, BLUE)}
    assert result.stats.pairs == 2


def test_csv_cells_holding_json_turns(tmp_path):
    pl.DataFrame({"chosen": [json.dumps(SKY + BLUE)], "rejected": [json.dumps(SKY + GREEN)]}).write_csv(
        tmp_path / "p.csv")
    assert pairs_of(read(tmp_path / "p.csv")) == [P.PreferencePair(SKY, BLUE, GREEN)]


def test_sqlite_table_and_sql_query(tmp_path, monkeypatch):
    from finetune_pipeline.sources import sql

    db = tmp_path / "prefs.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table pairs (id text, prompt text, chosen text, rejected text)")
        conn.execute("insert into pairs values ('k1', 'What color is the sky?', 'It is blue.', 'It is green.')")
        conn.execute("create table notes (body text)")  # no preference columns: not read
    result = read(db)
    assert [r["locator"] for r in result.pairs] == ["table pairs; id=k1"]
    assert pairs_of(result) == [P.PreferencePair(SKY, BLUE, GREEN)]

    monkeypatch.setenv("PREFS_URL", f"sqlite:///{db}")
    rows = sql.read_sql_query("PREFS_URL", "select prompt, chosen, rejected from pairs")
    settings = Settings()
    queried = P.rows_to_pairs([(f"row {i + 1}", r) for i, r in enumerate(rows)], settings.preference,
                              settings.sources.tabular)
    assert pairs_of(queried) == [P.PreferencePair(SKY, BLUE, GREEN)]


def test_instruction_rows_come_back_as_conversations_for_the_conflict_path(tmp_path):
    path = jsonl(tmp_path / "chats.jsonl", [{"messages": SKY + BLUE}, {"messages": SKY + GREEN}])
    result = read(path)
    assert result.pairs == [] and len(result.conversations) == 2
    assert json.loads(result.conversations[1]["messages"]) == SKY + GREEN


def test_a_table_of_neither_form_names_the_settings(tmp_path):
    from finetune_pipeline.sources.tabular import MissingColumn

    with pytest.raises(MissingColumn, match="preference.chosen_column"):
        read(jsonl(tmp_path / "p.jsonl", [{"question": "x", "answer": "y"}]))


def test_a_broken_json_line_is_a_malformed_row(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": \n', encoding="utf-8")
    result = read(path)
    assert len(result.pairs) == 1
    assert [(r["locator"], r["reason"]) for r in result.rejects] == [("line 2", "malformed_row")]


# ---- malformed rows: rejected with a reason and a detail naming the fix

@pytest.mark.parametrize("row, reason, fix", [
    ({"prompt": "q?", "chosen": "Same answer.", "rejected": "Same answer."}, "chosen_equals_rejected",
     "write the worse answer into 'rejected'"),
    ({"chosen": SKY + BLUE, "rejected": SKY + BLUE}, "chosen_equals_rejected", "write the worse answer"),
    ({"prompt": SKY, "chosen": BLUE, "rejected": [{"role": "assistant", "content": " It is blue. "}]},
     "chosen_equals_rejected", "write the worse answer"),
    ({"prompt": "q?", "chosen": "a"}, "missing_side", "fill it in or remove the row"),
    ({"prompt": "q?", "chosen": "", "rejected": "b"}, "missing_side", "fill it in or remove the row"),
    ({"prompt": "q?", "chosen": "a", "rejected": None}, "missing_side", "fill it in or remove the row"),
    ({"chosen": SKY + BLUE, "rejected": SKY}, "missing_side", "fill it in or remove the row"),
    ({"prompt": SKY, "chosen": [{"role": "bot", "content": "It is blue."}], "rejected": GREEN}, "unknown_role",
     "use one of system, user, assistant"),
    ({"prompt": "   ", "chosen": "a", "rejected": "b"}, "empty_prompt", "give the question"),
    ({"chosen": "Blue.", "rejected": "Green."}, "empty_prompt", "start chosen and rejected with the same user turn"),
    ({"chosen": BLUE, "rejected": GREEN}, "empty_prompt", "start chosen and rejected with the same user turn"),
    ({"prompt": "q?", "chosen": SKY + BLUE, "rejected": "It is green."}, "malformed_pair", "write both the same way"),
    ({"prompt": SKY, "chosen": SKY, "rejected": GREEN}, "malformed_pair", "must end with the assistant's turn"),
])
def test_malformed_rows_name_the_fix(row, reason, fix):
    with pytest.raises(P.MalformedPair) as caught:
        P.pair_from_row(row, PreferenceSettings())
    assert caught.value.reason == reason
    assert fix in str(caught.value)


def test_malformed_rows_become_rejects_and_good_rows_stay(tmp_path):
    rows = [{"id": "good", "prompt": "q?", "chosen": "a", "rejected": "b"},
            {"id": "same", "prompt": "q?", "chosen": "a", "rejected": "a"},
            {"id": "role", "prompt": SKY, "chosen": [{"role": "robot", "content": "x"}], "rejected": GREEN}]
    result = read(jsonl(tmp_path / "p.jsonl", rows))
    assert [r["locator"] for r in result.pairs] == ["id=good"]
    assert [(r["locator"], r["reason"]) for r in result.rejects] == [("id=same", "chosen_equals_rejected"),
                                                                     ("id=role", "unknown_role")]


# ---- UltraFeedback-style rated answers

def test_rated_completions_best_against_each_lower_one_ties_dropped_and_counted(tmp_path):
    completions = [{"response": "Okay answer.", "overall_score": 3},
                   {"response": "Best answer.", "overall_score": 5},
                   {"response": "Bad answer.", "overall_score": 1},
                   {"response": "Also best.", "overall_score": 5}]
    result = read(jsonl(tmp_path / "uf.jsonl", [{"instruction": "Explain it.", "completions": completions}]))
    made = sorted((p.chosen_text, p.rejected_text) for p in pairs_of(result))
    assert made == [("Best answer.", "Bad answer."), ("Best answer.", "Okay answer.")]
    assert result.stats.ties_dropped == 1 and result.stats.rated_rows == 1
    assert {r["locator"] for r in result.pairs} == {"line 1; answer 2 over 1", "line 1; answer 2 over 3"}
    assert all(r["prompt"] == "Explain it." for r in result.pairs)
    ratings = sorted((r["chosen_rating"], r["rejected_rating"]) for r in result.pairs)
    assert ratings == [(5.0, 1.0), (5.0, 3.0)]


def test_rated_best_vs_worst_makes_one_pair():
    cfg = PreferenceSettings(pairing="best_vs_worst")
    answers = [P.RatedAnswer("mid", 3, 1), P.RatedAnswer("top", 4, 2), P.RatedAnswer("low", 1, 3)]
    made = P.pairs_by_rating(answers, cfg.pairing)
    assert [(c.text, r.text) for c, r in made.pairs] == [("top", "low")] and made.ties == 0


def test_responses_with_ratings_form(tmp_path):
    row = {"prompt": "Explain it.", "responses": ["low one", "high one"], "ratings": [2.0, 8.5]}
    result = read(jsonl(tmp_path / "uf.jsonl", [row]))
    assert [(p.chosen_text, p.rejected_text) for p in pairs_of(result)] == [("high one", "low one")]


@pytest.mark.parametrize("completions, reason, fix", [
    ([{"response": "a", "overall_score": 4}, {"response": "b", "overall_score": 4}], "tied_ratings",
     "rate them apart"),
    ([{"response": "a", "overall_score": 4}, {"response": "b", "overall_score": None}], "too_few_rated_answers",
     "rate the answers"),
])
def test_rated_rows_without_a_pair_are_rejected(tmp_path, completions, reason, fix):
    result = read(jsonl(tmp_path / "uf.jsonl", [{"instruction": "q?", "completions": completions}]))
    assert result.pairs == []
    assert [r["reason"] for r in result.rejects] == [reason] and fix in result.rejects[0]["detail"]


def test_rated_answers_of_the_same_text_are_rejected_as_equal(tmp_path):
    completions = [{"response": "same", "overall_score": 5}, {"response": "same", "overall_score": 2},
                   {"response": "other", "overall_score": 1}]
    result = read(jsonl(tmp_path / "uf.jsonl", [{"instruction": "q?", "completions": completions}]))
    assert [(p.chosen_text, p.rejected_text) for p in pairs_of(result)] == [("same", "other")]
    assert [(r["locator"], r["reason"]) for r in result.rejects] == [("line 1; answer 1 over 2",
                                                                      "chosen_equals_rejected")]


# ---- pairs from resolved instruction conflicts

def conflict_corpus() -> pl.DataFrame:
    turns = [SKY + BLUE, SKY + GREEN, SKY + [{"role": "assistant", "content": "Purple, mostly at noon."}],
             [{"role": "user", "content": "How many legs does a spider have?"},
              {"role": "assistant", "content": "Eight."}]]
    rows = [{"record_id": make_record_id("raw/chats.jsonl", f"line {n}"), "source_uri": "raw/chats.jsonl",
             "locator": f"line {n}", "text": json.dumps(t), "messages": json.dumps(t),
             "prompt": t[0]["content"], "response": t[-1]["content"]} for n, t in enumerate(turns, start=1)]
    return corpus_frame(rows)


def test_keep_first_conflict_gives_a_pair_per_rejected_answer():
    corpus = conflict_corpus()
    ids = corpus["record_id"].to_list()
    dedup = prompt_dedup(corpus, DedupSettings(conflicts="keep_first", near_duplicates=False))
    assert dedup.rejected.filter(pl.col("reason") == "conflicting_instruction").height == 2
    pairs, stats = P.pairs_from_conflicts(corpus, dedup.rejected)
    made = {(p.prompt, p.chosen_text, p.rejected_text) for p in map(P.PreferencePair.from_record,
                                                                     pairs.iter_rows(named=True))}
    assert made == {("What color is the sky?", "It is blue.", "It is green."),
                    ("What color is the sky?", "It is blue.", "Purple, mostly at noon.")}
    assert (stats.pairs, stats.conflicts, stats.unresolved, stats.missing) == (2, 1, 0, 0)
    assert set(pairs["chosen_record_id"]) == {ids[0]} and set(pairs["rejected_record_id"]) == {ids[1], ids[2]}
    assert pairs["record_id"].n_unique() == 2 and set(P.PAIR_COLUMNS) <= set(pairs.columns)


def test_reviewer_choice_makes_the_chosen_answer_the_chosen_side():
    corpus = conflict_corpus()
    ids = corpus["record_id"].to_list()
    marked = prompt_dedup(corpus, DedupSettings(conflicts="review", near_duplicates=False)).kept
    cid = marked.filter(pl.col("conflict_id").is_not_null())["conflict_id"][0]
    annotations = pl.DataFrame({"record_id": [cid, cid], "annotator": ["ann1", "ann2"],
                                "label": ["Answer 2", "Answer 2"], "source_file": ["a.csv", "a.csv"]})
    decided = review_conflicts(marked, annotations)
    pairs, stats = P.pairs_from_conflicts(corpus, decided.rejected)
    assert set(pairs["chosen_record_id"]) == {ids[1]} and set(pairs["rejected_record_id"]) == {ids[0], ids[2]}
    assert {P.PreferencePair.from_record(r).chosen_text for r in pairs.iter_rows(named=True)} == {"It is green."}


def test_drop_all_and_missing_records_make_no_pair():
    corpus = conflict_corpus()
    ids = corpus["record_id"].to_list()
    rejected = pl.DataFrame([
        {"record_id": ids[0], "stage": "labeled_corpus", "reason": "conflicting_instruction", "detail": "",
         "source_uri": "raw/chats.jsonl", "locator": "line 1", "duplicate_of": None},
        {"record_id": "not-there", "stage": "deduplicated_corpus", "reason": "conflicting_instruction",
         "detail": "", "source_uri": "raw/chats.jsonl", "locator": "line 9", "duplicate_of": ids[0]},
        {"record_id": ids[3], "stage": "deduplicated_corpus", "reason": "duplicate_prompt", "detail": "",
         "source_uri": "raw/chats.jsonl", "locator": "line 4", "duplicate_of": ids[0]},
    ], schema=REJECTS_SCHEMA)
    pairs, stats = P.pairs_from_conflicts(corpus, rejected)
    assert pairs.is_empty() and (stats.unresolved, stats.missing, stats.pairs) == (1, 1, 0)


# ---- pair filters

def pair(chosen: str, rejected: str) -> P.PreferencePair:
    return P.PreferencePair(SKY, [{"role": "assistant", "content": chosen}],
                            [{"role": "assistant", "content": rejected}])


LONG = "The sky looks blue because air scatters the short wavelengths of sunlight more than the long ones, " * 3


@pytest.mark.parametrize("candidate, reason", [
    (pair("As an AI language model, I cannot see.", "I'm sorry, but I can't help with that."), "both_refusals"),
    (pair(LONG + "and so", LONG + "which is why the"), "both_truncated"),
    (pair("It is blue!", "it is   BLUE."), "identical_answers"),
    (pair("Blue.", "It is blue because of Rayleigh scattering of sunlight in the air above us."), "length_ratio"),
])
def test_each_pair_filter_rejects_its_case(candidate, reason):
    verdict = P.pair_reject(candidate, Settings())
    assert verdict is not None and verdict[0] == reason


@pytest.mark.parametrize("candidate", [
    pair("It is blue.", "As an AI language model, I cannot see."),  # one refusal: a good pair
    pair(LONG + "and that is all.", LONG + "and so"),  # one truncated: a good pair
    pair("It is blue.", "It is green."),
    pair("Blue, from scattering.", "Green, from the grass below."),
])
def test_pair_filters_keep_good_pairs(candidate):
    assert P.pair_reject(candidate, Settings()) is None


def test_length_ratio_follows_the_setting():
    candidate = pair("Blue.", "It is blue, mostly.")  # 19 / 5 = 3.8 characters
    assert P.length_ratio_filter(candidate, PreferenceSettings(max_length_ratio=4.0)) is None
    reject = P.length_ratio_filter(candidate, PreferenceSettings(max_length_ratio=3.5))
    assert reject[0] == "length_ratio" and "preference.max_length_ratio=3.5" in reject[1]


def test_filter_pairs_splits_a_frame_into_kept_and_rejects():
    rows = [{**p.fields(), "locator": f"line {n}"} for n, p in enumerate(
        [pair("It is blue.", "It is green."), pair("It is blue!", "it is blue")], start=1)]
    frame = P.pair_records(rows, "raw/p.jsonl", "jsonl")
    kept, rejected = P.filter_pairs(frame, Settings())
    assert kept["locator"].to_list() == ["line 1"] and kept.columns == frame.columns
    assert rejected.select("locator", "reason", "stage").rows() == [("line 2", "identical_answers", "cleaned_corpus")]


# ---- text units

def test_text_units_cover_every_turn_and_rebuild_the_record():
    record = P.PreferencePair(SYSTEM + SKY, BLUE, GREEN).fields()
    assert P.text_units(record) == ["Answer briefly.", "What color is the sky?", "It is blue.", "It is green."]
    cleaned = P.fields_from_units(record, ["Answer briefly.", "What color is the sky, <PERSON>?", "It is <EMAIL>.",
                                           "It is green."])
    assert cleaned["prompt"] == "What color is the sky, <PERSON>?"
    assert json.loads(cleaned["chosen"]) == [{"role": "assistant", "content": "It is <EMAIL>."}]
    assert "<EMAIL>" in cleaned["text"] and "blue" not in cleaned["text"]
    with pytest.raises(ValueError, match="3 text units for a pair of 4 turns"):
        P.fields_from_units(record, ["a", "b", "c"])


def test_to_trl_forms():
    record = P.PreferencePair(SYSTEM + SKY, BLUE, GREEN).fields()
    assert P.to_trl(record) == {"prompt": SYSTEM + SKY, "chosen": BLUE, "rejected": GREEN}
    assert P.to_trl(record, conversational=False) == {"prompt": "What color is the sky?", "chosen": "It is blue.",
                                                      "rejected": "It is green."}


def test_importing_the_kind_loads_neither_sources_nor_cleaning():
    # Both packages' stage runners import the task registry: a module-level import back would be a circle.
    code = ("import sys, finetune_pipeline.tasks.preference; "
            "print([m for m in sys.modules if m.startswith(('finetune_pipeline.sources', 'finetune_pipeline.cleaning'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# ---- the committed example root

def test_example_root_reads_as_its_truth_file_says():
    truth = json.loads((EXAMPLE / "truth.json").read_text(encoding="utf-8"))
    settings = Settings()
    found = {path.name: read(path, settings) for path in sorted((EXAMPLE / "raw").iterdir())}
    assert set(found) == {"pairs_plain.jsonl", "pairs_chat.jsonl", "ultrafeedback.json", "conflicts.jsonl"}
    rejected = {(name, r["reason"]) for name, result in found.items() for r in result.rejects}
    assert rejected == {(m["file"], m["reason"]) for m in truth["malformed"]}
    for m in truth["malformed"]:
        if not m["id"].startswith("("):
            assert any(r["locator"] == f"id={m['id']}" and r["reason"] == m["reason"]
                       for r in found[m["file"]].rejects), m
    assert found["pairs_plain.jsonl"].stats.explicit_prompts == truth["counts"]["pairs_plain"]
    assert found["pairs_chat.jsonl"].stats.implicit_prompts == truth["counts"]["pairs_chat"]
    assert found["ultrafeedback.json"].stats.ties_dropped > 0
    assert sum(len(r.pairs) for r in found.values()) >= 300
    # every planted value sits in the raw file the truth names
    for item in truth["planted_pii"]:
        assert item["value"] in (EXAMPLE / "raw" / item["file"]).read_text(encoding="utf-8"), item
    assert {i["kind"] for i in truth["planted_pii"]} == {"person", "email", "phone"}
    assert {i["field"] for i in truth["planted_pii"]} >= {"prompt", "chosen", "rejected"}
    assert sum(p.stat().st_size for p in EXAMPLE.rglob("*") if p.is_file()) < 1_000_000


def test_example_conflicts_become_a_pair_per_wrong_answer():
    result = read(EXAMPLE / "raw" / "conflicts.jsonl")
    uri = "raw/conflicts.jsonl"
    corpus = corpus_frame([{**c, "source_uri": uri, "record_id": make_record_id(uri, c["locator"])}
                           for c in result.conversations])
    dedup = prompt_dedup(corpus, DedupSettings(conflicts="keep_first"))
    pairs, stats = P.pairs_from_conflicts(corpus, dedup.rejected)
    firsts = {make_record_id(uri, c["locator"]) for c in result.conversations if c["locator"].endswith("-1")}
    assert stats.pairs == len(result.conversations) - len(firsts) and stats.conflicts == len(firsts)
    assert set(pairs["chosen_record_id"]) == firsts


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="the builder reads Debian's package database")
def test_example_builder_writes_the_same_bytes_twice(tmp_path):
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run([sys.executable, str(REPO / "scripts" / "build_preference_example.py"), "--out", str(out)],
                       check=True, capture_output=True)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["finetune.yaml", "raw/conflicts.jsonl", "raw/pairs_chat.jsonl",
                                       "raw/pairs_plain.jsonl", "raw/ultrafeedback.json", "truth.json"]
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert (tmp_path / "a" / "finetune.yaml").read_bytes() == (EXAMPLE / "finetune.yaml").read_bytes()


def test_pair_checks_run_in_order_on_record_fields():
    settings = Settings()
    names = [name for name, _ in P.pair_checks(settings)]
    assert names == ["identical_answers", "both_refusals", "both_truncated", "length_ratio"]
    record = pair("As an AI language model, no.", "As an AI language model, no!").fields()  # identical and refusals
    verdicts = [check(record) for _, check in P.pair_checks(settings)]
    assert [v[0] if v else None for v in verdicts] == ["identical_answers", "both_refusals", None, None]
    assert P.pair_reject(P.PreferencePair.from_record(record), settings)[0] == "identical_answers"
