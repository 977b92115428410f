"""Quality filters in the spirit of the Gopher (Rae et al. 2021, appendix A) and C4 heuristics.

Each check takes a cleaned text and its settings and returns `(reason, detail)` to reject it, or None to
keep it; the detail names the measured value and the setting, never the text. Thresholds live in
`CleaningSettings` (finetune.yaml `cleaning`). Typed PII placeholders (`<EMAIL>`) are not counted as words.
`filters.py` wraps each as a `Filter` and lists them in the order they run (`filters.quality_filters`); the
ones made for web documents reject chunks of documents and, on a row of a table, flag, unless
`cleaning.document_filters_on: all`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache

from finetune_pipeline.settings import CleaningSettings

Reject = tuple[str, str] | None

_PLACEHOLDER = re.compile(r"<[A-Z_]+>")
_EDGE_PUNCT = "\"'()[]{}<>.,;:!?-*_/\\|`~"
_DICTIONARY_WORD = re.compile(r"^[a-z]+(?:'[a-z]+)?$")
MIN_WORDS_FOR_DICTIONARY = 10


def words(text: str) -> list[str]:
    """Whitespace tokens with surrounding punctuation stripped, placeholders left out."""
    return list(_words(text))


@lru_cache(maxsize=16)
def _words(text: str) -> tuple[str, ...]:
    # every filter splits the same text: split it once (a str caches its hash, so the lookup is cheap)
    tokens = (t.strip(_EDGE_PUNCT) for t in _PLACEHOLDER.sub(" ", text).split())
    return tuple(t for t in tokens if t)


def empty_filter(text: str, settings: CleaningSettings) -> Reject:
    """Reject a text with nothing but whitespace left."""
    if not text.strip():
        return "empty", "no text left after cleaning"
    return None


def too_short_filter(text: str, settings: CleaningSettings) -> Reject:
    """Reject a text shorter than `min_chars` characters or `min_words` words (a document filter)."""
    if len(text) < settings.min_chars:
        return "too_short", f"{len(text)} characters < cleaning.min_chars={settings.min_chars}"
    count = len(text.split())
    if count < settings.min_words:
        return "too_short", f"{count} words < cleaning.min_words={settings.min_words}"
    return None


def max_chars_filter(text: str, settings: CleaningSettings) -> Reject:
    """Reject a text longer than `max_chars` characters."""
    if len(text) > settings.max_chars:
        return "too_long", f"{len(text)} characters > cleaning.max_chars={settings.max_chars}"
    return None


def length_filter(text: str, settings: CleaningSettings) -> Reject:
    """Reject empty, too short (characters or words) and too long texts."""
    return empty_filter(text, settings) or too_short_filter(text, settings) or max_chars_filter(text, settings)


def mean_word_length_filter(text: str, settings: CleaningSettings) -> Reject:
    """Gopher: the mean word length must lie within [min, max] (characters)."""
    found = _words(text)
    if not found:
        return None
    mean = sum(len(w) for w in found) / len(found)
    if not settings.min_mean_word_length <= mean <= settings.max_mean_word_length:
        return "mean_word_length", (f"mean word length {mean:.1f} outside cleaning.min_mean_word_length.."
                                    f"max_mean_word_length={settings.min_mean_word_length}..{settings.max_mean_word_length}")
    return None


def symbol_count(text: str) -> int:
    """Hashtags (# not before a digit: '#40321' is an order number), ellipses, bullets and other symbols
    (Unicode category So: emoji, dingbats, box drawing)."""
    text = _PLACEHOLDER.sub(" ", text)
    hashes = len(re.findall(r"#(?!\d)", text))
    ellipses = text.count("...") + text.count("\u2026")
    # no ASCII character is a symbol of category So or one of the bullets
    others = 0 if text.isascii() else sum(1 for c in text if unicodedata.category(c) == "So"
                                          or c in "\u2022\u25aa\u25cf\u00b7")
    return hashes + ellipses + others


def symbol_ratio_filter(text: str, settings: CleaningSettings) -> Reject:
    """Gopher: symbols per word at most `max_symbol_word_ratio`."""
    found = _words(text)
    ratio = symbol_count(text) / max(1, len(found))
    if ratio > settings.max_symbol_word_ratio:
        return "symbol_to_word_ratio", (f"{ratio:.2f} symbols per word > cleaning.max_symbol_word_ratio="
                                        f"{settings.max_symbol_word_ratio}")
    return None


def alpha_words_filter(text: str, settings: CleaningSettings) -> Reject:
    """Gopher: enough words must contain a letter (tables of numbers, code dumps and hashes fail)."""
    found = _words(text)
    if not found:
        return None
    share = sum(any(c.isalpha() for c in w) for w in found) / len(found)
    if share < settings.min_alpha_word_share:
        return "alpha_words", f"{share:.2f} of words contain a letter < cleaning.min_alpha_word_share={settings.min_alpha_word_share}"
    return None


def repeated_lines_filter(text: str, settings: CleaningSettings) -> Reject:
    """Gopher: the share of lines that duplicate an earlier line (texts of 3+ lines)."""
    lines = [" ".join(line.split()) for line in text.split("\n") if line.strip()]
    if len(lines) < 3:
        return None
    share = (len(lines) - len(set(lines))) / len(lines)
    if share > settings.max_duplicate_line_share:
        return "repeated_lines", (f"{share:.2f} of lines are repeats > cleaning.max_duplicate_line_share="
                                  f"{settings.max_duplicate_line_share}")
    return None


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(tokens[i:] for i in range(n))))


def top_ngram_share(tokens: list[str], n: int, chars: int | None = None, min_count: int = 2) -> float:
    """Characters of the most frequent n-gram times its count, over all word characters (0 if it occurs fewer
    than `min_count` times). `chars`: the word characters, when the caller has counted them."""
    grams = Counter(_ngrams(tokens, n))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    if count < min_count:
        return 0.0
    return count * sum(len(w) for w in gram) / max(1, chars if chars is not None else sum(map(len, tokens)))


def duplicate_ngram_share(tokens: list[str], n: int, chars: int | None = None, min_count: int = 2) -> float:
    """Characters of words covered by any n-gram that occurs at least `min_count` times, over all word
    characters. `chars`: the word characters, when the caller has counted them."""
    grams = _ngrams(tokens, n)
    counts = Counter(grams)
    if min_count <= 2 and len(counts) == len(grams):
        return 0.0  # no n-gram occurs twice
    covered = [False] * len(tokens)
    for i, gram in enumerate(grams):
        if counts[gram] >= min_count:
            covered[i:i + n] = [True] * n
    return sum(len(w) for w, c in zip(tokens, covered) if c) / max(
        1, chars if chars is not None else sum(map(len, tokens)))


def repeated_ngrams_filter(text: str, settings: CleaningSettings) -> Reject:
    """Gopher: the most frequent 2-4-gram and the duplicated 5-10-grams may cover only so much of the text.
    The duplicated n-grams are measured from the shortest n up, and stop at the first n none of whose n-grams
    repeats: a repeated longer n-gram would contain a repeated one of that length, so none repeats either.
    In a text under `repetition_short_words` words an n-gram counts as repeated only from
    `repetition_short_min_count` occurrences: there one phrase said twice (a manual page's name line
    repeated in its first sentence) already covers Gopher's share, and spam repeats far more often."""
    tokens = [w.lower() for w in _words(text)]
    if len(tokens) < settings.repetition_min_words:
        return None
    chars = sum(map(len, tokens))
    min_count = settings.repetition_short_min_count if len(tokens) < settings.repetition_short_words else 2
    for n, limit in sorted(settings.max_top_ngram_share.items()):
        share = top_ngram_share(tokens, n, chars, min_count)
        if share > limit:
            return "repeated_ngrams", f"top {n}-gram covers {share:.2f} > cleaning.max_top_ngram_share[{n}]={limit}"
    for n, limit in sorted(settings.max_duplicate_ngram_share.items()):
        share = duplicate_ngram_share(tokens, n, chars, min_count)
        if share > limit:
            return "repeated_ngrams", (f"duplicated {n}-grams cover {share:.2f} > "
                                       f"cleaning.max_duplicate_ngram_share[{n}]={limit}")
        if share == 0:
            break
    return None


@lru_cache(maxsize=1)
def english_dictionary() -> frozenset[str]:
    """pyspellchecker's English word list (shipped in the package, offline), lower case."""
    from spellchecker import SpellChecker

    return frozenset(SpellChecker(language="en").word_frequency.dictionary)


def unknown_word_share(text: str) -> tuple[float, int]:
    """Share of dictionary-checkable words (lower-case, letters only) that are not in the dictionary,
    and how many words were checked. Capitalised words (names, brands), numbers and codes are skipped."""
    checked = [w for w in _words(text) if _DICTIONARY_WORD.match(w)]
    if not checked:
        return 0.0, 0
    dictionary = english_dictionary()
    unknown = sum(1 for w in checked if w not in dictionary and w.replace("'", "") not in dictionary)
    return unknown / len(checked), len(checked)


def unknown_words_filter(text: str, settings: CleaningSettings) -> Reject:
    """The seed's "typos": too many words outside the dictionary (flagged or dropped per settings)."""
    share, checked = unknown_word_share(text)
    if checked >= MIN_WORDS_FOR_DICTIONARY and share > settings.max_unknown_word_share:
        return "unknown_words", (f"{share:.2f} of {checked} words not in the dictionary > "
                                 f"cleaning.max_unknown_word_share={settings.max_unknown_word_share}")
    return None


def identify_languages(texts: list[str]) -> list[tuple[str, float]]:
    """ISO 639-1 code and probability of each text: langid.py's model and decisions, batched
    (`language_id.py`); typed placeholders are left out."""
    from finetune_pipeline.cleaning.language_id import language_identifier

    return language_identifier().classify_batch([_PLACEHOLDER.sub(" ", text) for text in texts])


def identify_language(text: str) -> tuple[str, float]:
    """`identify_languages` of one text."""
    return identify_languages([text])[0]


def language_filter(text: str, settings: CleaningSettings, language: tuple[str, float] | None = None) -> Reject:
    """Reject texts confidently identified as a language outside `cleaning.languages`; texts shorter than
    `language_min_chars` are not judged (identification is unreliable on them). `language`: the text's
    `identify_language`, when already known (batched)."""
    if not settings.languages or len(text) < settings.language_min_chars:
        return None
    lang, prob = language or identify_language(text)
    if lang not in settings.languages and prob >= settings.language_min_confidence:
        return "language", f"identified as '{lang}' (p={prob:.2f}), not in cleaning.languages={settings.languages}"
    return None


def needs_language(text: str, settings: CleaningSettings) -> bool:
    """Whether `language_filter` identifies this text's language (so a batch can identify them together)."""
    return bool(settings.languages) and len(text) >= settings.language_min_chars


# Records that are rows of a table: tabular files, SQLite and SQL queries, Hugging Face datasets
# (sources/tabular.py, sources/sql.py, sources/readers.py). Documents (txt md html pdf docx eml) and records
# of any other kind get every filter.
TABLE_SOURCE_TYPES = frozenset({"csv", "jsonl", "json", "parquet", "sqlite", "sql", "hf_dataset"})


def is_table_row(source_type: str | None) -> bool:
    """Whether a record of this `source_type` is a row of a table (not a chunk of a document)."""
    return source_type in TABLE_SOURCE_TYPES


def short_rows_kept(settings: CleaningSettings) -> frozenset[str]:
    """The source types whose texts too_short only flags (so a kept text may be shorter than `min_chars`)."""
    return TABLE_SOURCE_TYPES if settings.document_filters_on == "documents" else frozenset()
