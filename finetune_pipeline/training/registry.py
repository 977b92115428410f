"""The adapters registry: one adapter per task name under `models/<task>/`, listed in `models/registry.json`
with its base model, approach, data snapshot, creation time and a metrics summary.

`registry.json` keeps the history: per task a list of entries, newest publication first, each naming its
version (`version`, its folder under models/versions/<task>/ in `path`) and the dataset version it was trained
on (`dataset_version`). The current entry is the one whose version models/<task> names (versions.py: a
rollback swaps that link only, so the registry never disagrees with the files); without versions, the
first. A registry written before versions (one entry per task) is read as a one-entry history.

    list_adapters(models_dir)            -> the entries
    load(models_dir, task)               -> (model, tokenizer, entry): the base model with that adapter
    switch(model, models_dir, task)      -> entry: another task's adapter on the same base model object
    merge(models_dir, task, out_dir)     -> out_dir: base + adapter merged into one plain transformers model

Everything is safetensors and JSON; imports no dagster. The CLI (`finetune-pipeline adapters ...`) only
formats what these functions return.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer

from finetune_pipeline.tasks import task_named
from finetune_pipeline.training.results import TrainingResult

REGISTRY_FILE = "registry.json"


def _history(models_dir: Path) -> dict[str, list[dict]]:
    """Every task's entries, newest first (a one-entry-per-task registry read as one-entry lists)."""
    path = Path(models_dir) / REGISTRY_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    return {task: entries if isinstance(entries, list) else [entries] for task, entries in data.items()}


def _current(models_dir: Path, task: str, entries: list[dict]) -> dict:
    """The entry of the version models/<task> names; one it names that no entry lists is the adapter adopted
    from before versions (its entry has no version); no version at all: the newest entry."""
    from finetune_pipeline import versions
    from finetune_pipeline.layout import DataRoot

    now = versions.current(DataRoot(Path(models_dir).parent), versions.ADAPTER, task)
    listed = next((e for e in entries if now and e.get("version") == now), None)
    return listed or next((e for e in entries if now and "version" not in e), entries[0])


def _read(models_dir: Path) -> dict[str, dict]:
    """The current entry of every task."""
    return {task: _current(models_dir, task, entries) for task, entries in _history(models_dir).items() if entries}


def history(models_dir: str | Path, task: str) -> list[dict]:
    """Every registered entry of `task`, newest first (empty when none)."""
    return _history(Path(models_dir)).get(task, [])


def _write(models_dir: Path, entries: dict[str, list[dict]]) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".registry.", dir=models_dir)
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=2, sort_keys=True)
    os.replace(tmp, models_dir / REGISTRY_FILE)


def register(models_dir: str | Path, task: str, adapter_dir: str | Path, result: TrainingResult | dict,
             version: str = "", dataset_version: str = "") -> dict:
    """Add `task`'s entry for the adapter saved in `adapter_dir` (normally models/<task>/, or its version's
    folder) at the head of its history; an entry of the same version is replaced, and without a version
    the unversioned entries are (one adapter trained in place)."""
    models_dir, adapter_dir = Path(models_dir), Path(adapter_dir)
    result = TrainingResult.from_dict(result)
    kind = task_named(result.task)
    entry = {
        "task": task,
        "path": os.path.relpath(adapter_dir.resolve(), models_dir.resolve()),
        "task_type": kind.name,
        "approach": result.approach,
        # `base`: what to load (None: the shipped all-MiniLM-L6-v2); `base_model`: its name for people.
        "base": kind.saved_base_model(result),
        "base_model": result.base_model,
        "labels": result.labels,
        "data_snapshot": result.data_snapshot or "",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": kind.metrics_summary(result),
        "trainable_parameters": result.trainable_parameters,
    }
    if version:
        entry.update(version=version, dataset_version=dataset_version)
    entries = _history(models_dir)
    entries[task] = [entry] + [e for e in entries.get(task, []) if e.get("version", "") != version]
    _write(models_dir, entries)
    return entry


def list_adapters(models_dir: str | Path) -> list[dict]:
    """Registry entries sorted by task name (empty when nothing is registered)."""
    return [entry for _, entry in sorted(_read(Path(models_dir)).items())]


def get(models_dir: str | Path, task: str) -> dict:
    entries = _read(Path(models_dir))
    if task not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise KeyError(f"no adapter for task '{task}' in {Path(models_dir) / REGISTRY_FILE} (known: {known})")
    return entries[task]


def adapter_path(models_dir: str | Path, entry: dict) -> Path:
    return (Path(models_dir) / entry["path"]).resolve()


def _base_model(entry: dict):
    """The untrained model an adapter goes on, as its kind loads it (`Task.untrained_model`)."""
    return task_named(entry.get("task_type")).untrained_model(entry)


def load(models_dir: str | Path, task: str):
    """(PeftModel in eval mode, tokenizer, entry): `task`'s adapter, named `task`, on a fresh base model."""
    entry = get(models_dir, task)
    if entry["approach"] not in task_named(entry.get("task_type")).adapter_approaches:
        raise ValueError(f"task '{task}' holds a {entry['approach']} model, not an adapter")
    path = adapter_path(models_dir, entry)
    model = PeftModel.from_pretrained(_base_model(entry), path, adapter_name=task)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path), entry


def switch(model: PeftModel, models_dir: str | Path, task: str) -> dict:
    """Make `task`'s adapter the active one on `model` (loaded by `load`), loading it on first use.
    The adapters must share the base model (and, for classification, the number of labels)."""
    entry = get(models_dir, task)
    current = get(models_dir, model.active_adapter)
    if (entry["base"], entry["task_type"]) != (current["base"], current["task_type"]):
        raise ValueError(f"task '{task}' was trained on {entry['base_model']}, the loaded model is "
                         f"{current['base_model']}; load('{task}') instead")
    if len(entry["labels"] or []) != len(current["labels"] or []):
        raise ValueError(f"task '{task}' has {len(entry['labels'])} labels, the loaded head has "
                         f"{len(current['labels'])}; load('{task}') instead")
    if task not in model.peft_config:
        model.load_adapter(adapter_path(models_dir, entry), adapter_name=task)
    model.set_adapter(task)
    if entry["labels"]:  # the head's label names follow the adapter
        model.config.id2label = dict(enumerate(entry["labels"]))
        model.config.label2id = {label: i for i, label in enumerate(entry["labels"])}
    model.eval()
    return entry


def merge(models_dir: str | Path, task: str, out_dir: str | Path) -> Path:
    """Fold `task`'s LoRA weights into its base model and save the result as a plain transformers model
    (safetensors, config, tokenizer) in `out_dir`, loadable without PEFT."""
    model, tokenizer, entry = load(models_dir, task)
    merged = model.merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "merged_from.json").write_text(json.dumps(entry, indent=2))
    return out_dir
