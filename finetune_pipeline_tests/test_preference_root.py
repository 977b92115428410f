"""The shipped preference example root (`examples/preference/`) through the whole Dagster pipeline: its base
model built from its own text by `finetune-pipeline build-base-model`, every blocking check passing, every
malformed row a reject with its reason, every pair in a split or a reject, pairs with one prompt in one split,
DPO's adapter ranking the test pairs above the base model's chance, no planted personal value (truth.json) in
the exports, the models, Dagster's storage or its logs, and a train export that `trl.DPOTrainer` takes as it
is. The run is the example's, made cheaper (one epoch)."""

import json
import math
import shutil
from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.defs import cli
from finetune_pipeline.definitions import definitions_for
from finetune_pipeline.layout import DataRoot
from finetune_pipeline_tests.conftest import OUTPUTS, REPO

EXAMPLE = REPO / "examples" / "preference"
TRUTH = json.loads((EXAMPLE / "truth.json").read_text())  # beside raw/: never read as data, never scanned
PLANTED = sorted({p["value"] for p in TRUTH["planted_pii"]})
SPLIT_NAMES = ("train", "validation", "test")


def _copy_root(dest: Path) -> Path:
    """The example root without the pipeline's outputs (the built base model among them)."""
    shutil.copytree(EXAMPLE, dest, ignore=lambda folder, names: OUTPUTS & set(names) if Path(folder) == EXAMPLE
                    else set())
    return dest


