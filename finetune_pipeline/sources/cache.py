"""The parse cache behind incremental collection: a source whose bytes did not change is not parsed again.

An entry is keyed on the source's content hash, its file type and the settings that shape parsing
(never its path), so a renamed or moved file is a cache hit too: it is not parsed, and its records
keep the time they were first ingested. Entries are Parquet (records) plus JSON (rejects and the
first ingest time); nothing is pickled. Entries not used by a run are pruned at its end, so a deleted
source leaves nothing behind; an entry holding a record an erasure request removed is deleted by cleaning
(`forget_records`). With `privacy.keep_raw_text: none` there is no parse cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from finetune_pipeline.settings import Settings

# Bump when parsing or chunking changes what a source yields: every entry is then parsed again.
PARSER_VERSION = 4  # 4: a table's text and label columns recognised when not configured

_RECORD_SCHEMA = {"text": pl.String, "locator": pl.String, "label": pl.String, "label_source": pl.String,
                  "element_types": pl.String, "prompt": pl.String, "response": pl.String,
                  "messages": pl.String, "category": pl.String}


def parse_fingerprint(settings: Settings) -> str:
    """What, besides the bytes and the file type, decides a source's records."""
    sources = settings.sources.model_dump(include={"tabular", "chunk_by", "chunk_max_chars",
                                                   "chunk_combine_under_chars", "max_pdf_pages"})
    # The label set and which columns were set explicitly decide which columns a table's records come from.
    explicit = sorted(settings.sources.tabular.model_fields_set)
    blob = json.dumps({"parser": PARSER_VERSION, "sources": sources, "task": settings.task,
                       "labels": settings.labels, "explicit_columns": explicit}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class CachedParse:
    records: list[dict]
    rejects: list[dict]  # {"locator", "reason", "detail"}; the path is added by the caller
    ingested_at: str
    notes: list[str] = field(default_factory=list)  # what was recognised rather than configured


class ParseCache:
    """A folder of parse results; `None` folder means no caching (every source is parsed)."""

    def __init__(self, folder: Path | None, settings: Settings):
        self.folder = Path(folder) if folder else None
        self.fingerprint = parse_fingerprint(settings)
        self.used: set[str] = set()
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def key(self, content_sha256: str, suffix: str) -> str:
        return hashlib.sha256(f"{content_sha256}:{suffix}:{self.fingerprint}".encode()).hexdigest()[:32]

    def get(self, key: str) -> CachedParse | None:
        if not self.folder:
            return None
        meta_path = self.folder / f"{key}.json"
        try:
            meta = json.loads(meta_path.read_text())
            records = pl.read_parquet(self.folder / f"{key}.parquet").to_dicts() if meta["records"] else []
        except (OSError, ValueError, KeyError, pl.exceptions.PolarsError):
            return None  # missing or damaged entry: parse again
        self.used.add(key)
        return CachedParse(records=records, rejects=meta["rejects"], ingested_at=meta["ingested_at"],
                           notes=meta.get("notes", []))

    def put(self, key: str, parsed: CachedParse) -> None:
        if not self.folder:
            return
        self.used.add(key)
        if parsed.records:
            frame = pl.DataFrame([{k: r.get(k) for k in _RECORD_SCHEMA} for r in parsed.records],
                                 schema=_RECORD_SCHEMA)
            frame.write_parquet(self.folder / f"{key}.parquet.tmp")
            os.replace(self.folder / f"{key}.parquet.tmp", self.folder / f"{key}.parquet")
        meta = {"records": len(parsed.records), "rejects": parsed.rejects, "ingested_at": parsed.ingested_at,
                "notes": parsed.notes}
        # The JSON is written last: an entry counts only once both files are complete.
        (self.folder / f"{key}.json.tmp").write_text(json.dumps(meta))
        os.replace(self.folder / f"{key}.json.tmp", self.folder / f"{key}.json")

    def prune(self) -> int:
        """Delete entries this run did not use (sources deleted or changed since). Returns how many."""
        if not self.folder:
            return 0
        removed = 0
        for path in self.folder.iterdir():
            if path.name.split(".", 1)[0] not in self.used:
                path.unlink(missing_ok=True)
                removed += path.suffix == ".json"
        return removed


def forget_records(folder: Path | None, records: list[tuple[str, str]]) -> int:
    """Delete every entry of the parse cache in `folder` that holds one of `records` ((locator, text) pairs,
    e.g. records an erasure request removed), so no copy of them stays here: their source is parsed again on
    the next run. Returns the number of entries deleted."""
    if not folder or not records or not Path(folder).is_dir():
        return 0
    wanted = pl.DataFrame(records, schema={"locator": pl.String, "text": pl.String}, orient="row").unique()
    removed = 0
    for path in sorted(Path(folder).glob("*.parquet")):
        try:
            held = pl.read_parquet(path, columns=["locator", "text"]).join(wanted, on=["locator", "text"], how="semi")
        except (OSError, pl.exceptions.PolarsError):
            held = None  # damaged: it is of no use, and may hold anything
        if held is None or held.height:
            key = path.name.split(".", 1)[0]
            for part in (f"{key}.json", f"{key}.parquet"):  # the JSON first: the entry stops counting at once
                (Path(folder) / part).unlink(missing_ok=True)
            removed += 1
    return removed
