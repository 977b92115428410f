"""Versions of what is published, and rollback.

Every publication of the splits and of an adapter becomes a version, named by its time and content digest
(`20261206T061230Z-1a2b3c4d`), kept with the run that made it; the last `publish.keep` versions of each kind
stay. The published paths name the current one through symlinks:

    exports/versions/splits/<version>/splits/        the split export (DatasetDict, <split>.jsonl, README.md)
    exports/versions/splits/<version>/folds.parquet  its folds, when k-fold is on
    exports/versions/splits/<version>/version.json   the manifest (digest, run id, time, data snapshot)
    exports/versions/splits/current -> <version>     THE pointer: the only thing a publication or rollback swaps
    exports/splits -> versions/splits/current/splits               (fixed)
    exports/folds.parquet -> versions/splits/current/folds.parquet (present while the current version has folds)

    models/versions/<name>/<version>/adapter/        the adapter folder (weights, tokenizer, metrics, card)
    models/versions/<name>/<version>/version.json
    models/versions/<name>/current -> <version>
    models/<name> -> versions/<name>/current/adapter                (fixed)

Why symlinks rather than copies plus a CURRENT file: making a version current is one `os.replace` of the
`current` symlink, which POSIX makes atomic, so a crash leaves the old or the new version current, never a
mix; nothing is copied (an adapter's weights are not doubled); and every reader of exports/splits or
models/<name> keeps opening the same path. The links are relative, so a data root can be moved or copied.

The digest covers the files as the candidate was staged (before the card gets its version lines); a
publication whose digest is the current version's makes no new version (an unchanged rerun writes nothing),
and one equal to an older kept version makes that version current again.

Erasure (`erase_records`) removes records from every kept split version. No dagster import.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from finetune_pipeline.layout import DataRoot

SPLITS, ADAPTER = "splits", "adapter"
POINTER = "current"
MANIFEST = "version.json"
IGNORED = {"checkpoint"}  # a training checkpoint is never published


class VersionError(ValueError):
    """A version that does not exist or cannot be made current."""


@dataclass(frozen=True)
class Version:
    """One kept publication: `kind` splits or adapter, `name` the adapter's name (splits: "splits")."""

    kind: str
    name: str
    version: str
    digest: str
    run_id: str
    published: str  # ISO time, UTC, in seconds
    data_snapshot: str = ""  # splits: exports.content_digest of what they hold; adapter: what it trained on
    dataset_version: str = ""  # adapter: the split version it was trained on ("" when none was found)
    erased_requests: tuple[str, ...] = ()  # erasure requests that removed records after publication
    published_us: int = 0  # the publication time in microseconds: orders versions published in one second

    def to_dict(self) -> dict:
        return {**asdict(self), "erased_requests": list(self.erased_requests)}

    @classmethod
    def from_dict(cls, data: dict) -> "Version":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "erased_requests": tuple(known.get("erased_requests", ()))})


# ---- where things are

def versions_dir(root: DataRoot, kind: str, name: str = SPLITS) -> Path:
    return root.exports / "versions" / SPLITS if kind == SPLITS else root.models / "versions" / name


def _payload(kind: str) -> str:
    return SPLITS if kind == SPLITS else ADAPTER


def published_path(root: DataRoot, kind: str, name: str = SPLITS) -> Path:
    """exports/splits or models/<name>: the path readers open."""
    return root.splits_export if kind == SPLITS else root.adapter(name)


