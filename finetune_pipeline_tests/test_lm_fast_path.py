"""Causal-LM training, fast path and hygiene, on a tiny random Llama in fp32 on the CPU: each speed-up is
checked against the plain computation it replaces (chunked cross-entropy against torch's, the fast path
against the plain loss step by step, padding-free rows against padded ones, micro-batches against one
batch, activation checkpointing against none), and the schedule and its resumption against numbers."""

import json
import math

import pytest
import torch

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training import loop
from finetune_pipeline.training.causal_lm import (activation_bytes, attention_implementation, base_dtype,
                                                  wants_activation_checkpointing)
from finetune_pipeline.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from finetune_pipeline.training.chunked_cross_entropy import IGNORE, chunked_linear_cross_entropy
from finetune_pipeline.training.instruction import (InstructionTraining, collate, main, token_loss, train_instruction,
                                                    write_pairs)
from finetune_pipeline.training.optimizer import lr_schedule
from finetune_pipeline_tests.test_instruction import PAIRS, one_torch_thread, tiny_llama_folder  # noqa: F401 (autouse)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny_llama"), [p + " " + r for p, r in PAIRS])


def settings(path: str, **fields) -> TrainingSettings:
    """Training settings for the tiny Llama; `fields` of training.instruction go to that section."""
    from finetune_pipeline.settings import InstructionTrainingSettings

    instruction = {k: fields.pop(k) for k in list(fields) if k in InstructionTrainingSettings.model_fields}
    return TrainingSettings(**{"instruction": {"base_model": path, "max_length": 40, **instruction},
                               "lora": {"dropout": 0.0, "learning_rate": 1e-2}, "batch_size": 4, **fields})


def trainable_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_chunked_cross_entropy_equals_full_cross_entropy_and_its_gradients(dtype, tolerance):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=dtype, requires_grad=True)
    weight = torch.randn(50, 16, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    targets[::3] = IGNORE
    targets[8:16] = IGNORE  # a whole chunk without a target
    chunked = chunked_linear_cross_entropy(hidden, weight, targets, chunk=8)
    (chunked * 0.5).backward()  # a scale on the loss reaches the gradients
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    full = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, ignore_index=IGNORE, reduction="sum")
    (full * 0.5).backward()
    assert chunked.item() == pytest.approx(full.item(), rel=tolerance)
    assert torch.allclose(got[0], hidden.grad, rtol=tolerance, atol=tolerance)
    assert torch.allclose(got[1], weight.grad, rtol=tolerance, atol=tolerance)


def test_chunked_cross_entropy_with_a_frozen_head_gives_only_the_hidden_gradient():
    torch.manual_seed(0)
    hidden, weight = torch.randn(10, 8, requires_grad=True), torch.randn(20, 8)
    targets = torch.randint(0, 20, (10,))
    chunked_linear_cross_entropy(hidden, weight, targets, chunk=3).backward()
    expected = hidden.detach().clone().requires_grad_()
    torch.nn.functional.cross_entropy(expected @ weight.T, targets, reduction="sum").backward()
    assert weight.grad is None and torch.allclose(hidden.grad, expected.grad, atol=1e-6)


