"""LoRA on the shipped all-MiniLM-L6-v2: trains, saves in PEFT safetensors format, reloads intact."""

import json

import torch
from safetensors.torch import load_file

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.lora import load_adapter, train_lora_classifier

BILLING = ["I was charged twice for my subscription this month", "the invoice total is wrong, please refund",
           "my credit card payment failed but money was taken", "please cancel the duplicate charge on my bill",
           "why is there an extra fee on my latest invoice", "refund the overcharge on my annual plan"]
SHIPPING = ["my parcel has not arrived after two weeks", "the tracking number shows no movement for days",
            "the courier left my package at the wrong address", "delivery is late and the box arrived damaged",
            "when will my order be shipped to Berlin", "the carrier lost my parcel somewhere in transit"]


def test_lora_trains_saves_and_reloads(tmp_path):
    splits = {"train": (BILLING[:4] + SHIPPING[:4], ["billing"] * 4 + ["shipping"] * 4),
              "validation": (BILLING[4:5] + SHIPPING[4:5], ["billing", "shipping"]),
              "test": (BILLING[5:] + SHIPPING[5:], ["billing", "shipping"])}
    cfg = TrainingSettings(epochs=3, batch_size=4, max_length=32, learning_rate=2e-3)
    out = tmp_path / "adapter"
    metrics = train_lora_classifier(splits, ["billing", "shipping"], cfg, out, data_snapshot="abc", log=lambda m: None)

    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "README.md", "tokenizer.json"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == cfg.lora_r
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in k for k in weights) and any("classifier" in k for k in weights)  # head saved too
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"] / 10
    assert not metrics["nan_loss"] and metrics["epochs_run"] >= 1
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]

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
