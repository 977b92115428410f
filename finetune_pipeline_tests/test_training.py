"""Classification training: LoRA on the shipped all-MiniLM-L6-v2 (trains, saves in PEFT safetensors format,\nreloads intact), full fine-tuning, feature-based, resume after a kill, the comparison and the registry."""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.classify import train_classifier
from finetune_pipeline.training.lora import load_adapter
from finetune_pipeline_tests.conftest import write_tiny_bert

BILLING = ["I was charged twice for my subscription this month", "the invoice total is wrong, please refund",
           "my credit card payment failed but money was taken", "please cancel the duplicate charge on my bill",
           "why is there an extra fee on my latest invoice", "refund the overcharge on my annual plan"]
SHIPPING = ["my parcel has not arrived after two weeks", "the tracking number shows no movement for days",
            "the courier left my package at the wrong address", "delivery is late and the box arrived damaged",
            "when will my order be shipped to Berlin", "the carrier lost my parcel somewhere in transit"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine two threads per process
    made these tests several times slower (measured 0.4 s vs 2-10 s for a 2-epoch tiny-BERT run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_lora_trains_saves_and_reloads(tmp_path):
    splits = {"train": (BILLING[:4] + SHIPPING[:4], ["billing"] * 4 + ["shipping"] * 4),
              "validation": (BILLING[4:5] + SHIPPING[4:5], ["billing", "shipping"]),
              "test": (BILLING[5:] + SHIPPING[5:], ["billing", "shipping"])}
    cfg = TrainingSettings(epochs=3, batch_size=4, max_length=32, lora={"learning_rate": 2e-3})
    out = tmp_path / "adapter"
    metrics = train_classifier(splits, ["billing", "shipping"], cfg, out, approach="lora", data_snapshot="abc",
                               log=lambda m: None)

    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "README.md", "tokenizer.json"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == cfg.lora.r
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in k for k in weights) and any("classifier" in k for k in weights)  # head saved too
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"] / 10
    assert not metrics["nan_loss"] and metrics["epochs_run"] >= 1
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    # the model card is one the Hub reads: PEFT, base model, training data, and the test metrics
    card = ModelCard.load(out / "README.md")
    assert (card.data.library_name, card.data.base_model) == ("peft", "sentence-transformers/all-MiniLM-L6-v2")
    assert card.data.datasets == ["exports/splits"] and card.data.pipeline_tag == "text-classification"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == \
        {"accuracy": metrics["test"]["accuracy"], "f1": metrics["test"]["macro_f1"]}
    assert {(r.dataset_split, r.dataset_revision) for r in card.data.eval_results} == {("test", "abc")}

    model, tokenizer, labels = load_adapter(out)
    assert labels == ["billing", "shipping"]
    enc = tokenizer(BILLING[5:] + SHIPPING[5:], padding=True, return_tensors="pt")
    with torch.no_grad():
        first = model(**enc).logits
    model2, _, _ = load_adapter(out)
    with torch.no_grad():
        second = model2(**enc).logits
    assert torch.allclose(first, second)  # the head reloads intact, not re-initialised at random
    predictions = first.argmax(-1).tolist()
    assert metrics["test"]["accuracy"] == sum(p == t for p, t in zip(predictions, [0, 1])) / 2


# ---- tiny encoder for the slower paths: same tokenizer as MiniLM, a 2-layer 32-wide random BERT ---------

def _splits():
    return {"train": (BILLING[:4] + SHIPPING[:4], ["billing"] * 4 + ["shipping"] * 4),
            "validation": (BILLING[4:5] + SHIPPING[4:5], ["billing", "shipping"]),
            "test": (BILLING[5:] + SHIPPING[5:], ["billing", "shipping"])}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _tiny_cfg(tiny_bert, **overrides):
    fields = dict(base_model=tiny_bert, epochs=3, batch_size=4, max_length=32, lora={"learning_rate": 5e-3},
                  full={"learning_rate": 1e-3}, early_stopping_patience=5)
    return TrainingSettings(**{**fields, **overrides})


def _weights(folder):
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(folder / name)


class Killed(RuntimeError):
    pass


def _kill_after(epoch_to_die):
    def hook(epoch):
        if epoch == epoch_to_die:
            raise Killed(f"simulated kill after epoch {epoch}")
    return hook


@pytest.mark.parametrize("approach", ["lora", "full"])
def test_killed_run_resumes_from_checkpoint_with_identical_result(tiny_bert, tmp_path, approach):
    cfg = _tiny_cfg(tiny_bert)
    labels = ["billing", "shipping"]
    whole = train_classifier(_splits(), labels, cfg, tmp_path / "whole", approach=approach, log=lambda m: None)

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train_classifier(_splits(), labels, cfg, out, approach=approach, log=lambda m: None,
                         on_epoch_end=_kill_after(1))
    assert (out / "checkpoint" / "trainable.safetensors").exists()
    assert not (out / "metrics.json").exists()
    logged = []
    resumed = train_classifier(_splits(), labels, cfg, out, approach=approach, log=logged.append)

    assert resumed["resumed_from_epoch"] == 1 and "resuming" in logged[0]
    assert not any("epoch 1/" in m for m in logged)  # epoch 1 was not trained again
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"] == whole["history"]
    first, second = _weights(tmp_path / "whole"), _weights(out)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not (out / "checkpoint").exists()  # removed once training finished


def test_resume_off_starts_over(tiny_bert, tmp_path):
    cfg = _tiny_cfg(tiny_bert, epochs=2, resume=False)
    with pytest.raises(Killed):
        train_classifier(_splits(), ["billing", "shipping"], cfg, tmp_path, log=lambda m: None,
                         on_epoch_end=_kill_after(1))
    metrics = train_classifier(_splits(), ["billing", "shipping"], cfg, tmp_path, log=lambda m: None)
    assert metrics["resumed_from_epoch"] is None and metrics["epochs_run"] == 2


def test_checkpoint_of_other_data_is_not_resumed(tiny_bert, tmp_path):
    cfg = _tiny_cfg(tiny_bert, epochs=2)
    with pytest.raises(Killed):
        train_classifier(_splits(), ["billing", "shipping"], cfg, tmp_path, log=lambda m: None,
                         on_epoch_end=_kill_after(1))
    changed = {**_splits(), "train": (BILLING[:3] + SHIPPING[:3], ["billing"] * 3 + ["shipping"] * 3)}
    logged = []
    metrics = train_classifier(changed, ["billing", "shipping"], cfg, tmp_path, log=logged.append)
    assert metrics["resumed_from_epoch"] is None and "starting over" in logged[0]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_full_fine_tuning_trains_every_weight_and_saves_a_plain_model(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    metrics = train_classifier(_splits(), ["billing", "shipping"], _tiny_cfg(tiny_bert, epochs=2), tmp_path,
                               approach="full", log=lambda m: None)
    assert metrics["trainable_parameters"] == metrics["total_parameters"]
    assert metrics["learning_rate"] == 1e-3 and not metrics["nan_loss"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert model.config.id2label == {0: "billing", 1: "shipping"}
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "README.md").exists()


def test_feature_based_trains_only_a_linear_layer(tiny_bert, tmp_path):
    from finetune_pipeline.training.feature import train_feature_classifier

    metrics = train_feature_classifier(_splits(), ["billing", "shipping"], _tiny_cfg(tiny_bert), tmp_path,
                                       log=lambda m: None)
    assert metrics["trainable_parameters"] == 2 * 32 + 2  # (labels x hidden) weights + biases
    assert metrics["total_parameters"] > 100 * metrics["trainable_parameters"]
    weights = load_file(tmp_path / "classifier.safetensors")
    assert weights["weight"].shape == (2, 32) and weights["bias"].shape == (2,)
    assert 0 <= metrics["test"]["macro_f1"] <= 1 and metrics["C"] in (0.1, 1.0, 10.0, 100.0)


def test_comparison_reports_every_configured_approach(tiny_bert, tmp_path):
    from finetune_pipeline.reporting import comparison_markdown
    from finetune_pipeline.training.compare import compare_approaches, write_comparison

    cfg = _tiny_cfg(tiny_bert, epochs=1)
    result = compare_approaches(_splits(), ["billing", "shipping"], cfg, tmp_path / "models", log=lambda m: None)
    assert [r["approach"] for r in result["rows"]] == ["lora", "full", "feature"]
    for row in result["rows"]:
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_macro_f1"] <= 1
        assert row["trainable_parameters"] > 0 and row["wall_time_s"] > 0 and row["peak_memory_mb"] > 0
        assert (tmp_path / "models" / row["approach"] / "metrics.json").exists()
    lora, full, feature = result["rows"]
    assert feature["trainable_parameters"] < lora["trainable_parameters"] < full["trainable_parameters"]
    table = comparison_markdown(result)
    assert "majority class" in table and all(a in table for a in ("lora", "full", "feature"))
    paths = write_comparison(result, tmp_path / "exports")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())["rows"][0]["approach"] == "lora"


# ---- the registry ------------------------------------------------------------------------------------

def test_registry_lists_loads_switches_and_merges_with_logits_parity(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune_pipeline.training import registry

    models = tmp_path / "models"
    labels = ["billing", "shipping"]
    for task, seed in (("tickets", 1), ("tickets_v2", 2)):
        cfg = _tiny_cfg(tiny_bert, epochs=1, seed=seed)
        metrics = train_classifier(_splits(), labels, cfg, models / task, approach="lora", data_snapshot=f"snap{seed}",
                                   log=lambda m: None)
        registry.register(models, task, models / task, metrics)
    entries = registry.list_adapters(models)
    assert [e["task"] for e in entries] == ["tickets", "tickets_v2"]
    assert entries[0]["base"] == tiny_bert and entries[0]["data_snapshot"] == "snap1"
    assert entries[0]["approach"] == "lora" and "test_accuracy" in entries[0]["metrics"]

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    enc = tokenizer(BILLING[5:] + SHIPPING[5:], padding=True, return_tensors="pt")
    model, _, entry = registry.load(models, "tickets")
    with torch.no_grad():
        first = model(**enc).logits
        registry.switch(model, models, "tickets_v2")
        switched = model(**enc).logits
        other = registry.load(models, "tickets_v2")[0](**enc).logits
        registry.switch(model, models, "tickets")
        back = model(**enc).logits
    assert not torch.allclose(first, switched)
    assert torch.allclose(switched, other, atol=1e-6) and torch.allclose(back, first, atol=1e-6)
    with pytest.raises(KeyError, match="known: tickets, tickets_v2"):
        registry.get(models, "nope")

    merged_dir = registry.merge(models, "tickets_v2", tmp_path / "merged")
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        assert torch.allclose(merged(**enc).logits, other, atol=1e-4)  # same logits before and after merging


def test_adapters_cli_lists_shows_and_merges(tiny_bert, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    from finetune_pipeline.defs.cli import main
    from finetune_pipeline.training import registry

    metrics = train_classifier(_splits(), ["billing", "shipping"], _tiny_cfg(tiny_bert, epochs=1),
                               tmp_path / "models" / "tickets", approach="lora", data_snapshot="snap", log=lambda m: None)
    registry.register(tmp_path / "models", "tickets", tmp_path / "models" / "tickets", metrics)
    assert main(["adapters", "--data-dir", str(tmp_path), "list"]) == 0
    listed = capsys.readouterr().out
    assert "tickets" in listed and "lora" in listed and "snap" in listed and "test_accuracy" in listed
    assert main(["adapters", "--data-dir", str(tmp_path), "show", "tickets"]) == 0
    assert json.loads(capsys.readouterr().out)["base"] == tiny_bert
    assert main(["adapters", "--data-dir", str(tmp_path), "merge", "tickets", str(tmp_path / "merged")]) == 0
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").config.num_labels == 2
    assert main(["adapters", "--data-dir", str(tmp_path), "show", "nope"]) == 1
    assert "no adapter for task 'nope'" in capsys.readouterr().err


def test_data_card_carries_the_comparison_and_instruction_evaluation():
    import polars as pl

    from finetune_pipeline import reporting
    from finetune_pipeline.records import empty_rejects

    rows = [{"approach": a, "test_accuracy": acc, "test_macro_f1": f1, "trainable_parameters": n, "wall_time_s": t,
             "peak_memory_mb": 900.0, "epochs_run": 2, "device": "cpu", "nan_loss": False}
            for a, acc, f1, n, t in (("lora", 0.9, 0.88, 339_460, 60.0), ("feature", 0.8, 0.79, 1_540, 3.0))]
    comparison = {"task": "classification", "rows": rows, "majority_baseline": {"accuracy": 0.25, "macro_f1": 0.1}}
    card = reporting.data_card([], empty_rejects(), None, {}, None, comparison=comparison)
    assert "## Approach comparison" in card and "| feature | 0.800 | 0.790 | 1,540 | 3.0 | 900 | 2 |" in card
    instruction = {"task": "instruction", "approach": "instruction", "trainable_parameters": 10,
                   "test": {"loss": 1.5, "perplexity": 4.48, "rouge_l": 0.41},
                   "base_model_test": {"loss": 4.0, "perplexity": 54.6, "rouge_l": 0.02}}
    card = reporting.data_card([], empty_rejects(), pl.DataFrame(), {}, instruction)
    assert "| instruction (LoRA) | 1.5000 | 4.48 | 0.410 | 10 |" in card
    assert "| base model | 4.0000 | 54.60 | 0.020 | 0 |" in card
    for scores in (instruction["test"], instruction["base_model_test"]):  # saved before the metric existed
        del scores["rouge_l"]
    assert "| base model | 4.0000 | 54.60 | nan | 0 |" in reporting.data_card([], empty_rejects(), None, {}, instruction)


def test_comparison_reuses_an_approach_already_trained_on_the_splits(tmp_path):
    from finetune_pipeline.training.compare import compare_approaches

    trained = {"approach": "lora", "trainable_parameters": 10, "total_parameters": 100, "wall_time_s": 1.5,
               "peak_memory_mb": 12.0, "epochs_run": 2, "device": "cpu", "nan_loss": False,
               "test": {"accuracy": 0.5, "macro_f1": 0.4}}
    splits = {"train": (["a b c"] * 2, ["x", "y"]), "validation": (["a"], ["x"]), "test": (["b"], ["y"])}
    logs = []
    result = compare_approaches(splits, ["x", "y"], TrainingSettings(), tmp_path, ["lora"], log=logs.append,
                                trained={"lora": trained})
    [row] = result["rows"]
    assert row["test_macro_f1"] == 0.4 and row["wall_time_s"] == 1.5
    assert not (tmp_path / "lora").exists() and "reused" in logs[0]  # nothing was trained again


def test_a_new_head_loads_without_transformers_report_and_missing_encoder_weights_are_named(tmp_path, capfd, caplog):
    import logging
    from pathlib import Path

    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging

    from finetune_pipeline.training.base_model import load_sequence_classifier

    base = write_tiny_bert(tmp_path / "tiny")
    verbosity = hf_logging.get_verbosity()
    with caplog.at_level(logging.WARNING, logger="finetune_pipeline.training.base_model"):
        load_sequence_classifier(base, ["a", "b"])
    printed = "".join(capfd.readouterr())
    assert "LOAD REPORT" not in printed and "MISSING" not in printed  # the new head is expected
    assert caplog.records == [] and hf_logging.get_verbosity() == verbosity

    weights = load_file(Path(base) / "model.safetensors")
    [removed] = [k for k in weights if k.endswith("layer.1.attention.self.query.weight")]
    del weights[removed]
    save_file(weights, Path(base) / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="finetune_pipeline.training.base_model"):
        load_sequence_classifier(base, ["a", "b"])
    [record] = caplog.records
    assert "1 weight(s)" in record.getMessage() and "layer.1.attention.self.query.weight" in record.getMessage()
    assert "classifier" not in record.getMessage()
