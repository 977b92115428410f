"""Personal data in where a record came from, and what cleaning changed, without the values.

A file name (`raw/john_smith_cv.pdf`) or a locator (`id=maria.lopez@example.com`) goes through the same
detector and the same per-type policy as the text (`privacy.detect_pii`, `privacy.apply_policy`); only the
matched span is replaced, so the source stays recognisable (`raw/<PERSON>_cv.pdf`). File names join words
with `_`, `-` and `.`, so a value with words joined that way is also scanned with those read as spaces; a
name found only that way counts when it covers such a separator (a joined name), so an ordinary title in a
path ("Debian Reference.pdf") is not made a name by the changed context, and digits joined by `_` are not
read as a phone number. The scan is repeated on the redacted value
until nothing new is found (at most `MAX_PASSES`), so what leaves cleaning passes the export check, which
runs the plain detector on these fields.

`redaction_spans` says which spans of which kind a redaction changed, as positions in the redacted text:
what audit keeps in place of the original text (`redactions`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from finetune_pipeline.cleaning.privacy import (PLACEHOLDER, PiiSpan, apply_policy, detect_pii, first_names,
                                                pii_action, resolve_overlaps)
from finetune_pipeline.settings import PrivacySettings

MAX_PASSES = 3
PROVENANCE_FIELDS = ("source_uri", "locator")
_SEPARATOR = re.compile(r"[_.-]")
_JOINED_WORDS = re.compile(r"[^\W\d_][_.-][^\W\d_]")
_EXTENSION = re.compile(r"\.\w{1,5}$")
# locators the collectors write ("row 12", "page 3; elements 4-9", "line 7"): nothing personal in them
_NO_PERSONAL_DATA = re.compile(r"(?:(?:rows?|lines?|pages?|elements?|chunks?|turns?)\b|[\d\s;,:#-])*", re.I)


@dataclass(frozen=True)
class RedactedValue:
    value: str  # the value with each redacted span replaced by its placeholder
    counts: Counter  # spans found, by kind (never values)
    drop_because: str | None  # a kind whose policy is drop, when one was found


def redaction_spans(original: str, redacted: str) -> list[dict]:
    """`{kind, start, end}` of each placeholder in `redacted` (character offsets) that `original` did not
    already hold: which spans of which kind a redaction changed, never what they held. (A placeholder
    written literally in the original counts as not redacted, the first ones of its kind.)"""
    present = Counter(m.group(0) for m in PLACEHOLDER.finditer(original))
    spans = []
    for match in PLACEHOLDER.finditer(redacted):
        if present[match.group(0)]:
            present[match.group(0)] -= 1
            continue
        spans.append({"kind": match.group(0)[1:-1].lower(), "start": match.start(), "end": match.end()})
    return spans


def _joined(value: str) -> bool:
    """Whether words are joined by `_`, `-` or `.` in the value (its extension aside): "john_smith_cv.pdf"."""
    return bool(_JOINED_WORDS.search(_EXTENSION.sub("", value)))


def _joined_name(span: str) -> bool:
    """A name written as one token of a file name: two or three words joined by a separator, the first a
    known first name of 4+ letters ("maria_lopez", "John-Smith"); "gcloud_alpha_metastore", "pam_env" or
    "trust-configs" are not. It must also start a path segment (`_spans`): 0 of 19,303 real Debian manual and
    documentation file names changed (scripts/bench_provenance.py)."""
    words = _SEPARATOR.split(span)
    return 2 <= len(words) <= 3 and all(w.isalpha() for w in words) and len(words[0]) >= 4 \
        and words[0].lower() in first_names()  # "pam_env", "deb-origin": three-letter names read as words


def _titled(text: str) -> str:
    """Each word capitalised, same length (file names are often lower case: "maria_lopez_cv")."""
    titled = re.sub(r"[^\W\d_]+", lambda m: m.group(0)[0].upper() + m.group(0)[1:], text)
    return titled if len(titled) == len(text) else text


def _spans(values: list[str], policy: PrivacySettings) -> list[list[PiiSpan]]:
    """Spans of each value, found in one batched detector call on the value as it is, on a copy with `_`
    read as a space (for addresses: "from_jane@example.com_2.txt") and on a copy with `_`, `-`, `.` read
    as spaces and words capitalised (for names joined by them: only a name across a separator counts, so
    joined digits are not read as a phone number); nothing inside a placeholder."""
    spaced = [i for i, value in enumerate(values) if "_" in value and "@" in value]
    joined = [i for i, value in enumerate(values) if _joined(value)]
    found = iter(detect_pii(values + [values[i].replace("_", " ") for i in spaced]
                            + [_titled(_SEPARATOR.sub(" ", values[i])) for i in joined], policy))
    extra: dict[int, list[PiiSpan]] = {i: [] for i in range(len(values))}
    plain = [next(found) for _ in values]
    for i in spaced:
        extra[i] += [s for s in next(found) if s.kind == "email"]
    for i in joined:
        extension = _EXTENSION.search(values[i])
        end = extension.start() if extension else len(values[i])  # "Maria_Lopez.docx": the name, not "Docx"
        extra[i] += [PiiSpan(s.start, min(s.end, end), s.kind) for s in next(found)
                     if s.kind == "person" and s.start < end and (s.start == 0 or values[i][s.start - 1] == "/")
                     and _joined_name(values[i][s.start:min(s.end, end)])]
    results = []
    for i, value in enumerate(values):
        placeholders = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(value)]
        results.append(resolve_overlaps([s for s in plain[i] + extra[i]
                                         if all(s.end <= a or s.start >= b for a, b in placeholders)]))
    return results


def _replaced(text: str, spans: list[PiiSpan]) -> str:
    """Every span replaced by its placeholder, whatever its kind's action."""
    for span in sorted(spans, key=lambda s: s.start, reverse=True):
        text = text[:span.start] + f"<{span.kind.upper()}>" + text[span.end:]
    return text


