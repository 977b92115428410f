"""Filters for instruction (SFT) examples, judged on the final answer after cleaning: an empty or too short
answer, an answer that repeats the prompt, a boilerplate refusal, and an answer cut off mid-sentence or
inside a code block; and a whole conversation longer than training takes (in tokens of the base model's
tokenizer, through the chat template training uses). Each returns `(reason, detail)` to reject or None to
keep; the detail names the measure and the setting, never the text. Thresholds and patterns live in
`CleaningSettings` (and `TrainingSettings` for the training length). `filters.py` wraps each as a `Filter`
and lists them in the order they run (`filters.sft_filters`, `filters.TooLongFilter`).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from finetune_pipeline.cleaning.quality_filters import Reject
from finetune_pipeline.settings import CleaningSettings, TrainingSettings

TOO_LONG = "conversation_too_long"  # the reject reason (too_long_action: drop) or the quality flag (flag)

_FENCE = re.compile(r"^\s*```", re.MULTILINE)
# Last lines that may end without a full stop: list items, headings, table rows, quotes, code.
_NON_PROSE_LINE = re.compile(r"^\s*(?:[-*+•>#|]|\d+[.)]\s|```|\s{4})")
_LEADING = " \t\n\"'*_>`"


def response_length_filter(response: str, settings: CleaningSettings) -> Reject:
    if not response.strip():
        return "empty_response", "the final assistant turn is empty after cleaning"
    if len(response.strip()) < settings.min_response_chars:
        return "response_too_short", (f"answer of {len(response.strip())} characters < "
                                      f"cleaning.min_response_chars={settings.min_response_chars}")
    return None


def _comparable(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .!?")


def response_equals_prompt_filter(prompt: str, response: str, settings: CleaningSettings) -> Reject:
    if prompt and _comparable(prompt) == _comparable(response):
        return "response_equals_prompt", "the answer repeats the prompt; write a real answer or remove the example"
    return None


@lru_cache(maxsize=8)
def _refusal(patterns: tuple[str, ...]) -> re.Pattern | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


def refusal_filter(response: str, settings: CleaningSettings) -> Reject:
    pattern = _refusal(tuple(settings.refusal_patterns))
    if pattern and pattern.match(response.lstrip(_LEADING)):
        return "refusal", ("the answer starts with a boilerplate refusal (cleaning.refusal_patterns); "
                           "replace it with an answer or empty the list to keep refusals")
    return None


def truncated_response_filter(response: str, settings: CleaningSettings) -> Reject:
    fences = len(_FENCE.findall(response))
    if fences % 2:
        return "truncated_response", f"{fences} ``` fences (odd): a code block is never closed"
    text = response.rstrip()
    last_line = text.rsplit("\n", 1)[-1]
    if (len(text) >= settings.truncation_min_chars and (text[-1].isalnum() or text[-1] == ",")
            and not _NON_PROSE_LINE.match(last_line)):
        return "truncated_response", (f"a {len(text)}-character answer ends mid-sentence (no terminal punctuation; "
                                      f"cleaning.truncation_min_chars={settings.truncation_min_chars})")
    return None


def training_tokenizer(training: TrainingSettings) -> tuple[object | None, str | None]:
    """(the chat tokenizer training will use, None) or (None, a warning saying why it cannot be loaded)."""
    path = training.instruction.base_model
    if not path:
        return None, "training.instruction.base_model is not set: conversations were not measured in tokens"
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = None
    return _load_tokenizer(path, stamp)


@lru_cache(maxsize=4)
def _load_tokenizer(path: str, stamp: int | None) -> tuple[object | None, str | None]:
    # once per folder and version: cleaning calls this per document group
    from finetune_pipeline.chat import load_chat_tokenizer

    try:
        return load_chat_tokenizer(path), None
    except Exception as exc:  # noqa: BLE001 (any failure to load means: skip the filter and say so)
        return None, (f"training.instruction.base_model {path}: its tokenizer cannot be loaded "
                      f"({type(exc).__name__}); the too-long filter was skipped. Build or copy the model there "
                      f"(`finetune-pipeline build-base-model` when training.build_base_model.enabled) and re-run")


def too_long_filter(turns: list[dict], tokenizer, max_length: int) -> Reject:
    """A conversation whose chat-template rendering is longer than `max_length` tokens (training would cut it)."""
    from finetune_pipeline.chat import conversation_ids

    tokens = len(conversation_ids(tokenizer, turns))
    if tokens > max_length:
        return TOO_LONG, (f"{tokens} tokens > training.instruction.max_length={max_length} (the base model's "
                          "tokenizer and chat template); shorten the conversation or raise the length")
    return None