def _failed_checks(result) -> list:
    evaluations = [e.asset_check_evaluation_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluations
    return [(ev.check_name, ev.description) for ev in evaluations
            if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR]


def _split_rows(root: Path) -> list[dict]:
    folder = DataRoot(root).splits_export
    return [{**json.loads(line), "_file": name} for name in SPLIT_NAMES
            for line in (folder / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("preference_example")
    root = _copy_root(base / "root")
    settings = (root / "finetune.yaml").read_text()
    assert "    epochs: 2\n" in settings
    (root / "finetune.yaml").write_text(settings.replace("    epochs: 2\n", "    epochs: 1\n"))  # keep it cheap
    assert cli.main(["build-base-model", "--data-dir", str(root)]) == 0
    (base / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(base / "dagster_home"))
    result = definitions_for(DataRoot(root)).resolve_job_def("refresh_all").execute_in_process(
        instance=instance, raise_on_error=False)
    return root, base / "dagster_home", instance, result


def test_every_stage_and_check_passes_and_the_adapter_prefers_the_chosen_answers(example_run):
    root, _, _, result = example_run
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    assert _failed_checks(result) == []
    adapter = DataRoot(root).adapter("lora_adapter")
    assert (adapter / "adapter_model.safetensors").exists() and not list(adapter.glob("*.bin"))
    metrics = json.loads((adapter / "metrics.json").read_text())
    test, base = metrics["test"], metrics["base_model_test"]
    assert metrics["task"] == "preference" and metrics["approach"] == "dpo"
    assert metrics["base_model"] == str(root / ".pipeline" / "base_model")  # relative path: under the root
    assert test["pairs"] == metrics["split_sizes"]["test"] > 0
    assert test["preference_accuracy"] > base["preference_accuracy"] == 0.5 and test["reward_margin"] > 0
    assert 0 <= test["likelihood_accuracy"] <= 1 and 0 <= base["likelihood_accuracy"] <= 1
    assert not metrics["nan_loss"] and all(math.isfinite(e["train_loss"]) for e in metrics["history"])
    card = (adapter / "README.md").read_text()
    assert "DPO" in card and f"{test['preference_accuracy']:.3f}" in card
    registry = json.loads(DataRoot(root).registry.read_text())
    entry = registry["lora_adapter"] if "lora_adapter" in registry else next(iter(registry.values()))
    assert "test_preference_accuracy" in json.dumps(entry)


def test_malformed_rows_are_rejects_naming_their_reason(example_run):
    import polars as pl

    root, _, _, _ = example_run
    rejects = pl.read_parquet(DataRoot(root).rejects_export).filter(pl.col("stage") == "raw_corpus")
    found = {(uri.removeprefix("raw/"), locator.removeprefix("id=")): reason
             for uri, locator, reason in rejects.select("source_uri", "locator", "reason").iter_rows()}
    for bad in TRUTH["malformed"]:
        if bad["id"].startswith("("):  # the broken JSON line has no id
            assert bad["reason"] in {r for (f, _), r in found.items() if f == bad["file"]}
        else:
            assert found.get((bad["file"], bad["id"])) == bad["reason"], bad
    assert rejects.height == len(TRUTH["malformed"])
    assert rejects["detail"].str.len_chars().min() > 40  # each names the fix


def test_every_pair_is_in_a_split_or_a_reject_and_one_prompt_stays_in_one_split(example_run):
    import polars as pl

    root, _, _, _ = example_run
    rows = _split_rows(root)
    rejects = pl.read_parquet(DataRoot(root).rejects_export).filter(pl.col("stage") != "raw_corpus")
    placed = [(r["source_uri"], r["locator"]) for r in rows] + list(rejects.select("source_uri", "locator").iter_rows())
    assert len(placed) == len(set(placed))  # nowhere twice
    counts = TRUTH["counts"]
    # every conflicting answer but the first of its prompt became a pair
    assert sum(r["source_uri"] == "raw/conflicts.jsonl" for r in rows) + rejects.filter(
        pl.col("source_uri") == "raw/conflicts.jsonl").height == counts["conflict_rows"] - counts["conflict_prompts"]
    assert sum(r["source_uri"] == "raw/pairs_plain.jsonl" for r in rows) + rejects.filter(
        pl.col("source_uri") == "raw/pairs_plain.jsonl").height == counts["pairs_plain"]
    assert {r["_file"] for r in rows} == set(SPLIT_NAMES)
    split_of: dict[str, set] = {}
    for r in rows:
        split_of.setdefault(r["prompt_text"], set()).add(r["_file"])
    assert max(len(s) for s in split_of.values()) == 1  # pairs that share a prompt share a split
    assert any(sum(r["prompt_text"] == p for r in rows) > 1 for p in split_of)  # and there are such pairs


def test_no_planted_value_in_exports_models_dagster_storage_or_logs(example_run):
    root, dagster_home, instance, result = example_run
    layout = DataRoot(root)
    folders = (layout.exports, layout.models, root / ".pipeline", dagster_home)
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files) and any(p.name == "tokenizer.json" for p in files)
    leaks = [(str(p), v) for p in files for v in PLANTED if v.encode() in p.read_bytes()]
    assert leaks == []
    events = " ".join(repr(e) for e in instance.all_logs(result.run_id))  # messages, metadata, check results
    assert "dpo: test" in events and "rows_rejected" in events  # what is searched holds the run's lines
    assert [v for v in PLANTED if v in events] == []
    # the values were there to find: the raw files hold every one of them
    raw = b"".join(p.read_bytes() for p in (root / "raw").rglob("*") if p.is_file())
    assert len(PLANTED) > 20 and [v for v in PLANTED if v.encode() not in raw] == []


def test_the_exported_pairs_are_trls_preference_format_and_dpo_trainer_takes_them_as_they_are(example_run, tmp_path):
    """The train export read back with `datasets` and trained one step by `trl.DPOTrainer` with a LoRA
    peft_config, in the conversational form as exported and in the plain form (its three text columns)."""
    import logging

    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    root, _, _, _ = example_run
    model_dir = root / ".pipeline" / "base_model"
    train = datasets.load_dataset("json", data_files=str(DataRoot(root).splits_export / "train.jsonl"),
                                  split="train")
    row = train[0]
    assert row["prompt"][-1]["role"] == "user" and [t["role"] for t in row["chosen"]] == ["assistant"]
    assert row["chosen"][-1]["content"] == row["chosen_text"] and row["prompt"][-1]["content"] == row["prompt_text"]
    plain = (train.select_columns(["prompt_text", "chosen_text", "rejected_text"])
             .rename_columns({"prompt_text": "prompt", "chosen_text": "chosen", "rejected_text": "rejected"}))
    logging.getLogger("trl").setLevel(logging.ERROR)
    for form, dataset in (("conversational", train), ("plain", plain)):
        args = DPOConfig(output_dir=str(tmp_path / form), max_steps=1, per_device_train_batch_size=4,
                         max_length=256, learning_rate=1e-3, report_to="none", use_cpu=True, bf16=False,
                         save_strategy="no", seed=0, dataloader_num_workers=0)
        trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=dataset,
                             processing_class=AutoTokenizer.from_pretrained(model_dir),
                             peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))
        assert trainer.train_dataset.num_rows == train.num_rows, form
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
        output = trainer.train()
        assert output.global_step == 1 and math.isfinite(output.training_loss), form
        assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if n in before), form
