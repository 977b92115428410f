"""Right to erasure (GDPR art. 17): `erasure_requests.csv` in the data root lists subjects whose records
must disappear from every derived asset and export on the next run.

Columns: `request_id,subject`. A subject is matched against the *raw* text (before redaction, which would
hide it) and the record's provenance (its source path and locator are searched like the text, so an
address in a file name or a database id is found too):
- a record id (as in `record_id`) or a source path (`source_uri`, or a folder prefix of it): exact match;
- an email address: case-insensitive, as a whole address in the text;
- a phone number (7+ digits): the same digits in a phone-like run of the text, ignoring spaces, dots,
  dashes and brackets, a country code and a national trunk 0 ("+49 30 1234567" = "030 1234567");
- anything else (e.g. a name): case-insensitive whole-word match in the text.
The subject itself is never logged, stored in metadata or written to the data card: only request ids.

Cleaning rejects the matching records (the reject row keeps only the id); `erase_from_collection` then
removes them from what collection stored before cleaning could see them: the stored `raw_corpus` value and
the parse cache (an entry holding one is deleted, so its source is parsed again next time). Only the files
under raw/ still hold the subject, until the user deletes it there.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from finetune_pipeline import atomic
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.sources.cache import forget_records

_PHONE_RUN = re.compile(r"\+?[\d(][\d\s().-]{5,}\d")


class ErasureFileError(ValueError):
    """erasure_requests.csv could not be read."""


@dataclass
class ErasureReport:
    """Requests read and the records each removed (request ids only: subjects never leave this module)."""

    requests: int = 0
    records_removed: int = 0
    removed_by_request: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ErasureRequest:
    request_id: str
    subject: str


def load_erasure_requests(data_dir: str | Path) -> list[ErasureRequest]:
    """Read `<data_dir>/erasure_requests.csv` (no file: no requests)."""
    path = DataRoot(Path(data_dir)).erasure_requests
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"request_id", "subject"} - set(reader.fieldnames or [])
        if missing:
            raise ErasureFileError(f"{path}: missing column(s) {sorted(missing)}; expected a header "
                                   f"'request_id,subject'")
        requests = []
        for line, row in enumerate(reader, start=2):
            request_id, subject = (row.get("request_id") or "").strip(), (row.get("subject") or "").strip()
            if not request_id or not subject:
                raise ErasureFileError(f"{path}, line {line}: request_id and subject are both required")
            requests.append(ErasureRequest(request_id, subject))
    return requests


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _strip_country_prefix(digits: str) -> str:
    return digits[2:] if digits.startswith("00") else digits


def _same_phone(a: str, b: str) -> bool:
    """Same number up to a country code or national trunk 0: "+49 30 1234567" = "030 1234567"."""
    a, b = a.lstrip("0"), b.lstrip("0")
    shorter, longer = sorted((a, b), key=len)
    # at most a 3-digit country code apart: a local 7-digit number alone is not the subject's number
    return len(shorter) >= 7 and len(longer) - len(shorter) <= 3 and longer.endswith(shorter)


class SubjectMatcher:
    """Decides for each record which erasure requests name it."""

    def __init__(self, requests: list[ErasureRequest]):
        self.requests = requests
        self._compiled = []
        for request in requests:
            subject = request.subject
            if "@" in subject and " " not in subject:
                pattern = re.compile(r"(?<![\w.+-])" + re.escape(subject) + r"(?![\w-])", re.I)
                self._compiled.append((request, "text", pattern))
            elif len(_digits(subject)) >= 7 and re.fullmatch(r"[\d\s().+-]+", subject):
                self._compiled.append((request, "phone", _strip_country_prefix(_digits(subject))))
            else:
                pattern = re.compile(r"(?<!\w)" + re.escape(subject) + r"(?!\w)", re.I)
                self._compiled.append((request, "text_or_id", pattern))

    def matches(self, record_id: str, source_uri: str, raw_text: str, locator: str = "") -> list[str]:
        """Request ids that name this record."""
        raw_text = " | ".join((raw_text, source_uri, locator))  # "|" ends a phone-like run
        found = []
        phones = None
        for request, kind, target in self._compiled:
            subject = request.subject
            if subject == record_id or subject == source_uri or source_uri.startswith(subject.rstrip("/") + "/"):
                found.append(request.request_id)
            elif kind == "phone":
                if phones is None:
                    phones = [_strip_country_prefix(_digits(m.group(0))) for m in _PHONE_RUN.finditer(raw_text)]
                if any(_same_phone(p, target) for p in phones):
                    found.append(request.request_id)
            elif target.search(raw_text):
                found.append(request.request_id)
        return found


def erase_from_collection(corpus: pl.DataFrame, erased_ids: list[str], stored_corpus: Path | None,
                          parse_cache: Path | None) -> tuple[int, int]:
    """Remove the records `erased_ids` of `corpus` (the collection stage's records, as cleaning read them)
    from the collection stage's stored value (`stored_corpus`, Parquet, rewritten without them) and from
    the parse cache. Returns (rows removed from the stored value, parse cache entries deleted)."""
    if not erased_ids:
        return 0, 0
    ids = pl.Series(erased_ids, dtype=pl.String).implode()
    records = corpus.filter(pl.col("record_id").is_in(ids)).select("locator", "text").rows()
    removed = 0
    if stored_corpus is not None and Path(stored_corpus).exists():
        stored = pl.read_parquet(stored_corpus)
        kept = stored.filter(~pl.col("record_id").is_in(ids))
        removed = stored.height - kept.height
        if removed:
            atomic.write_parquet(kept, Path(stored_corpus))
    return removed, forget_records(parse_cache, records)
