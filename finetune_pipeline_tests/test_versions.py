"""Versions and rollback (issue 35): every publication of the splits and of an adapter is kept as a version
(time + content digest, run id), exports/splits and models/<name> name the current one, `rollback` makes an
older one current atomically and byte for byte, and erasure reaches every kept version."""

import json
import os

import polars as pl
import pytest

from finetune_pipeline import exports, versions
from finetune_pipeline.atomic import write_parquet, write_text
from finetune_pipeline.defs.cli import main
from finetune_pipeline.layout import DataRoot

CARD = "---\npretty_name: t\n---\n\n# t\n\n(no description)\n"


def _frame(n: int, label_of=lambda i: "billing" if i % 2 else "shipping", prefix="r") -> pl.DataFrame:
    splits = ["train"] * 6 + ["validation"] * 2 + ["test"] * 2
    return pl.DataFrame({
        "record_id": [f"{prefix}{i:03d}" for i in range(n)],
        "text": [f"ticket number {i} about an order" for i in range(n)],
        "label": [label_of(i) for i in range(n)],
        "split": [splits[i % 10] for i in range(n)],
        "group_id": [f"g{i}" for i in range(n)],
        "content_sha256": [f"h{i}" for i in range(n)],
        "augmented_from": [None] * n,
    }, schema_overrides={"augmented_from": pl.String})


def _stage_splits(root: DataRoot, frame: pl.DataFrame, folds: bool = True) -> None:
    """What dataset_splits leaves in staging: the export, its card, the folds."""
    target = exports.export_splits(frame, root.staged(root.splits_export))
    write_text(CARD, target / "README.md")
    if folds:
        write_parquet(frame.select("record_id", pl.lit(0).alias("fold")), root.staged(root.folds))
    else:
        root.staged(root.folds).unlink(missing_ok=True)


def _publish_splits(root: DataRoot, frame: pl.DataFrame, run_id: str, keep: int = 5, folds: bool = True):
    _stage_splits(root, frame, folds)
    return versions.publish(root, versions.SPLITS, root.staged(root.splits_export), run_id=run_id, keep=keep,
                            folds=root.staged(root.folds), data_snapshot=exports.content_digest(frame))


