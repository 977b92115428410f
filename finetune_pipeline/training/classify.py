"""Fine-tuning an encoder for sequence classification: LoRA (PEFT) or full fine-tuning, one plain loop.

Reads top to bottom: load the base model with a classification head for the label set; for `lora` wrap
it with a LoRA config (the head trains too and is saved with the adapter as `modules_to_save`), for
`full` train every weight at the smaller `full_learning_rate`. Train on the train split in an order
seeded by (seed, epoch), early-stop on validation macro-F1, keep the best epoch's weights, evaluate on
test, then save: the PEFT adapter (lora) or the whole model (full) in safetensors, with the tokenizer,
`metrics.json` and a model card. A checkpoint after each epoch lets a killed run resume where it was
(see checkpoint.py). CUDA in bf16 when present, the CPU otherwise; imports no dagster.

Data-parallel (distributed.py): with several CUDA GPUs visible (or `data_parallel: N`), the run starts
itself again under torchrun, one process per GPU; each process trains on its slice of every global
batch through DDP, and rank 0 writes the output. The steps and the result are those of one process on
the same global batches (a test checks per-step losses and the final weights).

    python -m finetune_pipeline.training.classify --help
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoTokenizer

from finetune_pipeline.exports import atomic_path
from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training import distributed
from finetune_pipeline.training.base_model import (autocast, base_model_name, load_sequence_classifier,
                                                   resolve_base_model)
from finetune_pipeline.training.checkpoint import (CHECKPOINT_DIR, end_epoch, epoch_batches, fingerprint,
                                                   start_or_resume)
from finetune_pipeline.training.evaluate import (PeakMemory, classification_metrics, majority_baseline, predict,
                                                 run_report)

Splits = dict[str, tuple[list[str], list[str]]]  # split name -> (texts, labels)


def build_classifier(approach: Literal["lora", "full"], base: str, labels: list[str], cfg: TrainingSettings):
    """The base encoder with a fresh head: wrapped for LoRA, or with every weight trainable."""
    model = load_sequence_classifier(base, labels)
    if approach == "full":
        return model
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules))
    return get_peft_model(model, lora)  # SEQ_CLS: the classifier head is trained and saved with the adapter


def train_classifier(splits: Splits, labels: list[str], cfg: TrainingSettings, output_dir: str | Path,
                     approach: Literal["lora", "full"] = "lora", data_snapshot: str = "", log=print,
                     on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train on `splits["train"]`, early-stop on validation, evaluate on test, save to `output_dir`.

    Returns the metrics written to `metrics.json`. `on_epoch_end(epoch)` is called after each epoch's
    checkpoint (tests raise from it to simulate a killed run). Runs in several processes when
    `cfg.data_parallel` asks for them (see distributed.py).
    """
    output_dir = Path(output_dir)
    processes = distributed.processes_to_launch(cfg.data_parallel)
    if processes:
        return distributed.train_in_processes(
            "finetune_pipeline.training.classify", lambda job: write_splits(splits, job),
            ["--approach", approach, "--labels", json.dumps(labels), "--settings", cfg.model_dump_json(),
             "--data-snapshot", data_snapshot], output_dir, processes, log, on_epoch_end)
    started = time.perf_counter()
    world = distributed.World.from_env()
    device = distributed.start(world)
    if not world.main:
        log = lambda message: None  # noqa: E731 (rank 0 speaks for all)
    base = resolve_base_model(cfg.base_model)
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = build_classifier(approach, base, labels, cfg).to(device)
    learning_rate = cfg.learning_rate if approach == "lora" else cfg.full_learning_rate
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)

    label_id = {label: i for i, label in enumerate(labels)}
    train_texts, train_labels = splits["train"]
    val_texts, val_labels = splits.get("validation", ([], []))
    test_texts, test_labels = splits["test"]
    y_train = torch.tensor([label_id[x] for x in train_labels])
    y_val = [label_id[x] for x in val_labels]
    encodings = tokenizer(train_texts, truncation=True, max_length=cfg.max_length)  # padded per batch below

    run_id = fingerprint(approach, cfg.model_dump(), [splits, labels])
    best, state = start_or_resume(output_dir, run_id, cfg.resume, model, optimizer, log)
    checkpoint = output_dir / CHECKPOINT_DIR
    first_epoch = state["epoch"] + 1
    forward = distributed.wrap(model, world, device)  # DDP: gradients averaged across processes in backward

    with PeakMemory(device) as memory:
        for epoch in range(first_epoch, cfg.epochs + 1):
            if state["stopped"]:
                break
            model.train()
            losses = []
            for global_idx in epoch_batches(len(train_texts), cfg.batch_size, cfg.seed, epoch):
                # This process's slice; the loss is its sum over the *global* batch size, times the world
                # size that DDP's gradient averaging divides by: the update of the global batch's mean loss.
                idx, weight = distributed.shard(global_idx, world), world.size / len(global_idx)
                if not idx:  # fewer examples than processes: take part in DDP's all-reduce with weight 0
                    idx, weight = global_idx[:1], 0.0
                batch = tokenizer.pad({k: [v[i] for i in idx] for k, v in encodings.items()},
                                      return_tensors="pt").to(device)
                with autocast(device):
                    logits = forward(**batch).logits
                loss_sum = torch.nn.functional.cross_entropy(logits.float(), y_train[idx].to(device), reduction="sum")
                optimizer.zero_grad()
                (loss_sum * weight).backward()
                optimizer.step()
                losses.append(distributed.all_sum(loss_sum.item() if weight else 0.0, world, device) / len(global_idx))
            train_loss = float(np.mean(losses))
            # Without a validation split, the training loss decides (lower is better).
            val = classification_metrics(y_val, predict(model, tokenizer, val_texts, cfg.max_length)) if y_val \
                else {"macro_f1": -train_loss}
            val = distributed.from_main(val, world)  # one early-stopping decision for every process
            state["history"].append({"epoch": epoch, "train_loss": train_loss, "train_step_losses": losses,
                                     **{f"val_{k}": v for k, v in val.items()}})
            state["epoch"] = epoch
            log(f"{approach} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, "
                f"validation macro-F1 {val['macro_f1']:.3f}")
            best = end_epoch(epoch, val["macro_f1"], state, best, model, optimizer,
                             checkpoint if world.main else None, cfg, log, on_epoch_end)
        if best is not None:
            model.load_state_dict({k: v.to(device) for k, v in best.items()}, strict=False)
        test_pred = predict(model, tokenizer, test_texts, cfg.max_length)

    metrics = {
        "approach": approach,
        "task": "classification",
        "base_model": base_model_name(cfg.base_model),
        "labels": labels,
        "test": classification_metrics([label_id[x] for x in test_labels], test_pred),
        "majority_baseline": majority_baseline(list(train_labels), list(test_labels)),
        "validation_best_macro_f1": state["best_score"],
        "split_sizes": {"train": len(train_texts), "validation": len(val_texts), "test": len(test_texts)},
        **run_report(model, state, first_epoch, learning_rate, device, world.size, started, memory.peak_mb,
                     data_snapshot, cfg),
    }
    if world.main:
        save_classifier(model, tokenizer, metrics, output_dir)
    distributed.stop(world)
    return metrics