def test_fast_path_trains_step_for_step_like_the_plain_path(tiny_llama, tmp_path):
    """Chunked loss on the hidden states (fast path) against the full logits' cross-entropy: same losses at
    every step, same adapter, over two epochs with the schedule and clipping on."""
    from safetensors.torch import load_file

    splits = {"train": PAIRS * 2, "validation": PAIRS[:2], "test": PAIRS[2:4]}
    runs = {}
    for fast in ("off", "on"):
        cfg = settings(tiny_llama, epochs=2, fast_path=fast, loss_chunk_tokens=16, max_grad_norm=0.5)
        runs[fast] = train_instruction(splits, cfg, tmp_path / fast, log=lambda m: None)
    plain, fast = ([h["train_step_losses"] for h in runs[k]["history"]] for k in ("off", "on"))
    assert len(plain[0]) >= 2 and plain[0][0] != plain[-1][-1]
    assert torch.allclose(torch.tensor(fast), torch.tensor(plain), rtol=1e-5, atol=0)
    assert runs["on"]["test"]["loss"] == pytest.approx(runs["off"]["test"]["loss"], rel=1e-5)
    first, second = load_file(tmp_path / "off" / "adapter_model.safetensors"), \
        load_file(tmp_path / "on" / "adapter_model.safetensors")
    for name in first:
        assert torch.allclose(first[name], second[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_padding_free_row_gives_the_padded_batch_loss_and_gradients(tiny_llama, attention):
    """Sequences end to end in one row (as for varlen flash-attention) against the padded batch: position
    ids keep them apart under sdpa and eager too, and no token learns to predict the next sequence."""
    task = InstructionTraining({"train": PAIRS, "test": PAIRS[:1]}, settings(tiny_llama, attention=attention,
                                                                             packing=False), CPU, log=lambda m: None)
    sequences = task.data["train"][:4]
    assert len({len(s["input_ids"]) for s in sequences}) > 1  # the padded batch has padding
    results = []
    for padding_free in (False, True):
        task.model.zero_grad()
        batch = collate(sequences, task.tokenizer.pad_token_id, CPU, padding_free)
        loss, count = token_loss(task.model, batch, CPU)
        loss.backward()
        results.append((loss.item(), count, trainable_grads(task.model), batch["input_ids"].shape))
    (padded, n_padded, g_padded, shape_padded), (flat, n_flat, g_flat, shape_flat) = results
    assert shape_flat == (1, sum(len(s["input_ids"]) for s in sequences)) and shape_padded[0] == 4
    assert n_flat == n_padded and flat == pytest.approx(padded, rel=1e-5)
    for name in g_padded:
        assert torch.allclose(g_flat[name], g_padded[name], rtol=1e-4, atol=1e-6), name


def test_micro_batches_accumulate_to_the_gradient_of_one_batch_k_times_larger(tiny_llama):
    task = InstructionTraining({"train": PAIRS, "test": PAIRS[:1]}, settings(tiny_llama, packing=False), CPU,
                               log=lambda m: None)
    rows = [0, 1, 2, 3]
    results = []
    for micro in (None, 1, 3):  # one pass; four of one row; one of three and one of one
        task.model.zero_grad(set_to_none=True)
        results.append((*loop.accumulate_gradients(task, task.model, rows, 1.0, micro), trainable_grads(task.model)))
    (total, count, grads), *others = results
    assert count == sum(sum(t != IGNORE for t in task.data["train"][i]["labels"][1:]) for i in rows)
    for other_total, other_count, other_grads in others:
        assert other_count == count and other_total == pytest.approx(total, rel=1e-5)
        for name in grads:
            assert torch.allclose(other_grads[name], grads[name], rtol=1e-4, atol=1e-7), name


def test_activation_checkpointing_gives_the_same_gradients(tiny_llama):
    grads = []
    for checkpointing in ("off", "on"):
        torch.manual_seed(0)  # the same initial LoRA weights
        cfg = settings(tiny_llama, activation_checkpointing=checkpointing)
        task = InstructionTraining({"train": PAIRS, "test": PAIRS[:1]}, cfg, CPU, log=lambda m: None)
        assert task.model.get_base_model().is_gradient_checkpointing == (checkpointing == "on")
        task.model.train()
        loop.accumulate_gradients(task, task.model, [0, 1], 1.0, None)
        grads.append(trainable_grads(task.model))
    for name in grads[0]:
        assert torch.allclose(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7), name


def test_the_automatic_choices_follow_the_device_and_the_rules(tiny_llama):
    from transformers import LlamaConfig

    cfg = TrainingSettings()
    assert base_dtype(cfg, CPU) == torch.float32 and base_dtype(cfg, torch.device("cuda")) == torch.bfloat16
    assert attention_implementation(cfg, CPU) == "sdpa"
    tinyllama = LlamaConfig(hidden_size=2048, num_hidden_layers=22)
    assert activation_bytes(tinyllama, 8 * 2048) == 34 * 8 * 2048 * 2048 * 22  # 25.1 GB: under half of 80 GB
    assert not wants_activation_checkpointing(cfg, CPU, tinyllama, 8 * 2048)  # auto: never on the CPU
    assert wants_activation_checkpointing(cfg.model_copy(update={"instruction": cfg.instruction.model_copy(update={"activation_checkpointing": "on"})}), CPU,
                                          tinyllama, 1)
    task = InstructionTraining({"train": PAIRS, "test": PAIRS[:1]},
                               settings(tiny_llama, global_batch_tokens=100, micro_batch_size=2), CPU,
                               log=lambda m: None)
    assert task.batch_size == round(100 / 40) and task.micro_rows == 2
    assert task.last_hidden is None and not task.padding_free  # auto on the CPU: the plain path


def test_bf16_base_weights_train_fp32_lora_weights_and_adamw_state(tiny_llama):
    task = InstructionTraining({"train": PAIRS, "test": PAIRS[:1]}, settings(tiny_llama, base_dtype="bfloat16"),
                               CPU, log=lambda m: None)
    frozen = {p.dtype for p in task.model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in task.model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}
    optimizer = torch.optim.AdamW([p for p in task.model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = lr_schedule(optimizer, task.cfg, 10)
    total, count = loop.train_step(task, task.model, optimizer, scheduler, [0, 1, 2], loop.distributed.World(),
                                   CPU, task.cfg)
    assert math.isfinite(total) and count > 0
    assert {s["exp_avg"].dtype for s in optimizer.state.values()} == {torch.float32}


@pytest.mark.parametrize("schedule,expected", [
    ("cosine", {0: 0.0, 1: 0.5, 2: 1.0, 11: 0.5, 20: 0.0}),
    ("linear", {0: 0.0, 1: 0.5, 2: 1.0, 11: 0.5, 20: 0.0}),
    ("constant", {0: 0.0, 1: 0.5, 2: 1.0, 11: 1.0, 20: 1.0}),
])
def test_learning_rate_warms_up_then_decays(schedule, expected):
    """20 steps, warm-up 10% (2 steps) from 0 to the peak, then decay to 0 at the last step."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_schedule(optimizer, TrainingSettings(lr_schedule=schedule, warmup_ratio=0.1), total_steps=20)
    seen = {}
    for step in range(21):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert {step: pytest.approx(seen[step], abs=1e-12) for step in expected} == expected
    if schedule == "cosine":  # cosine stays above linear in the first half of the decay
        assert seen[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 18)))


def test_a_checkpoint_restores_the_learning_rate_schedule(tmp_path):
    cfg = TrainingSettings(warmup_ratio=0.2)

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        return model, optimizer, lr_schedule(optimizer, cfg, total_steps=10)

    model, optimizer, scheduler = fresh()
    for _ in range(4):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    save_checkpoint(tmp_path / "checkpoint", model, optimizer, scheduler, None, TrainState("run", epoch=1))
    expected = [scheduler.get_last_lr()[0]] + [(scheduler.step(), scheduler.get_last_lr()[0])[1] for _ in range(3)]

    model, optimizer, scheduler = fresh()
    assert scheduler.get_last_lr()[0] == 0.0  # a fresh schedule starts its warm-up
    load_checkpoint(tmp_path / "checkpoint", model, optimizer, scheduler)
    assert scheduler.last_epoch == 4 and optimizer.param_groups[0]["lr"] == expected[0]
    assert [scheduler.get_last_lr()[0]] + [(scheduler.step(), scheduler.get_last_lr()[0])[1] for _ in range(3)] \
        == expected


def test_the_trainer_runs_as_a_plain_script_on_exported_splits_and_reports_tokens_per_s(tiny_llama, tmp_path,
                                                                                        capsys):
    write_pairs({"train": PAIRS * 2, "validation": PAIRS[:2], "test": PAIRS[2:4]}, tmp_path)
    main([str(tmp_path), str(tmp_path / "out"), "--settings",
          json.dumps({"instruction": {"base_model": tiny_llama, "max_length": 40}, "epochs": 1, "batch_size": 2,
                      "micro_batch_size": 1})])
    out = capsys.readouterr().out
    assert "training tokens/s" in out
    report = json.loads(out[out.index("{"):])
    assert report["train_tokens_per_s"][0] > 0 and report["epochs_run"] == 1
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_the_gpu_benchmark_imports_without_the_data_pipelines_packages():
    """The GPU machine has torch, transformers and peft but not the pipeline's data stack: the benchmark
    and the training step it calls import without polars, scikit-learn, pandas or dagster."""
    import subprocess
    import sys

    from finetune_pipeline_tests.conftest import REPO

    packages = ["polars", "sklearn", "pandas", "dagster", "pyarrow", "datasets"]
    code = f"""
import sys
sys.path.insert(0, "scripts")
import bench_lora_speed
from finetune_pipeline.training import causal_lm, chunked_cross_entropy, instruction, loop, optimizer
print([name for name in {packages!r} if name in sys.modules])
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1:] == ["[]"], done.stdout[-500:] + done.stderr[-2000:]
