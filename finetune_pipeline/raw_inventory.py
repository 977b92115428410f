"""A content-hash inventory of `raw/`: what changed since the last look.

Files are re-hashed only when their size or modification time changed, so a sensor tick over a large
raw folder stays cheap; a touched but unchanged file keeps its hash and counts as unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inventory(raw_dir: Path, previous: dict[str, list] | None = None) -> dict[str, list]:
    """{relative path: [size, mtime_ns, sha256]} for every regular file under `raw_dir`."""
    previous = previous or {}
    result: dict[str, list] = {}
    if not raw_dir.is_dir():
        return result
    for path in sorted(raw_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(raw_dir).as_posix()
        stat = path.stat()
        old = previous.get(rel)
        if old and old[0] == stat.st_size and old[1] == stat.st_mtime_ns:
            result[rel] = old
            continue
        result[rel] = [stat.st_size, stat.st_mtime_ns, file_sha256(path)]
    return result


def files_accounted(raw_dir: Path, data_dir: Path, source_uris: set[str]) -> pl.DataFrame:
    """Per regular file under `raw_dir` (hidden names aside, as the collector skips them; listed from the disk,
    without hashing): whether some record or reject names it as its source_uri, or names a folder holding it
    (a Hugging Face dataset folder is one source)."""
    paths = sorted(p.relative_to(data_dir).as_posix() for p in raw_dir.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(raw_dir).parts)) \
        if raw_dir.is_dir() else []
    def accounted(path: str) -> bool:  # the file itself, or a folder above it
        parts = path.split("/")
        return any("/".join(parts[:n]) in source_uris for n in range(len(parts), 0, -1))

    return pl.DataFrame({"path": paths, "accounted": [accounted(p) for p in paths]},
                        schema={"path": pl.String, "accounted": pl.Boolean})


def inventory_version(current: dict[str, list]) -> str:
    """One hash for the whole of raw/: paths and content hashes (not mtimes), so a touched file keeps it."""
    digest = hashlib.sha256()
    for rel in sorted(current):
        digest.update(f"{rel}\0{current[rel][2]}\n".encode())
    return digest.hexdigest()[:24]


@dataclass
class InventoryChanges:
    added: list[str]  # new paths with content not seen before
    changed: list[str]  # same path, new content
    removed: list[str]  # paths gone, their content nowhere else
    renamed: list[str]  # new paths whose content was already known (renamed, moved or copied files)

    def any(self) -> bool:
        """Whether the corpus content changed. A rename or copy alone does not: its records come from
        the parse cache (a copy then as an exact duplicate), so it starts no run of its own."""
        return bool(self.added or self.changed or self.removed)

    def describe(self) -> str:
        parts = [f"{len(self.added)} new", f"{len(self.changed)} changed", f"{len(self.removed)} removed"]
        if self.renamed:
            parts.append(f"{len(self.renamed)} renamed")
        return ", ".join(parts)


def compare(old: dict[str, list], new: dict[str, list]) -> InventoryChanges:
    """Differences by content hash; a file whose bytes are unchanged is never 'changed'."""
    old_hashes = {v[2] for v in old.values()}
    new_hashes = {v[2] for v in new.values()}
    appeared = sorted(p for p in new if p not in old)
    renamed = [p for p in appeared if new[p][2] in old_hashes]
    added = [p for p in appeared if new[p][2] not in old_hashes]
    removed = sorted(p for p in old if p not in new and old[p][2] not in new_hashes)
    changed = sorted(p for p in new if p in old and new[p][2] != old[p][2])
    return InventoryChanges(added=added, changed=changed, removed=removed, renamed=renamed)
