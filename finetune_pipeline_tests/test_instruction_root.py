"""The shipped instruction example root (`examples/instruction/`) through the whole Dagster pipeline: its base
model built from its own conversations by `finetune-pipeline build-base-model`, every blocking check passing,
every malformed row and refusal a reject with its reason, every conversation in a split or a reject, no
planted personal value in the exports, the models, Dagster's storage or its logs, and a `messages` export
that TRL's SFTTrainer prepares as is. Then a copy of the root with other conversations in its raw/, run
cheaply (one epoch): the root is not tied to its own data."""

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.defs import cli
from finetune_pipeline.definitions import definitions_for
from finetune_pipeline.layout import DataRoot
from finetune_pipeline_tests.conftest import OUTPUTS, REPO

EXAMPLE = REPO / "examples" / "instruction"


def _generator():
    """scripts/make_instruction_example.py, which knows what the example holds and where."""
    spec = importlib.util.spec_from_file_location("make_instruction_example",
                                                  REPO / "scripts" / "make_instruction_example.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
EX = GENERATOR.example()
PLANTED = GENERATOR.planted_values()
FILES = {"openai": "raw/chats.jsonl", "sharegpt": "raw/sharegpt.json", "alpaca": "raw/alpaca.csv"}


def _copy_root(dest: Path) -> Path:
    """The example root without the pipeline's outputs (the built base model among them)."""
    shutil.copytree(EXAMPLE, dest, ignore=lambda folder, names: OUTPUTS & set(names) if Path(folder) == EXAMPLE
                    else set())
    return dest


def _run(root: Path, tmp: Path):
    """build-base-model, then every asset in process, on an instance whose storage lies in `tmp`."""
    assert cli.main(["build-base-model", "--data-dir", str(root)]) == 0
    tmp.mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(tmp))
    result = definitions_for(DataRoot(root)).resolve_job_def("refresh_all").execute_in_process(
        instance=instance, raise_on_error=False)
    return instance, result