def version_name(digest: str, when: datetime) -> str:
    return f"{when.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{digest[:8]}"


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (sorted), a training checkpoint left out."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not IGNORED & set(
            p.relative_to(folder).parts)):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _read(folder: Path) -> Version | None:
    try:
        return Version.from_dict(json.loads((folder / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None  # a folder left half-made by a killed publication: not a version


def kept(root: DataRoot, kind: str, name: str = SPLITS) -> list[Version]:
    """The kept versions of one kind, oldest first."""
    folder = versions_dir(root, kind, name)
    if not folder.is_dir():
        return []
    found = [_read(p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.is_symlink()
             and not p.name.startswith(".")]
    return sorted((v for v in found if v is not None), key=lambda v: (v.published, v.published_us, v.version))


def current(root: DataRoot, kind: str, name: str = SPLITS) -> str | None:
    """The current version's name (what the pointer names), None before the first versioned publication."""
    pointer = versions_dir(root, kind, name) / POINTER
    return os.readlink(pointer) if pointer.is_symlink() else None


def adapter_names(root: DataRoot) -> list[str]:
    folder = root.models / "versions"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def every_version(root: DataRoot) -> list[tuple[Version, bool]]:
    """(version, is current) for every kept version: the splits, then each adapter, oldest first."""
    rows = []
    for kind, name in [(SPLITS, SPLITS)] + [(ADAPTER, n) for n in adapter_names(root)]:
        now = current(root, kind, name)
        rows += [(v, v.version == now) for v in kept(root, kind, name)]
    return rows


def find_dataset_version(root: DataRoot, data_snapshot: str) -> str:
    """The newest kept split version holding `data_snapshot` ("" when none does)."""
    matching = [v for v in kept(root, SPLITS) if data_snapshot and v.data_snapshot == data_snapshot]
    return matching[-1].version if matching else ""


# ---- publishing

def _swap_link(link: Path, target: str) -> None:
    """Point `link` at `target` (relative), atomically: a new symlink renamed over the old one."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.link")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def stamp_card(card: Path, lines: list[str]) -> None:
    """Add `lines` to a card (README.md), one paragraph each, under its title (the first `# ` heading)."""
    if not card.is_file():
        return
    text = card.read_text(encoding="utf-8").split("\n")
    body = text.index("---", 1) + 1 if text[0] == "---" and "---" in text[1:] else 0  # after the YAML header
    at = next((i + 1 for i, line in enumerate(text) if i >= body and line.startswith("# ")), len(text))
    card.write_text("\n".join(text[:at] + [part for line in lines for part in ("", line)] + text[at:]),
                    encoding="utf-8")


def version_lines(version: Version) -> list[str]:
    """The card's version paragraph."""
    lines = [f"Version: `{version.version}` (published {version.published} by run `{version.run_id}`; content "
             f"digest `{version.digest[:16]}`). `finetune-pipeline versions` lists the kept versions."]
    if version.kind == ADAPTER:
        lines.append(f"Trained on dataset version: `{version.dataset_version}` (exports/versions/splits/"
                     f"{version.dataset_version})." if version.dataset_version else
                     f"Trained on dataset version: none kept holds data snapshot `{version.data_snapshot}` "
                     "(the split it was trained on was not published).")
    return lines


def prepare(root: DataRoot, kind: str, candidate: Path, *, run_id: str, name: str = SPLITS,
            folds: Path | None = None, data_snapshot: str = "", dataset_version: str = "",
            when: datetime | None = None) -> tuple[Version, bool]:
    """Make `candidate` (a staged folder) a kept version, not yet current: (the version, whether it is new).
    A candidate whose digest is a kept version's is that version (nothing is written). The version's card
    (README.md) gets its version lines; `folds` (splits only) is kept beside the split export."""
    candidate = Path(candidate)
    if not candidate.is_dir():
        raise VersionError(f"nothing to publish: the candidate {candidate} is missing; run the asset that makes "
                           "it first")
    digest = tree_digest(candidate)
    if folds is not None and folds.exists():
        digest = hashlib.sha256((digest + hashlib.sha256(folds.read_bytes()).hexdigest()).encode()).hexdigest()
    same = [v for v in kept(root, kind, name) if v.digest == digest]
    if same:
        return same[-1], False
    when = when or datetime.now(timezone.utc)
    version = Version(kind, name, version_name(digest, when), digest, run_id,
                      when.astimezone(timezone.utc).isoformat(timespec="seconds"), data_snapshot, dataset_version,
                      published_us=round(when.timestamp() * 1_000_000))
    home = versions_dir(root, kind, name)
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{version.version}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        shutil.copytree(candidate, tmp / _payload(kind), ignore=shutil.ignore_patterns(*IGNORED))
        if folds is not None and folds.exists():
            shutil.copy2(folds, tmp / "folds.parquet")
        stamp_card(tmp / _payload(kind) / "README.md", version_lines(version))
        (tmp / MANIFEST).write_text(json.dumps(version.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, home / version.version)  # a version folder appears whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return version, True


def _adopt_unversioned(root: DataRoot, kind: str, name: str) -> None:
    """A published path that is still a plain folder (written before versions existed) becomes a version
    of its own (run id `before-versions`), so the first versioned publication can be rolled back too."""
    path = published_path(root, kind, name)
    if path.is_symlink() or not path.is_dir():
        return
    folds = root.folds if kind == SPLITS and root.folds.is_file() and not root.folds.is_symlink() else None
    when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    version, _ = prepare(root, kind, path, run_id="before-versions", name=name, folds=folds, when=when)
    if current(root, kind, name) is None:
        _swap_link(versions_dir(root, kind, name) / POINTER, version.version)
    trash = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
    path.rename(trash)  # the copy is a kept version now; the link below takes the folder's place
    _link_published(root, kind, name)
    if folds is not None:
        folds.unlink()
    shutil.rmtree(trash, ignore_errors=True)


def _link_published(root: DataRoot, kind: str, name: str) -> None:
    """The fixed links from the published paths to the pointer (made once; never swapped)."""
    path = published_path(root, kind, name)
    relative = os.path.relpath(versions_dir(root, kind, name) / POINTER / _payload(kind), path.parent)
    if not path.is_symlink() or os.readlink(path) != relative:
        _swap_link(path, relative)
    if kind == SPLITS:
        _link_folds(root)


def _link_folds(root: DataRoot) -> None:
    """exports/folds.parquet names the current version's folds while it has some."""
    has = (versions_dir(root, SPLITS) / POINTER / "folds.parquet").exists()
    relative = os.path.relpath(versions_dir(root, SPLITS) / POINTER / "folds.parquet", root.exports)
    if has and not (root.folds.is_symlink() and os.readlink(root.folds) == relative):
        _swap_link(root.folds, relative)
    elif not has and (root.folds.is_symlink() or root.folds.exists()):
        root.folds.unlink()


def make_current(root: DataRoot, version: Version) -> None:
    """Make a kept version the current one: one atomic swap of the pointer."""
    home = versions_dir(root, version.kind, version.name)
    if _read(home / version.version) is None:
        raise VersionError(f"version {version.version} of {version.name} is not kept under {home}")
    _adopt_unversioned(root, version.kind, version.name)
    _swap_link(home / POINTER, version.version)
    _link_published(root, version.kind, version.name)


def prune(root: DataRoot, kind: str, keep: int, name: str = SPLITS) -> list[str]:
    """Delete the oldest versions beyond the newest `keep` (never the current one); returns their names."""
    now, versions = current(root, kind, name), kept(root, kind, name)
    doomed = [v.version for v in versions[:max(0, len(versions) - keep)] if v.version != now]
    home = versions_dir(root, kind, name)
    for gone in doomed:
        trash = home / f".{gone}.{uuid.uuid4().hex[:8]}.deleted"
        (home / gone).rename(trash)  # out of the listing at once, then deleted
        shutil.rmtree(trash, ignore_errors=True)
    return doomed


def publish(root: DataRoot, kind: str, candidate: Path, *, run_id: str, keep: int, name: str = SPLITS,
            folds: Path | None = None, data_snapshot: str = "", dataset_version: str = "",
            before_current=None) -> tuple[Version, bool]:
    """prepare + make_current + prune. `before_current(version)` runs between (the registry entry is written
    there, so the registry never names a current version it does not list). Returns (version, new)."""
    version, new = prepare(root, kind, candidate, run_id=run_id, name=name, folds=folds,
                           data_snapshot=data_snapshot, dataset_version=dataset_version)
    if before_current is not None:
        before_current(version)
    if current(root, kind, name) != version.version or not published_path(root, kind, name).is_symlink():
        make_current(root, version)
    prune(root, kind, keep, name)
    return version, new


def find(root: DataRoot, version: str, kind: str | None = None) -> Version:
    """The kept version called `version` (or a unique prefix of it), of `kind` when given."""
    rows = [v for v, _ in every_version(root) if v.version.startswith(version) and kind in (None, v.kind)]
    exact = [v for v in rows if v.version == version]
    rows = exact or rows
    if not rows:
        raise VersionError(f"no kept version {version!r} under {root.exports / 'versions'} or "
                           f"{root.models / 'versions'}: `finetune-pipeline versions` lists the kept ones")
    if len(rows) > 1:
        raise VersionError(f"{version!r} names {len(rows)} versions ("
                           + ", ".join(f"{v.kind} {v.name} {v.version}" for v in rows)
                           + "): give more of the name, or --kind")
    return rows[0]


def rollback(root: DataRoot, version: str, kind: str | None = None) -> Version:
    """Make the kept version `version` current again (atomically); returns it."""
    chosen = find(root, version, kind)
    make_current(root, chosen)
    return chosen


# ---- erasure

def erase_records(root: DataRoot, record_ids: list[str], request_ids: list[str]) -> dict[str, int]:
    """Remove the records `record_ids` (and rows augmented from them) from every kept split version: the
    <split>.jsonl files, the DatasetDict and the folds. A version that held none is not touched. Returns
    rows removed per version. The manifest lists the requests (ids only) that changed the version."""
    import polars as pl

    from finetune_pipeline.records import SPLITS as SPLIT_NAMES

    if not record_ids:
        return {}
    ids = set(record_ids)
    removed: dict[str, int] = {}
    for version in kept(root, SPLITS):
        folder = versions_dir(root, SPLITS) / version.version
        export = folder / SPLITS
        hit = 0
        parts = {}
        for split in SPLIT_NAMES:
            path = export / f"{split}.jsonl"
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
            keep = [line for line in lines if not ids & _ids_of(line)]
            hit += len(lines) - len(keep)
            parts[split] = (path, keep, len(lines) != len(keep))
        if not hit:
            continue
        for split, (path, keep, changed) in parts.items():
            if changed:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text("".join(keep), encoding="utf-8")
                os.replace(tmp, path)
        _erase_from_dataset_dict(export, ids)
        folds = folder / "folds.parquet"
        if folds.exists():
            frame = pl.read_parquet(folds)
            if "record_id" in frame.columns:
                tmp = folds.with_name(".folds.parquet.tmp")
                frame.filter(~pl.col("record_id").is_in(list(ids))).write_parquet(tmp)
                os.replace(tmp, folds)
        erased = Version.from_dict({**version.to_dict(),
                                    "erased_requests": sorted(set(version.erased_requests) | set(request_ids))})
        (folder / MANIFEST).write_text(json.dumps(erased.to_dict(), indent=2) + "\n", encoding="utf-8")
        removed[version.version] = hit
    return removed


def _ids_of(line: str) -> set[str]:
    row = json.loads(line) if line.strip() else {}
    return {row.get("record_id"), row.get("augmented_from")} - {None}


def _erase_from_dataset_dict(export: Path, ids: set[str]) -> None:
    """The DatasetDict without the erased rows, saved whole in place of the old one."""
    if not (export / "dataset_dict.json").exists():
        return
    from datasets import load_from_disk

    data = load_from_disk(str(export))
    kept_rows = data.filter(lambda row: row["record_id"] not in ids and row.get("augmented_from") not in ids,
                            keep_in_memory=True)  # no cache files written beside the export
    tmp = export.with_name(f".{export.name}.dd.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    kept_rows.save_to_disk(str(tmp))
    for split_folder in [p for p in export.iterdir() if p.is_dir()]:
        shutil.rmtree(split_folder)
    for item in tmp.iterdir():
        os.replace(item, export / item.name)
    shutil.rmtree(tmp, ignore_errors=True)
