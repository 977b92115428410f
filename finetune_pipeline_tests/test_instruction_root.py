"""An instruction data root through the whole Dagster pipeline: conversations in three formats (OpenAI
messages in JSONL, ShareGPT in a JSON list, Alpaca in CSV) with personal data planted in every kind of
turn, a malformed row and a stray document. Every blocking check passes, the adapter is trained on a tiny
local causal LM, and no planted value reaches the exports, the models or Dagster's event log."""

import csv
import json
from pathlib import Path

import dagster as dg
import pytest

from finetune_pipeline.definitions import definitions_for
from finetune_pipeline.layout import DataRoot

CARD, EMAIL, PHONE = "4111 1111 1111 1111", "jane.doe@example.com", "+44 20 7946 0958"
PLANTED = (CARD, "4111111111111111", EMAIL, PHONE)

PRODUCTS = ["espresso machine", "standing desk", "road bike", "air purifier", "robot vacuum", "rice cooker",
            "noise cancelling headphones", "garden hose reel", "electric kettle", "office chair", "tent",
            "sewing machine"]
PROBLEMS = ["arrived with a cracked lid", "makes a grinding noise at start-up", "will not switch on after charging",
            "is missing two screws from the box", "shows error code seven on the display",
            "leaks water onto the counter", "wobbles although the floor is level", "smells of burnt plastic",
            "stops after ten minutes of use", "came in the wrong colour", "has a scratch on the front panel",
            "lost its warranty card in the post"]
FIXES = ["Unplug it for a full minute, then hold the power button for five seconds before you try again.",
         "Send us a photo of the part and we will post a replacement within three working days.",
         "Tighten the two bolts under the base with the hex key from the box, then test it once more.",
         "Run the cleaning cycle twice with plain water; the noise usually disappears after that.",
         "Return it with the prepaid label from your order page and we refund you as soon as it arrives.",
         "Check that the filter sits flat in its slot; a tilted filter causes exactly this behaviour."]


def _exchange(i: int) -> tuple[str, str]:
    product, problem = PRODUCTS[i % len(PRODUCTS)], PROBLEMS[(i * 5 + i // len(PRODUCTS)) % len(PROBLEMS)]
    question = f"My {product} {problem}. What should I do before I send it back to you?"
    answer = f"{FIXES[(i + i // len(PRODUCTS)) % len(FIXES)]} If the {product} still {problem.split(' ', 1)[1]}, reply here."
    return question, answer


def _write_root(root: Path, base_model: str) -> None:
    raw = DataRoot(root).raw
    raw.mkdir(parents=True)
    with (raw / "chats.jsonl").open("w") as handle:
        for i in range(12):
            question, answer = _exchange(i)
            turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            if i == 0:  # a multi-turn conversation with personal data in the system turn and a middle turn
                turns = [{"role": "system", "content": f"You are the helpdesk. Escalate to {EMAIL} if needed."},
                         {"role": "user", "content": f"Call me on {PHONE} about my order please, it is late."},
                         {"role": "assistant", "content": "Of course, a colleague will call you this afternoon."},
                         *turns]
            if i == 1:  # in the answer
                turns[1]["content"] += f" The refund goes back to the card {CARD}."
            handle.write(json.dumps({"messages": turns}) + "\n")
        handle.write("{this line is not json\n")
        handle.write(json.dumps({"messages": [{"role": "user", "content": "Anyone there?"}]}) + "\n")
    sharegpt = []
    for i in range(12, 24):
        question, answer = _exchange(i)
        sharegpt.append({"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]})
    (raw / "sharegpt.json").write_text(json.dumps(sharegpt))
    with (raw / "alpaca.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "input", "output"])
        for i in range(24, 36):
            question, answer = _exchange(i)
            writer.writerow([question, f"Customer e-mail: {EMAIL}" if i == 24 else "", answer])
    (raw / "notes.txt").write_text("Internal note: the spring catalogue goes to print next Tuesday, please "
                                   "send corrections before Friday.\n")
    (root / "finetune.yaml").write_text(json.dumps({
        "task": "instruction",
        "privacy": {"detector": "patterns"},
        "checks": {"min_records": 10},
        "training": {"instruction_base_model": base_model, "epochs": 2, "batch_size": 8,
                     "instruction_max_length": 96},
    }))


@pytest.fixture(scope="module")
def instruction_run(tmp_path_factory):
    from finetune_pipeline_tests.test_instruction import tiny_llama_folder

    base = tmp_path_factory.mktemp("instruction_root")
    model = tiny_llama_folder(base / "model", [" ".join(_exchange(i)) for i in range(36)])
    root = base / "data"
    _write_root(root, model)
    instance = dg.DagsterInstance.ephemeral()
    result = definitions_for(DataRoot(root)).resolve_job_def("refresh_all").execute_in_process(
        instance=instance, raise_on_error=False)
    return root, instance, result


def test_every_stage_and_check_passes(instruction_run):
    root, _, result = instruction_run
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    evaluations = [e.asset_check_evaluation_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    failed = [(ev.check_name, ev.description) for ev in evaluations
              if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR]
    assert evaluations and failed == []
    layout = DataRoot(root)
    assert (layout.adapter("lora_adapter") / "adapter_model.safetensors").exists()
    metrics = json.loads((layout.adapter("lora_adapter") / "metrics.json").read_text())
    assert metrics["task"] == "instruction" and metrics["test"]["loss"] < metrics["base_model_test"]["loss"]


def test_bad_rows_and_documents_are_rejects_with_reasons(instruction_run):
    import polars as pl

    root, _, _ = instruction_run
    rejects = pl.read_parquet(DataRoot(root).rejects_export)
    reasons = dict(rejects.group_by("reason").len().iter_rows())
    assert reasons.get("not_a_conversation") == 1 and reasons.get("malformed_row") == 1
    assert reasons.get("malformed_conversation") == 1


def test_no_planted_value_in_exports_models_or_the_event_log(instruction_run):
    import datasets
    import polars as pl

    root, instance, result = instruction_run
    layout = DataRoot(root)
    exported = [p for folder in (layout.exports, layout.models) for p in folder.rglob("*") if p.is_file()]
    leaks = [(p.name, v) for p in exported for v in PLANTED if v.encode() in p.read_bytes()]
    assert leaks == []
    events = " ".join(repr(e) for e in instance.all_logs(result.run_id))  # messages, metadata, check results
    assert "rows_rejected" in events  # the metadata is in what is searched
    assert not [v for v in PLANTED if v in events]
    splits = datasets.load_from_disk(str(layout.splits_export))
    rows = sum(splits[name].num_rows for name in splits)
    rejects = pl.read_parquet(layout.rejects_export)
    later = rejects.filter(pl.col("stage") != "raw_corpus").height
    assert rows >= 30 and rows + later == 36  # every good conversation is in a split or a reject
    multi = [m for name in splits for m in splits[name]["messages"] if len(m) > 2]
    assert multi and [t["role"] for t in multi[0]] == ["system", "user", "assistant", "user", "assistant"]