def _failed_checks(result) -> list:
    evaluations = [e.asset_check_evaluation_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluations
    return [(ev.check_name, ev.description) for ev in evaluations
            if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("instruction_example")
    root = _copy_root(base / "root")
    instance, result = _run(root, base / "dagster_home")
    return root, base / "dagster_home", instance, result


def test_the_committed_example_is_what_the_script_writes(tmp_path):
    GENERATOR.write(tmp_path)
    for name in EX.files:
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name
    assert len(EX.conversations) >= 200 and EX.multi_turn and EX.refusals and EX.duplicates and EX.conflicts
    assert any(c.alpaca_input for c in EX.conversations) and \
        any(t["role"] == "system" for c in EX.conversations for t in c.turns)


def test_every_stage_and_check_passes_and_the_adapter_beats_the_base_model(example_run):
    root, _, _, result = example_run
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    assert _failed_checks(result) == []
    layout = DataRoot(root)
    assert (root / ".pipeline" / "base_model" / "model.safetensors").exists()  # built from the root's own text
    adapter = layout.adapter("lora_adapter")
    assert (adapter / "adapter_model.safetensors").exists()
    metrics = json.loads((adapter / "metrics.json").read_text())
    assert metrics["task"] == "instruction" and metrics["test"]["loss"] < metrics["base_model_test"]["loss"]
    assert metrics["base_model"] == str(root / ".pipeline" / "base_model")  # relative path: under the root
    generation = metrics["generation"]
    assert generation["samples"] == 8 and len(generation["examples"]) == 3
    assert 0 <= metrics["base_model_test"]["rouge_l"] <= 1 and 0 <= metrics["test"]["rouge_l"] <= 1
    card = (adapter / "README.md").read_text()
    assert "ROUGE-L F1" in card and generation["examples"][0]["reference"][:40] in card


def test_malformed_rows_and_refusals_are_rejects_with_their_reason(example_run):
    import polars as pl

    root, _, _, _ = example_run
    rejects = pl.read_parquet(DataRoot(root).rejects_export)
    found = {locator.removeprefix("id="): reason for locator, reason in
             rejects.select("locator", "reason").iter_rows() if locator}
    for row, reason in EX.malformed.items():
        assert found.get(row) == reason, row
    assert rejects.filter(pl.col("stage") == "raw_corpus").height == len(EX.malformed)
    for row in EX.refusals:
        assert found.get(row) == "refusal", row
    # one of each duplicated pair goes (the one seen first stays)
    assert rejects.filter(pl.col("reason") == "exact_duplicate").height == len(EX.duplicates)


def test_every_conversation_is_in_a_split_or_a_reject(example_run):
    import polars as pl

    root, _, _, _ = example_run
    layout = DataRoot(root)
    rejects = pl.read_parquet(layout.rejects_export).filter(pl.col("stage") != "raw_corpus")
    split_rows = [json.loads(line) for name in ("train", "validation", "test")
                  for line in (layout.splits_export / f"{name}.jsonl").read_text().splitlines()]
    placed = [(r["source_uri"], r["locator"]) for r in split_rows] + list(rejects.select("source_uri", "locator")
                                                                         .iter_rows())
    assert len(placed) == len(set(placed))  # nowhere twice
    assert sorted(placed) == sorted((FILES[c.fmt], f"id={c.id}") for c in EX.conversations)
    assert len(split_rows) >= 180  # the rest: duplicates, refusals, conflicts held for review


def test_no_planted_value_in_exports_models_dagster_storage_or_logs(example_run):
    root, dagster_home, instance, result = example_run
    layout = DataRoot(root)
    folders = (layout.exports, layout.models, root / ".pipeline" / "base_model", dagster_home, layout.tracking_store)
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)  # Dagster's run and event storage is among what is searched
    assert (layout.tracking_store / "mlflow.db").is_file()  # and the MLflow store (runs, model cards, adapter)
    leaks = [(str(p), v) for p in files for v in PLANTED if v.encode() in p.read_bytes()]
    assert leaks == []
    events = " ".join(repr(e) for e in instance.all_logs(result.run_id))  # messages, metadata, check results
    assert "rows_rejected" in events and "generation (adapter)" in events  # what is searched holds them
    assert [v for v in PLANTED if v in events] == []
    # the values were there to find: the raw files hold every one of them as planted
    raw = b"".join((root / name).read_bytes() for name in FILES.values())
    as_planted = GENERATOR.NAMES + GENERATOR.EMAILS + GENERATOR.PHONES + GENERATOR.CARDS
    assert [v for v in as_planted if v.encode() not in raw] == []


def test_multi_turn_conversations_keep_every_turn_in_the_messages_export(example_run):
    import datasets

    root, _, _, _ = example_run
    splits = datasets.load_from_disk(str(DataRoot(root).splits_export))
    exported = {row["locator"]: row["messages"] for name in splits for row in splits[name]}
    kept = [c for c in EX.multi_turn if f"id={c.id}" in exported]
    assert len(kept) >= len(EX.multi_turn) - 3
    for conversation in kept:
        turns = exported[f"id={conversation.id}"]
        assert [t["role"] for t in turns] == [t["role"] for t in conversation.turns]
        assert all(t["content"].strip() for t in turns)
    row = next(r for name in splits for r in splits[name] if len(r["messages"]) > 2)
    assert row["completion"] == row["messages"][-1:] and row["prompt_messages"] == row["messages"][:-1]


def test_trl_sft_trainer_prepares_the_exports_as_they_are(example_run, tmp_path):
    """TRL's SFTTrainer takes the `messages` split (conversational) and `prompt_messages` + `completion`
    (conversational prompt-completion) without any conversion of ours, and trains a step on them."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    root, _, _, _ = example_run
    model_dir = root / ".pipeline" / "base_model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = datasets.load_from_disk(str(DataRoot(root).splits_export))["train"]
    forms = {"messages": train.select_columns(["messages"]),
             "prompt-completion": train.select_columns(["prompt_messages", "completion"])
             .rename_column("prompt_messages", "prompt")}
    for form, dataset in forms.items():
        args = SFTConfig(output_dir=str(tmp_path / form), max_steps=1, per_device_train_batch_size=4,
                         max_length=256, report_to=[], save_strategy="no", use_cpu=True)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                             train_dataset=dataset, processing_class=tokenizer)
        prepared = trainer.train_dataset
        assert prepared.num_rows == train.num_rows and "input_ids" in prepared.column_names, form
        first = tokenizer.decode(prepared[0]["input_ids"])
        assert all(t["content"][:30] in first for t in train[0]["messages"]), form  # every turn rendered
        assert trainer.train().training_loss > 0, form


def _other_conversations(raw: Path) -> int:
    """Conversations unlike the example's, in the three formats; returns how many."""
    topics = ["a leaking dishwasher", "a cracked phone screen", "a late train refund", "a lost library card",
              "a noisy neighbour's dog", "a broken bicycle chain", "a cold radiator", "a delayed passport",
              "a faulty smoke alarm", "an overcharged phone bill", "a stuck car window", "a mouldy tent",
              "a missing parcel of seeds", "a jammed printer", "a wobbly bookcase", "a flat tyre"]
    actions = ["Write down what happened and when, then contact the company in writing.",
               "Check the manual first: most models have a reset described on the last page.",
               "Take photos before you touch anything, so a claim has evidence.",
               "Ask a neighbour or friend who has dealt with the same thing.",
               "Call the helpline early in the morning, when queues are shortest."]
    questions = ["What is the first thing to do about {}?", "Can I sort out {} myself, or do I need help?",
                 "Who should I write to about {}?", "How long does it usually take to deal with {}?"]
    pairs = [(questions[i // len(topics)].format(topic),
              f"For {topic}, start simply. {actions[i % len(actions)]} Case reference {i * 7 + 3}.")
             for i, topic in enumerate(topics * 4)]
    with (raw / "chats.jsonl").open("w") as handle:
        for question, answer in pairs[:24]:
            handle.write(json.dumps({"messages": [{"role": "user", "content": question},
                                                  {"role": "assistant", "content": answer}]}) + "\n")
        handle.write('{"messages": [oops\n')
    (raw / "sharegpt.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": q},
                                                                      {"from": "gpt", "value": a}]}
                                                   for q, a in pairs[24:44]]))
    with (raw / "alpaca.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "input", "output"])
        for question, answer in pairs[44:]:
            writer.writerow([question, "Reply in two sentences.", answer])
    return len(pairs)


def test_a_copy_of_the_root_with_other_conversations_runs_on_a_model_built_from_them(tmp_path):
    root = _copy_root(tmp_path / "root")
    shutil.rmtree(root / "raw")
    (root / "raw").mkdir()
    count = _other_conversations(root / "raw")
    settings = (root / "finetune.yaml").read_text()
    # keep it cheap: one epoch, two generations
    (root / "finetune.yaml").write_text(settings.replace("epochs: 4", "epochs: 1")
                                        .replace("generation_samples: 8", "generation_samples: 2"))
    _, result = _run(root, tmp_path / "dagster_home")
    assert result.success and _failed_checks(result) == []
    tokenizer = json.loads((root / ".pipeline" / "base_model" / "tokenizer.json").read_text())
    assert "Ġpassport" in tokenizer["model"]["vocab"]  # learned from this root's text, not the example's
    assert "Ġlavender" not in tokenizer["model"]["vocab"]
    splits = [line for name in ("train", "validation", "test")
              for line in (DataRoot(root).splits_export / f"{name}.jsonl").read_text().splitlines()]
    assert 0 < len(splits) <= count


def _instruction_root(root: Path, training: dict) -> Path:
    (root / "raw").mkdir(parents=True)
    (root / "finetune.yaml").write_text(json.dumps({"task": "instruction", "training": training}))
    return root


def test_a_missing_real_model_folder_is_a_clear_error_never_a_built_toy_model(tmp_path, capsys):
    root = _instruction_root(tmp_path / "root", {"instruction": {"base_model": "models/llama-3.2-1b"}})
    assert cli.main(["build-base-model", "--data-dir", str(root)]) == 1
    error = capsys.readouterr().err
    assert "training.instruction.base_model: models/llama-3.2-1b not found" in error
    assert "training.build_base_model.enabled" in error  # says what would build one, and that it is a toy
    assert not (root / "models").exists() and not any((root / "raw").iterdir())
    # an absolute path too, whatever the hub settings
    absent = tmp_path / "nowhere" / "model"
    root = _instruction_root(tmp_path / "root2", {"instruction": {"base_model": str(absent)}})
    assert cli.main(["build-base-model", "--data-dir", str(root)]) == 1 and not absent.exists()


def test_build_base_model_leaves_classification_roots_and_existing_folders_alone(tmp_path, capsys):
    classification = tmp_path / "classification"
    (classification / "raw").mkdir(parents=True)
    assert cli.main(["build-base-model", "--data-dir", str(classification)]) == 0
    assert sorted(p.name for p in classification.iterdir()) == ["raw"]
    existing = tmp_path / "root" / ".pipeline" / "base_model"
    existing.mkdir(parents=True)
    (existing / "config.json").write_text("{}")
    root = _instruction_root(tmp_path / "root", {"instruction": {"base_model": ".pipeline/base_model"},
                                                 "build_base_model": {"enabled": True}})
    assert cli.main(["build-base-model", "--data-dir", str(root)]) == 0
    assert [p.name for p in existing.iterdir()] == ["config.json"]  # not rebuilt
    assert capsys.readouterr().out == ""


def test_a_relative_base_model_is_found_under_the_data_root_wherever_the_root_lies(tmp_path, monkeypatch):
    from finetune_pipeline.settings import load_settings

    root = _instruction_root(tmp_path / "root", {"instruction": {"base_model": "my_model"}})
    monkeypatch.chdir(tmp_path)
    assert load_settings(root).training.instruction.base_model == "my_model"  # not there: as given
    (root / "my_model").mkdir()
    assert load_settings(root).training.instruction.base_model == str(root / "my_model")


def test_each_planted_conflict_waits_in_the_review_queue(example_run):
    import polars as pl

    root, _, _, _ = example_run
    layout = DataRoot(root)
    rejects = pl.read_parquet(layout.rejects_export).with_columns(
        pl.col("locator").str.strip_prefix("id=").alias("id"),
        pl.col("detail").str.extract(r"^(conflict-[0-9a-f]{16})").alias("conflict"))
    held = {i: c for i, reason, c in rejects.select("id", "reason", "conflict").iter_rows() if reason == "in_review"}
    tasks = json.loads((layout.review / "tasks.json").read_text())
    queued = {t["data"]["record_id"]: t for t in tasks}
    for copy, original in EX.conflicts:
        assert held.get(copy) and held.get(copy) == held.get(original), (copy, original)
        task = queued[held[copy]]
        assert [o["value"] for o in task["data"]["options"]][-1] == "Drop all"
        assert len(task["data"]["options"]) >= 3  # two answers at least, and Drop all
    assert 'value="$options"' in (layout.review / "label_config.xml").read_text()
