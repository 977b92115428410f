"""The filter contract every cleaning filter follows, as datatrove's: a `Filter` takes its parameters from one
settings object in its constructor and judges one cleaned record (`Candidate`), returning `(reason, detail)`
to reject it or None to keep it. Kept below cleaning/ and tasks/ (it imports neither), so a kind's own
filters (tasks/preference.py) subclass it like cleaning/filters.py's do; `cleaning.filters` re-exports it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

Reject = tuple[str, str] | None  # (reason, detail) to reject, None to keep


@dataclass
class Candidate:
    """A record as the filters see it: after normalisation and the PII policy, before the verdict."""

    fields: dict  # the record's content fields rebuilt from its cleaned units (`Task.from_units`): `text` always
    units: list[str]  # its cleaned text units (`Task.text_units`): [text], or every turn's content
    table_row: bool = False  # a row of a table, not a chunk of a document (`quality_filters.is_table_row`)
    language: tuple[str, float] | None = None  # (ISO 639-1 code, probability), set by `LanguageFilter.prepare`

    @property
    def text(self) -> str:
        return self.fields["text"]


class Filter(abc.ABC):
    """One check on a cleaned record. Subclasses set `name` and implement `reject`."""

    name: str = ""

    def prepare(self, candidates: list[Candidate]) -> None:
        """Work done once over a batch of records before `reject` is asked of each (default: none)."""

    @abc.abstractmethod
    def reject(self, candidate: Candidate) -> Reject:
        """`(reason, detail)` to reject the record, or None to keep it."""

    def flags_only(self, candidate: Candidate) -> bool:
        """Whether a failure only flags this record instead of rejecting it."""
        return False

    def warning(self) -> str | None:
        """Why the filter cannot run in this configuration (reported once per stage), or None."""
        return None
