"""Keys for incremental runs: what decides a stage's output, hashed, so a later run reuses a result only when
it would compute the same one.

A key covers the stage's inputs (content hashes, never paths alone), the settings sections the stage reads,
and the code: the source files of the modules that compute it and the versions of the packages whose models
or rules they run. Editing a cleaning filter or upgrading spaCy therefore invalidates cached cleaning results
by itself; nobody has to remember to bump a version number.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from finetune_pipeline.atomic import write_text

PACKAGE = Path(__file__).resolve().parent


def digest(*parts: object) -> str:
    """A short sha256 of JSON-serialisable parts (32 hex digits)."""
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@lru_cache(maxsize=32)
def code_version(modules: tuple[str, ...], packages: tuple[str, ...] = ()) -> str:
    """A hash of the source of `modules` (paths relative to the package: a file or a folder of .py files)
    and of the installed versions of `packages` (distribution names; a missing one counts as absent)."""
    sources = []
    for module in modules:
        path = PACKAGE / module
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        sources += [(str(f.relative_to(PACKAGE)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]
    versions = []
    for package in packages:
        try:
            versions.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            versions.append((package, None))
    return digest(sources, versions)


# ---- training: a candidate trained on the same data snapshot with the same settings is kept, not retrained

TRAINING_CODE = ("training", "tasks", "embeddings.py", "exports.py")
TRAINING_PACKAGES = ("torch", "transformers", "peft", "scikit-learn", "safetensors", "tokenizers")
# Training settings that do not change what is trained: resuming and checkpointing, and which approaches the
# comparison runs (part of the comparison's key, not of one approach's).
_NOT_TRAINING = {"resume", "checkpoint_every_epochs", "compare"}
KEY_FILE = "training_key.json"


def _model_stamp(path: str | None) -> object:
    """A local model folder's modification time (a rebuilt base model is another model); None otherwise."""
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


def training_key(approach: str, task: str, training: dict, labels: list[str] | None, data_snapshot: str) -> str:
    """What decides a trained candidate: the approach, the task, its label set, the data snapshot
    (`exports.content_digest` of the splits), the training settings, the base models and the training code."""
    shaping = {k: v for k, v in training.items() if k not in _NOT_TRAINING}
    named = {**training, **{f"{section}.{k}": v for section, fields in training.items() if isinstance(fields, dict)
                            for k, v in fields.items()}}  # a method section's base_model too (instruction.base_model)
    models = {k: (v, _model_stamp(v)) for k, v in named.items() if k.endswith("base_model") and isinstance(v, str)}
    return digest(approach, task, shaping, models, labels, data_snapshot, code_version(TRAINING_CODE, TRAINING_PACKAGES))


def reusable(folder: Path, key: str, needed: tuple[str, ...] = ()) -> dict | None:
    """The result stored with `folder`'s candidate when it was made under `key` and its files (`needed`, relative
    to `folder`'s parent) are all there; None: train again."""
    try:
        stored = json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stored.get("key") != key or not all((folder.parent / name).exists() for name in needed):
        return None
    return stored.get("result")


def forget(folder: Path) -> None:
    """Drop `folder`'s key before it is trained again, so a run killed mid-training is never taken as done."""
    (folder / KEY_FILE).unlink(missing_ok=True)


def remember(folder: Path, key: str, result: dict) -> None:
    """Store `key` and the result beside a finished candidate (JSON, written whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps({"key": key, "result": result}, indent=2, default=str), folder / KEY_FILE)


# ---- a stage's whole result, kept with the key it was computed under

def frame_digest(frame) -> str:
    """An order-sensitive hash of a polars frame's column names, types and every value: two seeded 64-bit
    row hashes per row, and polars' version (its row hash may change between versions)."""
    import polars as pl

    rows = [frame.hash_rows(seed=seed).to_numpy().tobytes() for seed in (0, 1)] if frame.height else []
    return digest(str(frame.schema), frame.height,
                  hashlib.sha256(b"".join(rows)).hexdigest(), pl.__version__)


class ResultCache:
    """One stored result (a polars frame and a small JSON `info`) under `folder/<name>.parquet` and
    `<name>.json`, returned only for the key it was stored with. The key file is written last and read
    first, so a half-written result is never taken; a missing or damaged file means compute again."""

    def __init__(self, folder: Path, name: str):
        self.frame_file = Path(folder) / f"{name}.parquet"
        self.key_file = Path(folder) / f"{name}.json"
        self.hits = 0  # loads that found the key

    def load(self, key: str):
        """(frame, info) stored under `key`, or None."""
        import polars as pl

        try:
            stored = json.loads(self.key_file.read_text(encoding="utf-8"))
            if stored.get("key") != key:
                return None
            found = pl.read_parquet(self.frame_file), stored.get("info", {})
        except Exception:  # missing, damaged, another layout: compute again, never crash
            return None
        self.hits += 1
        return found

    def store(self, key: str, frame, info: dict | None = None) -> None:
        from finetune_pipeline import atomic

        self.key_file.unlink(missing_ok=True)
        atomic.write_parquet(frame, self.frame_file)
        write_text(json.dumps({"key": key, "info": info or {}}, default=str), self.key_file)
