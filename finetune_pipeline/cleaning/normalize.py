"""Normalisation of one text: noise removal (see `noise.py`), then unicode form, quotes and dashes,
whitespace, punctuation spacing and case.

Each step is switchable in `finetune.yaml` (section `cleaning`); the original stays in raw_corpus
(`privacy.keep_raw_text`), so every change can be audited against it.
"""

from __future__ import annotations

import re
import unicodedata

from finetune_pipeline.cleaning import noise
from finetune_pipeline.settings import CleaningSettings

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u00ab": '"', "\u00bb": '"',
                         "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
                         "\u2015": "-", "\u2212": "-", "\u2043": "-", "\ufe58": "-", "\ufe63": "-", "\uff0d": "-"})
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_SPACE_BEFORE_PUNCT = re.compile(r"(?<=\w)[ \t]+(?:([,;!?])(?=\s|$|[A-Za-z])|([:.])(?!\.)(?=\s|$|[A-Z]))")
_NO_SPACE_AFTER_COMMA = re.compile(r"([,;])(?=[A-Za-z])")
_NO_SPACE_AFTER_STOP = re.compile(r"(?<=[a-z]{2})([.!?])(?=[A-Z][a-z])")


def normalize_quotes_dashes(text: str) -> str:
    """Typographic quotes to ASCII quotes; hyphen, dash and minus variants to '-'."""
    return text.translate(_QUOTES)


def collapse_whitespace(text: str) -> str:
    """Runs of spaces to one, lines stripped, at most one blank line in a row."""
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text)


def normalize_punctuation_spacing(text: str) -> str:
    """"word , next" -> "word, next"; "one,two" -> "one, two"; "fixed.Thanks" -> "fixed. Thanks".
    Numbers ("1,000", "3.5"), ellipses and lower-case domains ("example.com") are left alone."""
    text = _SPACE_BEFORE_PUNCT.sub(lambda m: m.group(1) or m.group(2), text)
    text = _NO_SPACE_AFTER_COMMA.sub(r"\1 ", text)
    return _NO_SPACE_AFTER_STOP.sub(r"\1 ", text)


def normalize_text(text: str, settings: CleaningSettings) -> str:
    """Apply the configured noise removal and normalisation steps to one text."""
    if settings.fix_encoding:
        text = noise.fix_encoding(text)
    text = noise.remove_control_characters(text)
    if settings.strip_markup:
        text = noise.strip_markup(text)
    if settings.remove_boilerplate:
        text = noise.remove_boilerplate_lines(text)
    if settings.join_hyphenation:
        text = noise.join_hyphenation(text)
    if settings.unicode_form != "none":
        text = unicodedata.normalize(settings.unicode_form, text)
    if settings.normalize_quotes_dashes:
        text = normalize_quotes_dashes(text)
    if settings.collapse_whitespace:
        text = collapse_whitespace(text)
    if settings.normalize_punctuation_spacing:
        text = normalize_punctuation_spacing(text)
    if settings.lowercase:
        text = text.lower()
    return text.strip()