def save_classifier(model, tokenizer, metrics: dict, output_dir: Path) -> None:
    """safetensors weights (the PEFT adapter for lora, the whole model for full), tokenizer,
    metrics.json and README.md (model card). Written beside `output_dir` and swapped in whole, so a
    reader never loads a half-saved model; the swap also removes the finished run's checkpoint."""
    with atomic_path(output_dir) as folder:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        (folder / "README.md").write_text(model_card(metrics))


def model_card(metrics: dict) -> str:
    sizes = metrics["split_sizes"]
    test, base = metrics["test"], metrics["majority_baseline"]
    lora = metrics["approach"] == "lora"
    title = "LoRA adapter" if lora else "Fully fine-tuned model"
    how = ("`finetune_pipeline.training.lora.load_adapter(path)` or with PEFT:\n"
           "`PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=...), path)`"
           if lora else "`AutoModelForSequenceClassification.from_pretrained(path)`")
    return f"""---
library_name: {'peft' if lora else 'transformers'}
base_model: {metrics['base_model']}
tags: [{'lora, ' if lora else ''}text-classification, finetune-pipeline]
---
# {title}: text classification

- Base model: {metrics['base_model']}
- Approach: {metrics['approach']} (learning rate {metrics['learning_rate']}, {metrics['epochs_run']} epochs run)
- Labels: {', '.join(metrics['labels'])}
- Data snapshot: `{metrics['data_snapshot']}`
- Split sizes: train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}
- Trainable parameters: {metrics['trainable_parameters']:,} of {metrics['total_parameters']:,}

| metric (test) | this model | majority-class baseline |
|---|---|---|
| accuracy | {test['accuracy']:.3f} | {base['accuracy']:.3f} |
| macro-F1 | {test['macro_f1']:.3f} | {base['macro_f1']:.3f} |

Load it with {how}.
"""


def write_splits(splits: Splits, splits_dir: str | Path) -> None:
    """The `<split>.jsonl` files `read_splits` reads (an absent split is written empty)."""
    for name in ("train", "validation", "test"):
        texts, labels = splits.get(name, ([], []))
        lines = [json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)]
        (Path(splits_dir) / f"{name}.jsonl").write_text("".join(lines))


def read_splits(splits_dir: str | Path) -> tuple[Splits, list[str]]:
    """(texts, labels) per split from the exported `<split>.jsonl` files, and the sorted label set."""
    splits: Splits = {}
    for name in ("train", "validation", "test"):
        rows = [json.loads(line) for line in (Path(splits_dir) / f"{name}.jsonl").read_text().splitlines() if line]
        splits[name] = ([r["text"] for r in rows], [r["label"] for r in rows])
    return splits, sorted(set(splits["train"][1]))


def main(argv: list[str] | None = None) -> None:
    """Train from exported splits without dagster, e.g. on a GPU machine."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m finetune_pipeline.training.classify", description=main.__doc__)
    parser.add_argument("splits_dir", help="exports/splits/ (train/validation/test.jsonl)")
    parser.add_argument("output_dir")
    parser.add_argument("--approach", choices=["lora", "full"], default="lora")
    parser.add_argument("--settings", help="JSON of TrainingSettings fields, e.g. '{\"epochs\": 3}'")
    parser.add_argument("--labels", help="JSON list of the label set (default: the train split's, sorted)")
    parser.add_argument("--data-snapshot", default="", help="recorded in metrics.json and the model card")
    args = parser.parse_args(argv)
    cfg = TrainingSettings.model_validate(json.loads(args.settings or "{}"))
    splits, labels = read_splits(args.splits_dir)
    labels = json.loads(args.labels) if args.labels else labels
    metrics = train_classifier(splits, labels, cfg, args.output_dir, approach=args.approach,
                               data_snapshot=args.data_snapshot)
    if not distributed.World.from_env().main:
        return
    print(json.dumps({k: metrics[k] for k in ("test", "majority_baseline", "epochs_run", "wall_time_s")}, indent=2))


if __name__ == "__main__":
    main()
