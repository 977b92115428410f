"""Every cleaning filter behind one contract, as datatrove's filters: a `Filter` takes its parameters from
one settings object in its constructor and judges one cleaned record (`Candidate`), returning
`(reason, detail)` to reject it or None to keep it; the detail names the measure and the setting, never
the text. A failing filter rejects unless `flags_only` says it only flags (the reason joins the kept
record's `quality_flags`). The checks themselves live beside their kind (`quality_filters.py`,
`sft_filters.py`); a kind lists the filters its records go through, in order (`Task.cleaning_filters`),
and `run_filters` applies them: the first filter that rejects names the reason.

A new filter: one `Filter` subclass (here or in its own module) and its test, added to a kind's list.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from finetune_pipeline.cleaning import quality_filters as quality
from finetune_pipeline.cleaning import sft_filters as sft
from finetune_pipeline.filtering import Candidate, Filter, Reject  # noqa: F401 (the contract, re-exported)
from finetune_pipeline.settings import CleaningSettings, Settings


def run_filters(filters: list[Filter], candidate: Candidate) -> tuple[Reject, list[str]]:
    """The first reject (or None) and the quality flags of a kept record, from `filters` in order."""
    flags = []
    for record_filter in filters:
        reject = record_filter.reject(candidate)
        if reject and record_filter.flags_only(candidate):
            flags.append(reject[0])
        elif reject:
            return reject, []
    return None, flags


# ---- the quality filters (Gopher, C4): quality_filters.py has the checks


class TextFilter(Filter):
    """A check of `quality_filters` on the record's whole text. `document_filter`: made for web documents,
    so on a row of a table it flags instead of rejecting, unless `cleaning.document_filters_on: all`."""

    def __init__(self, name: str, check: Callable[[str, CleaningSettings], Reject], settings: CleaningSettings,
                 document_filter: bool = False):
        self.name, self.check, self.settings, self.document_filter = name, check, settings, document_filter

    def reject(self, candidate: Candidate) -> Reject:
        return self.check(candidate.text, self.settings)

    def flags_only(self, candidate: Candidate) -> bool:
        return (self.document_filter and candidate.table_row
                and self.settings.document_filters_on == "documents")


class UnitsFilter(TextFilter):
    """A check judged on each text unit alone (a conversation's turns: an answer naturally repeats words
    and lines of the question); the first unit that fails names the reason."""

    def reject(self, candidate: Candidate) -> Reject:
        return next((r for unit in candidate.units if (r := self.check(unit, self.settings))), None)


class LanguageFilter(Filter):
    """Texts confidently identified as a language outside `cleaning.languages`; identified in one batch."""

    name = "language"

    def __init__(self, settings: CleaningSettings):
        self.settings = settings

    def prepare(self, candidates: list[Candidate]) -> None:
        judged = [c for c in candidates if quality.needs_language(c.text, self.settings)]
        for candidate, language in zip(judged, quality.identify_languages([c.text for c in judged])):
            candidate.language = language

    def reject(self, candidate: Candidate) -> Reject:
        return quality.language_filter(candidate.text, self.settings, candidate.language)


class UnknownWordsFilter(TextFilter):
    """Too many words outside the dictionary: flags, or rejects with `cleaning.unknown_words_action: drop`."""

    def __init__(self, settings: CleaningSettings):
        super().__init__("unknown_words", quality.unknown_words_filter, settings)

    def flags_only(self, candidate: Candidate) -> bool:
        return self.settings.unknown_words_action != "drop"


def quality_filters(cfg: CleaningSettings, turns_alone: bool = False) -> list[Filter]:
    """The quality filters in the order they run. `turns_alone`: the units are a conversation's turns, whose
    repetition is a degenerate answer, not a short labeled row: those filters then reject on table rows too."""
    return [
        TextFilter("empty", quality.empty_filter, cfg),
        TextFilter("too_short", quality.too_short_filter, cfg, document_filter=True),
        TextFilter("max_chars", quality.max_chars_filter, cfg),
        LanguageFilter(cfg),
        TextFilter("mean_word_length", quality.mean_word_length_filter, cfg, document_filter=True),
        TextFilter("alpha_words", quality.alpha_words_filter, cfg, document_filter=True),
        TextFilter("symbol_ratio", quality.symbol_ratio_filter, cfg, document_filter=True),
        UnitsFilter("repeated_lines", quality.repeated_lines_filter, cfg, document_filter=not turns_alone),
        UnitsFilter("repeated_ngrams", quality.repeated_ngrams_filter, cfg, document_filter=not turns_alone),
        UnknownWordsFilter(cfg),
    ]


def quality_reject(text: str, settings: CleaningSettings, turns: list[str] | None = None,
                   language: tuple[str, float] | None = None, table_row: bool = False) -> tuple[Reject, list[str]]:
    """The quality filters on one text: the first reject (or None) and the flags of a kept text.
    `turns`: a conversation's turn contents (the repetition filters then judge each turn alone);
    `language`: the text's `identify_language` when already known; `table_row`: a row of a table."""
    filters = quality_filters(settings, turns_alone=turns is not None)
    candidate = Candidate({"text": text}, [text] if turns is None else turns, table_row, language)
    return run_filters(filters, candidate)


# ---- conversations (instruction data): sft_filters.py has the checks


class EmptyTurnFilter(Filter):
    """A turn before the final answer left empty by cleaning (an empty final answer is `empty_response`)."""

    name = "empty_turn"

    def reject(self, candidate: Candidate) -> Reject:
        turns = json.loads(candidate.fields["messages"])
        empty = next((i for i, turn in enumerate(turns[:-1], start=1) if not turn["content"].strip()), None)
        if empty:
            return "empty", (f"turn {empty} ({turns[empty - 1]['role']}) is empty after cleaning; fix the turn or "
                             f"remove the conversation")
        return None


class ResponseFilter(Filter):
    """A check of `sft_filters` on the final answer (and the prompt before it)."""

    def __init__(self, name: str, check: Callable[[str, str, CleaningSettings], Reject], settings: CleaningSettings):
        self.name, self.check, self.settings = name, check, settings

    def reject(self, candidate: Candidate) -> Reject:
        return self.check(candidate.fields["prompt"], candidate.fields["response"], self.settings)


def sft_filters(cfg: CleaningSettings) -> list[Filter]:
    """The SFT filters on the final answer, in the order they run."""
    return [ResponseFilter("response_length", lambda _, response, s: sft.response_length_filter(response, s), cfg),
            ResponseFilter("response_equals_prompt", sft.response_equals_prompt_filter, cfg),
            ResponseFilter("refusal", lambda _, response, s: sft.refusal_filter(response, s), cfg),
            ResponseFilter("truncated_response", lambda _, response, s: sft.truncated_response_filter(response, s),
                           cfg)]


class TooLongFilter(Filter):
    """A conversation longer than training takes, in the base model's tokens through its chat template:
    flags, or rejects with `cleaning.too_long_action: drop`. Skipped (with a warning) when no tokenizer loads."""

    name = sft.TOO_LONG

    def __init__(self, settings: Settings):
        self.training, self.action = settings.training, settings.cleaning.too_long_action

    def reject(self, candidate: Candidate) -> Reject:
        tokenizer, _ = sft.training_tokenizer(self.training)
        if tokenizer is None:
            return None
        return sft.too_long_filter(json.loads(candidate.fields["messages"]), tokenizer,
                                   self.training.instruction.max_length)

    def flags_only(self, candidate: Candidate) -> bool:
        return self.action != "drop"

    def warning(self) -> str | None:
        return sft.training_tokenizer(self.training)[1]
