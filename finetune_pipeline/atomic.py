"""Files written whole: a temporary sibling is written, then renamed over the target, so a reader (or a
run killed mid-write) never sees half a file or half a folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import polars as pl


@contextmanager
def atomic_path(target: Path):
    """Yield a temporary sibling path; on success it replaces `target` (file or folder)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_parquet(frame: pl.DataFrame, target: Path) -> Path:
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp)
    return target


def write_text(text: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def write_bytes(data: bytes, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def publish(candidate: Path, target: Path) -> Path:
    """Replace `target` with a copy of `candidate` (file or folder), whole; a missing candidate removes
    `target` (an export that is no longer produced). The candidate stays for inspection."""
    candidate, target = Path(candidate), Path(target)
    if not candidate.exists():
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        return target
    with atomic_path(target) as tmp:
        if candidate.is_dir():
            shutil.copytree(candidate, tmp, ignore=shutil.ignore_patterns("checkpoint"))
        else:
            shutil.copy2(candidate, tmp)
    return target
