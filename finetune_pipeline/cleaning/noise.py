"""Noise removal: broken encodings, control characters, markup remnants, boilerplate lines, headers and
footers repeated across a document's pages, and words hyphenated across line breaks.

Each step is switchable in `finetune.yaml` (section `cleaning`); see `CleaningSettings` for the defaults.
"""

from __future__ import annotations

import html
import re
from collections import Counter

import ftfy

# C0/C1 control characters except tab and newline (vertical tab and form feed become newlines first),
# plus zero-width characters and the BOM.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_PAGE_BREAKS = re.compile(r"[\x0b\x0c\u2028\u2029]")
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>|<!--.*?-->", re.S)
_HTML_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});")
# Markdown: images and links keep their text, headings/quotes/emphasis/code lose their syntax.
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_MD_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$", re.M)
_MD_QUOTE = re.compile(r"^[ \t]{0,3}>[ \t]?", re.M)
_MD_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1|(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_MD_CODE = re.compile(r"`([^`\n]+)`")
_MD_RULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$", re.M)
_HYPHEN_BREAK = re.compile(r"([A-Za-z])-[ \t]*\n[ \t]*([a-z])")

# Lines that are boilerplate wherever they occur (mail clients, web page chrome, page numbers). Matched
# against a whole line, case-insensitively; specific on purpose, so that a ticket *about* cookies or a
# newsletter keeps its sentences.
BOILERPLATE_LINES = [
    r"sent from my [\w\s-]{2,30}",
    r"get outlook for \w+",
    r".{0,80}\ball rights reserved\b.{0,40}",
    r"(?:©|\(c\)\s*\d{4}|copyright\s*(?:©|\(c\))?\s*\d{4}).{0,60}",
    r".{0,60}\b(?:click here to unsubscribe|unsubscribe here|manage your (?:email )?preferences)\b.{0,60}",
    r".{0,60}\b(?:we use cookies|accept (?:all )?cookies|cookie (?:policy|settings|preferences))\b.{0,60}",
    r".{0,40}\b(?:please enable javascript|javascript is (?:required|disabled))\b.{0,40}",
    r"(?:page\s*)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?",  # page numbers: "3", "Page 3 of 7", "3/7"
    r"-\s*\d{1,4}\s*-",
    r".{0,40}\bthis (?:e-?mail|message)(?: and any attachments)? (?:is|are|may be|contains?) .{0,30}confidential.*",
]
_BOILERPLATE = re.compile(r"^\s*(?:" + "|".join(BOILERPLATE_LINES) + r")\s*$", re.I)
# Where one file is one paged document, a line repeated on several pages is a header or footer.
PAGED_SOURCE_TYPES = {"pdf", "docx"}
_DIGITS = re.compile(r"\d+")
_MAX_HEADER_CHARS = 120


# Printable ASCII, tabs and newlines: nothing that ftfy's fixes (mojibake, control characters, terminal
# escapes, line breaks) would change, so ftfy is skipped (a test compares the two).
_PLAIN_ASCII = re.compile(r"[\t\n\x20-\x7e]*")


def fix_encoding(text: str) -> str:
    """Repair mojibake ("donâ€™t" -> "don’t") with ftfy; quotes, width and unicode form are left to
    normalisation so that each stays switchable."""
    if _PLAIN_ASCII.fullmatch(text):
        return text
    return ftfy.fix_text(text, uncurl_quotes=False, normalization=None, fix_character_width=False,
                         fix_latin_ligatures=False, unescape_html=False)


def remove_control_characters(text: str) -> str:
    """Unify line ends, turn page breaks into newlines, drop other control and zero-width characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", _PAGE_BREAKS.sub("\n", text))


def strip_markup(text: str) -> str:
    """Remove HTML/XML tags and entities and Markdown syntax that survived parsing (the words stay)."""
    text = _HTML_TAG.sub(" ", text)
    text = _HTML_ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_HEADING.sub(r"\1", text)
    text = _MD_QUOTE.sub("", text)
    text = _MD_RULE.sub("", text)
    text = _MD_CODE.sub(r"\1", text)
    return _MD_EMPHASIS.sub(lambda m: m.group(2) or m.group(3), text)


def remove_boilerplate_lines(text: str) -> str:
    """Drop whole lines that are boilerplate (`BOILERPLATE_LINES`), never the text's only line."""
    lines = text.split("\n")
    kept = [line for line in lines if not _BOILERPLATE.match(line)]
    return "\n".join(kept) if any(line.strip() for line in kept) else text


def join_hyphenation(text: str) -> str:
    """Join a word split by a hyphen at a line break ("invoi-\\nce" -> "invoice")."""
    return _HYPHEN_BREAK.sub(r"\1\2", text)


def _line_key(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()).lower())


def repeated_lines(texts: list[str], min_repeats: int) -> set[str]:
    """Keys of short lines seen at least `min_repeats` times over one document's texts (headers/footers;
    digits are ignored so "Page 2 of 9" matches "Page 3 of 9")."""
    counts = Counter(_line_key(line) for text in texts for line in text.split("\n")
                     if line.strip() and len(line) <= _MAX_HEADER_CHARS)
    return {key for key, n in counts.items() if n >= min_repeats}


def remove_lines(text: str, keys: set[str]) -> str:
    """Drop the lines whose key is in `keys`, never the text's only non-empty line."""
    if not keys:
        return text
    kept = [line for line in text.split("\n") if _line_key(line) not in keys or not line.strip()]
    return "\n".join(kept) if any(line.strip() for line in kept) else text
