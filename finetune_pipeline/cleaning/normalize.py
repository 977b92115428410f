"""Noise removal and normalisation of text: encoding repair, control characters, unicode form, whitespace.

Each step is switchable in `finetune.yaml` (section `cleaning`); `text_raw` keeps the original so every
change can be audited.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

from finetune_pipeline.settings import CleaningSettings

# C0/C1 control characters except tab and newline, plus zero-width and BOM characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")


def normalize_text(text: str, settings: CleaningSettings) -> str:
    """Apply the configured cleaning steps to one text."""
    if settings.fix_encoding:
        text = ftfy.fix_text(text, normalization="NFC")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _HTML_TAG.sub(" ", text)  # markup remnants that survived parsing (e.g. tags inside CSV cells)
    text = _HYPHEN_BREAK.sub(r"\1\2", text)  # "invoi-\nce" from PDF line breaks
    if settings.unicode_form != "none":
        text = unicodedata.normalize(settings.unicode_form, text)
    if settings.collapse_whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANK_LINES.sub("\n\n", text)
    if settings.lowercase:
        text = text.lower()
    return text.strip()
