"""The filter contract (cleaning/filters.py) and what each kind hands cleaning (Task.text_units, from_units,
cleaning_filters): one list per kind, in order, each filter judging a cleaned record alone."""

import json

import pytest

from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.filters import Candidate, Filter, quality_filters, run_filters
from finetune_pipeline.records import corpus_frame
from finetune_pipeline.settings import CleaningSettings, PrivacySettings, Settings
from finetune_pipeline.tasks import TASKS, task_named

GOOD = ("The courier collected the parcel on Monday morning and the tracking page shows it reached the depot "
        "in the evening, so delivery to your address is expected on Wednesday before noon.")
TURNS = [{"role": "system", "content": "You answer billing questions."},
         {"role": "user", "content": "When does the yearly plan start?"},
         {"role": "assistant", "content": "It starts on the first day of the next billing cycle."}]


def _instruction_row(turns=TURNS) -> dict:
    return {"messages": json.dumps(turns), "text": "", "prompt": "", "response": ""}


def test_every_kind_lists_its_filters_with_distinct_names_and_a_reject_method():
    settings = Settings()
    for task in TASKS.values():
        filters = task.cleaning_filters(settings)
        names = [f.name for f in filters]
        assert filters and all(isinstance(f, Filter) for f in filters)
        assert len(names) == len(set(names)) and all(names), names


def test_quality_filters_run_in_the_documented_order():
    assert [f.name for f in quality_filters(CleaningSettings())] == [
        "empty", "too_short", "max_chars", "language", "mean_word_length", "alpha_words", "symbol_ratio",
        "repeated_lines", "repeated_ngrams", "unknown_words"]


def test_conversation_filters_come_first_and_too_long_last():
    names = [f.name for f in task_named("instruction").cleaning_filters(Settings())]
    assert names[:5] == ["empty_turn", "response_length", "response_equals_prompt", "refusal", "truncated_response"]
    assert names[-1] == "conversation_too_long"
    assert "empty_turn" not in [f.name for f in task_named("classification").cleaning_filters(Settings())]


class _Named(Filter):
    """A filter for the tests: rejects texts containing `word`, flagging only when `flag` is set."""

    def __init__(self, name: str, word: str, flag: bool = False):
        self.name, self.word, self.flag = name, word, flag

    def reject(self, candidate):
        return (self.name, f"contains {self.word!r}") if self.word in candidate.text else None

    def flags_only(self, candidate):
        return self.flag


def test_the_first_rejecting_filter_names_the_reason_and_flags_are_dropped_with_it():
    filters = [_Named("soft", "parcel", flag=True), _Named("hard", "depot"), _Named("later", "noon")]
    assert run_filters(filters, Candidate({"text": GOOD}, [GOOD])) == (("hard", "contains 'depot'"), [])
    assert run_filters(filters[:1] + filters[2:], Candidate({"text": GOOD}, [GOOD])) == \
        (("later", "contains 'noon'"), [])
    assert run_filters(filters[:1], Candidate({"text": GOOD}, [GOOD])) == (None, ["soft"])
    assert run_filters(filters, Candidate({"text": "ok"}, ["ok"])) == (None, [])


def test_document_filters_flag_on_table_rows_but_reject_document_chunks():
    too_short = next(f for f in quality_filters(CleaningSettings()) if f.name == "too_short")
    row, chunk = Candidate({"text": "Refund"}, ["Refund"], table_row=True), Candidate({"text": "Refund"}, ["Refund"])
    assert too_short.reject(row)[0] == "too_short"
    assert too_short.flags_only(row) and not too_short.flags_only(chunk)
    everywhere = next(f for f in quality_filters(CleaningSettings(document_filters_on="all")) if f.name == "too_short")
    assert not everywhere.flags_only(row)


def test_repetition_judged_on_each_unit_and_rejecting_on_table_rows_for_conversation_turns():
    looping = "\n".join(["please reset my password now"] * 6)
    units = ["How do I reset my password?", looping]
    candidate = Candidate({"text": "\n\n".join(units)}, units, table_row=True)
    lines = next(f for f in quality_filters(CleaningSettings(), turns_alone=True) if f.name == "repeated_lines")
    assert lines.reject(candidate)[0] == "repeated_lines" and not lines.flags_only(candidate)
    as_rows = next(f for f in quality_filters(CleaningSettings()) if f.name == "repeated_lines")
    assert as_rows.flags_only(candidate)


def test_text_units_and_from_units_round_trip_for_each_kind():
    classification, instruction = task_named("classification"), task_named("instruction")
    assert classification.text_units({"text": GOOD}) == [GOOD]
    assert classification.from_units({"text": GOOD}, ["cleaned"]) == {"text": "cleaned"}
    row = _instruction_row()
    assert instruction.text_units(row) == [t["content"] for t in TURNS]
    rebuilt = instruction.from_units(row, ["Be brief.", "When?", "Next cycle."])
    assert json.loads(rebuilt["messages"]) == [{**t, "content": c} for t, c in
                                               zip(TURNS, ["Be brief.", "When?", "Next cycle."])]
    assert (rebuilt["prompt"], rebuilt["response"]) == ("When?", "Next cycle.")
    assert rebuilt["text"] == "system: Be brief.\n\nuser: When?\n\nassistant: Next cycle."


def test_an_empty_turn_before_the_answer_is_rejected_naming_the_turn_and_its_role():
    empty_turn = task_named("instruction").cleaning_filters(Settings())[0]
    fields = task_named("instruction").from_units(_instruction_row(), ["You answer.", "  ", "Next cycle."])
    assert empty_turn.reject(Candidate(fields, [])) == (
        "empty", "turn 2 (user) is empty after cleaning; fix the turn or remove the conversation")
    fine = task_named("instruction").from_units(_instruction_row(), ["You answer.", "When?", "Next cycle."])
    assert empty_turn.reject(Candidate(fine, [])) is None


@pytest.mark.parametrize("task_name", ["classification", "instruction"])
def test_the_stage_asks_the_kind_which_filters_run(monkeypatch, task_name):
    """A filter added to a kind's list rejects through clean_corpus with its own reason and detail."""
    task = task_named(task_name)
    listed = task.cleaning_filters
    monkeypatch.setattr(type(task), "cleaning_filters",
                        lambda self, settings: [_Named("mentions_depot", "depot"), *listed(settings)])
    text = GOOD if task_name == "classification" else "user: Where is it?\n\nassistant: " + GOOD
    record = {"record_id": "r1", "text": text, "source_uri": "raw/a.jsonl", "source_type": "jsonl",
              "locator": "line 1"}
    if task_name == "instruction":
        turns = [{"role": "user", "content": "Where is it?"}, {"role": "assistant", "content": GOOD}]
        record.update(messages=json.dumps(turns), prompt="Where is it?", response=GOOD)
    settings = Settings(task=task_name, privacy=PrivacySettings(detector="patterns"),
                        training={"instruction": {"base_model": "/nonexistent/model"}})
    result = clean_corpus(corpus_frame([record]), settings)
    assert result.kept.is_empty()
    assert result.rejected.select("reason", "detail").row(0) == ("mentions_depot", "contains 'depot'")