_CACHE: dict[tuple[str, str], RedactedValue] = {}  # (policy, value): a path repeats over a file's records
_CACHE_MAX = 100_000


def redact_provenance(values: list[str | None], policy: PrivacySettings) -> dict[str | None, RedactedValue]:
    """Each distinct source path or locator with its personal data redacted by `policy`, scanned again
    until nothing new is found (at most MAX_PASSES), in batched detector calls."""
    key = policy.model_dump_json()
    out: dict[str | None, RedactedValue] = {}
    todo = []
    for value in dict.fromkeys(values):
        if not value or _NO_PERSONAL_DATA.fullmatch(value):
            out[value] = RedactedValue(value=value, counts=Counter(), drop_because=None)
        elif (key, value) in _CACHE:
            out[value] = _CACHE[key, value]
        else:
            todo.append(value)
    current = {value: value for value in todo}
    counts = {value: Counter() for value in todo}
    drop: dict[str, str | None] = dict.fromkeys(todo)
    pending = todo
    for n in range(MAX_PASSES):
        if not pending:
            break
        again = []
        for value, spans in zip(pending, _spans([current[v] for v in pending], policy)):
            # Kinds the policy keeps are not counted here: they change nothing, and NER on a path is noise
            # ("bench://quotes/001.jsonl" is a "location"), counted once per record of the file.
            changed = [s for s in spans if pii_action(policy, s) != "keep"]
            if not changed:
                continue
            counts[value].update(s.kind for s in changed)
            before = current[value]
            result = apply_policy(before, changed, policy)
            current[value], drop[value] = result.text, result.drop_because
            if result.drop_because:  # the record is rejected; its reject row names the source without it
                current[value] = _replaced(before, changed)
            else:
                again.append(value)
        pending = again
    if len(_CACHE) > _CACHE_MAX:
        _CACHE.clear()
    for value in todo:
        out[value] = _CACHE[key, value] = RedactedValue(value=current[value], counts=counts[value],
                                                        drop_because=drop[value])
    return out


def provenance_redactions(row: dict, redacted: dict[str, RedactedValue]) -> list[dict]:
    """`{field, kind, start, end}` for each span redacted in the row's source_uri and locator."""
    return [{"field": name, **span} for name in PROVENANCE_FIELDS
            for span in redaction_spans(row[name] or "", redacted[name].value or "")]


def redactions_json(text_spans: list[dict], provenance_spans: list[dict]) -> str:
    """The `redactions` column: a JSON list of {field, kind, start, end}, no values."""
    return json.dumps([{"field": "text", **s} for s in text_spans] + provenance_spans)