def _bytes(folder) -> dict[str, bytes]:
    """Every file under `folder` (through its link), by relative path: the bytes a reader gets."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _published(root: DataRoot) -> dict[str, bytes]:
    return {**_bytes(root.splits_export), "../folds.parquet": root.folds.read_bytes() if root.folds.exists() else b""}


def test_rollback_after_a_bad_publication_restores_every_file_byte_for_byte(tmp_path, capsys):
    root = DataRoot(tmp_path)
    good, new = _publish_splits(root, _frame(40), "run-good")
    assert new and root.splits_export.is_symlink() and root.folds.is_symlink()
    # the candidates stay where they were, not under the version the link names
    assert root.staged(root.splits_export) == root.storage / "staging" / "exports" / "splits"
    assert root.staged(root.folds) == root.storage / "staging" / "exports" / "folds.parquet"
    before = _published(root)
    assert set(before) >= {"train.jsonl", "validation.jsonl", "test.jsonl", "README.md", "dataset_dict.json",
                           "../folds.parquet"} and any(k.endswith(".arrow") for k in before)

    bad, new = _publish_splits(root, _frame(40, label_of=lambda i: "billing"), "run-bad")  # every label the same
    assert new and bad.version != good.version and versions.current(root, versions.SPLITS) == bad.version
    after_bad = _published(root)
    assert after_bad["train.jsonl"] != before["train.jsonl"]
    assert f"Version: `{bad.version}`" in after_bad["README.md"].decode()

    assert main(["versions", "--data-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    current_rows = [line for line in listed if line.startswith("*")]
    assert len(current_rows) == 1 and bad.version in current_rows[0] and "run-bad" in current_rows[0]
    assert any(good.version in line and "run-good" in line and not line.startswith("*") for line in listed)

    assert main(["rollback", good.version[:21], "--data-dir", str(tmp_path)]) == 0  # a unique prefix
    assert good.version in capsys.readouterr().out
    restored = _published(root)
    assert restored.keys() == before.keys()
    for name, data in before.items():
        assert restored[name] == data, name  # every file, byte for byte
    assert f"Version: `{good.version}` (published {good.published} by run `run-good`" in restored["README.md"].decode()
    assert main(["rollback", "nope", "--data-dir", str(tmp_path)]) == 1
    assert "no kept version 'nope'" in capsys.readouterr().err
    # the datasets loader reads the current version through the link
    from datasets import load_from_disk

    assert load_from_disk(str(root.splits_export))["train"].num_rows == \
        sum(1 for _ in (root.splits_export / "train.jsonl").open())


def test_a_crash_mid_rollback_leaves_the_old_or_the_new_version_current(tmp_path, monkeypatch):
    root = DataRoot(tmp_path)
    first, _ = _publish_splits(root, _frame(30), "run-1")
    old = _published(root)
    second, _ = _publish_splits(root, _frame(30, prefix="s"), "run-2")
    new = _published(root)
    real_replace = os.replace

    def crash_on_pointer(src, dst):
        if os.path.basename(dst) == versions.POINTER:
            raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(versions.os, "replace", crash_on_pointer)
    with pytest.raises(OSError, match="killed"):
        versions.rollback(root, first.version)
    assert _published(root) == new  # the swap never happened: the new version, whole
    monkeypatch.setattr(versions.os, "replace", real_replace)
    versions.rollback(root, first.version)
    assert _published(root) == old
    assert not [p for p in versions.versions_dir(root, versions.SPLITS).iterdir() if p.name.endswith(".link")]
    assert second.version in {v.version for v in versions.kept(root, versions.SPLITS)}


def test_an_unchanged_publication_makes_no_version_and_only_publish_keep_are_kept(tmp_path):
    root = DataRoot(tmp_path)
    first, new = _publish_splits(root, _frame(20), "run-1", keep=2)
    files = _bytes(root.exports)
    again, new_again = _publish_splits(root, _frame(20), "run-2", keep=2)
    assert new and not new_again and again == first and _bytes(root.exports) == files  # nothing written
    made = [_publish_splits(root, _frame(20 + i), f"run-{i + 3}", keep=2)[0] for i in range(1, 4)]
    kept = [v.version for v in versions.kept(root, versions.SPLITS)]
    assert kept == [v.version for v in made[-2:]]  # the newest two; the others deleted
    assert versions.current(root, versions.SPLITS) == made[-1].version
    with pytest.raises(versions.VersionError, match="no kept version"):
        versions.rollback(root, first.version)
    # the current version survives pruning even when it is the oldest
    versions.rollback(root, made[-2].version)
    newest, _ = _publish_splits(root, _frame(50), "run-9", keep=1)
    assert [v.version for v in versions.kept(root, versions.SPLITS)] == [newest.version]
    # a version without folds takes exports/folds.parquet away; rolling back brings the folds back
    nofolds, _ = _publish_splits(root, _frame(60), "run-10", keep=5, folds=False)
    assert not root.folds.exists() and not root.folds.is_symlink()
    versions.rollback(root, newest.version)
    assert pl.read_parquet(root.folds).height == 50


def test_a_folder_published_before_versions_becomes_a_version_of_its_own(tmp_path):
    root = DataRoot(tmp_path)
    _stage_splits(root, _frame(20))
    exports.export_splits(_frame(20), root.splits_export)  # as the pipeline published before versions
    write_text(CARD, root.splits_export / "README.md")
    write_parquet(_frame(20).select("record_id"), root.folds)
    legacy = _published(root)
    newer, _ = _publish_splits(root, _frame(30), "run-1")
    listed = versions.kept(root, versions.SPLITS)
    assert [v.run_id for v in listed] == ["before-versions", "run-1"] and root.splits_export.is_symlink()
    versions.rollback(root, listed[0].version)
    restored = _published(root)
    assert restored.keys() == legacy.keys()
    assert {k: v for k, v in restored.items() if k != "README.md"} == \
        {k: v for k, v in legacy.items() if k != "README.md"}
    card = restored["README.md"].decode().splitlines()  # the card gained its version paragraph, nothing else
    assert [line for line in card if line not in legacy["README.md"].decode().splitlines()] == \
        [f"Version: `{listed[0].version}` (published {listed[0].published} by run `before-versions`; content digest "
         f"`{listed[0].digest[:16]}`). `finetune-pipeline versions` lists the kept versions."]


def test_erasure_reaches_every_kept_split_version(tmp_path):
    root = DataRoot(tmp_path)
    frame = _frame(30)
    erased = frame["record_id"][0]  # in train
    augmented = frame.head(1).with_columns(pl.lit("r999").alias("record_id"), pl.lit(erased).alias("augmented_from"))
    old, _ = _publish_splits(root, pl.concat([frame, augmented]), "run-1")
    new, _ = _publish_splits(root, frame.with_columns(pl.col("text") + " (v2)"), "run-2")
    other = _publish_splits(root, _frame(30, prefix="x"), "run-3")[0]  # holds none of them: untouched
    untouched = _bytes(versions.versions_dir(root, versions.SPLITS) / other.version)
    versions.rollback(root, new.version)

    removed = versions.erase_records(root, [erased], ["ER-1"])
    assert removed == {old.version: 2, new.version: 1}  # the record, and the row augmented from it
    assert _bytes(versions.versions_dir(root, versions.SPLITS) / other.version) == untouched
    from datasets import load_from_disk

    for version in (old, new):
        folder = versions.versions_dir(root, versions.SPLITS) / version.version
        rows = [json.loads(line) for p in (folder / "splits").glob("*.jsonl") for line in p.read_text().splitlines()]
        assert rows and not [r for r in rows if erased in (r["record_id"], r.get("augmented_from"))]
        data = load_from_disk(str(folder / "splits"))
        assert sum(d.num_rows for d in data.values()) == len(rows)
        assert erased not in {r for d in data.values() for r in d["record_id"]}
        assert erased not in pl.read_parquet(folder / "folds.parquet")["record_id"].to_list()
        assert versions.kept(root, versions.SPLITS)[[v.version for v in versions.kept(
            root, versions.SPLITS)].index(version.version)].erased_requests == ("ER-1",)
    assert erased not in (root.splits_export / "train.jsonl").read_text()  # the current one, through the link
    assert versions.erase_records(root, [erased], ["ER-1"]) == {}  # nothing left to remove: nothing rewritten


def _result(snapshot: str, accuracy: float) -> dict:
    return {"approach": "lora", "task": "classification", "base_model": "tiny", "labels": ["billing", "shipping"],
            "test": {"accuracy": accuracy, "macro_f1": accuracy}, "majority_baseline": {"accuracy": 0.5, "macro_f1": 0.3},
            "settings": {}, "trainable_parameters": 10, "data_snapshot": snapshot}


def _publish_adapter(root: DataRoot, name: str, weights: bytes, result: dict, run_id: str):
    """What published_adapter does: the staged candidate kept as a version, registered, made current."""
    from finetune_pipeline.training import registry

    staged = root.staged(root.adapter(name))
    write_text("---\nlibrary_name: peft\n---\n# LoRA adapter: text classification\n\n- Base model: tiny\n",
               staged / "README.md")
    (staged / "adapter_model.safetensors").write_bytes(weights)
    write_text(json.dumps(result), staged / "metrics.json")
    (staged / "checkpoint").mkdir(exist_ok=True)
    (staged / "checkpoint" / "state.bin").write_bytes(b"never published")

    def register(version):
        registry.register(root.models, name, versions.versions_dir(root, versions.ADAPTER, name) / version.version
                          / versions.ADAPTER, result, version=version.version, dataset_version=version.dataset_version)

    return versions.publish(root, versions.ADAPTER, staged, run_id=run_id, keep=5, name=name,
                            data_snapshot=result["data_snapshot"],
                            dataset_version=versions.find_dataset_version(root, result["data_snapshot"]),
                            before_current=register)[0]


def test_adapter_versions_name_their_dataset_version_and_the_registry_keeps_the_history(tmp_path):
    from finetune_pipeline.training import registry

    root = DataRoot(tmp_path)
    frame = _frame(20)
    splits_version, _ = _publish_splits(root, frame, "run-1")
    # a registry written before versions: one entry per task, still read; tickets' folder published in place
    legacy = {"task": "tickets", "path": "tickets", "created": "2025", "metrics": {"test_accuracy": 0.7}}
    root.adapter("tickets").mkdir(parents=True)
    (root.adapter("tickets") / "adapter_model.safetensors").write_bytes(b"legacy weights")
    root.registry.write_text(json.dumps({"old_task": {"task": "old_task", "path": "old_task", "created": "2026"},
                                         "tickets": legacy}))
    assert registry.get(root.models, "old_task")["created"] == "2026"
    assert registry.get(root.models, "tickets") == legacy

    good = _publish_adapter(root, "tickets", b"good weights", _result(exports.content_digest(frame), 0.9), "run-1")
    good_files = _bytes(root.adapter("tickets"))
    assert "checkpoint/state.bin" not in good_files and root.adapter("tickets").is_symlink()
    assert good.dataset_version == splits_version.version
    card = good_files["README.md"].decode()
    assert f"Version: `{good.version}`" in card and f"Trained on dataset version: `{splits_version.version}`" in card
    bad = _publish_adapter(root, "tickets", b"bad weights", _result("unpublished", 0.1), "run-2")
    assert bad.dataset_version == "" and "none kept holds data snapshot `unpublished`" in \
        (root.adapter("tickets") / "README.md").read_text()

    history = json.loads(root.registry.read_text())
    assert isinstance(history["tickets"], list) and [e.get("version") for e in history["tickets"]] == \
        [bad.version, good.version, None]  # newest first; the entry from before versions last
    assert history["old_task"] == [{"task": "old_task", "path": "old_task", "created": "2026"}]
    assert history["tickets"][1]["dataset_version"] == splits_version.version
    assert history["tickets"][1]["path"] == f"versions/tickets/{good.version}/adapter"
    assert registry.get(root.models, "tickets")["version"] == bad.version

    versions.rollback(root, good.version)
    assert _bytes(root.adapter("tickets")) == good_files
    entry = registry.get(root.models, "tickets")  # the registry follows the link, not the order
    assert entry["version"] == good.version and entry["metrics"]["test_accuracy"] == 0.9
    assert registry.adapter_path(root.models, entry) == root.adapter("tickets").resolve()
    assert [e["task"] for e in registry.list_adapters(root.models)] == ["old_task", "tickets"]
    # the folder from before versions was adopted as a version; rolling back to it brings its entry back
    adopted = versions.kept(root, versions.ADAPTER, "tickets")[0]
    assert adopted.run_id == "before-versions"
    versions.rollback(root, adopted.version)
    assert (root.adapter("tickets") / "adapter_model.safetensors").read_bytes() == b"legacy weights"
    assert registry.get(root.models, "tickets") == legacy


def test_the_end_to_end_run_publishes_versions_that_name_each_other(sample_run, capsys):
    """The one real run: published_splits and published_adapter made one version each, the adapter's card and
    registry entry name the split version it was trained on, and `versions` lists both as current."""
    root = DataRoot(sample_run[0])
    [splits_version] = versions.kept(root, versions.SPLITS)
    [adapter_version] = versions.kept(root, versions.ADAPTER, "lora_adapter")
    assert root.splits_export.resolve() == (versions.versions_dir(root, versions.SPLITS) / splits_version.version
                                            / "splits").resolve()
    assert splits_version.run_id == adapter_version.run_id and splits_version.data_snapshot
    metrics = json.loads((root.adapter("lora_adapter") / "metrics.json").read_text())
    assert adapter_version.data_snapshot == metrics["data_snapshot"] == splits_version.data_snapshot
    assert adapter_version.dataset_version == splits_version.version
    assert f"Version: `{splits_version.version}`" in (root.splits_export / "README.md").read_text()
    assert f"Trained on dataset version: `{splits_version.version}`" in \
        (root.adapter("lora_adapter") / "README.md").read_text()
    [entry] = json.loads(root.registry.read_text())["lora_adapter"]
    assert (entry["version"], entry["dataset_version"]) == (adapter_version.version, splits_version.version)
    assert main(["versions", "--data-dir", str(root.path)]) == 0
    current_rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("*")]
    assert len(current_rows) == 2 and splits_version.version in current_rows[1]  # the adapter's trained-on column
