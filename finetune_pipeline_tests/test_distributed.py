"""Data-parallel training (training/distributed.py): two processes under torchrun on the gloo backend
(CPU) take the same steps as one process on the same global batches: per-step losses and final weights."""

import pytest
import torch
from safetensors.torch import load_file

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.classify import train_classifier
from finetune_pipeline.training.distributed import World, launch, processes_to_launch, shard
from finetune_pipeline_tests.conftest import write_tiny_bert
from finetune_pipeline_tests.test_training import BILLING, SHIPPING

LABELS = ["billing", "shipping"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # like each torchrun process (OMP_NUM_THREADS=1); the shared machine has 2 cores
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert_without_dropout(tmp_path_factory):
    """A 2-layer 32-wide random BERT with the MiniLM tokenizer; no dropout, so the runs are deterministic."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert_no_dropout"), dropout=0.0)


def test_shard_gives_each_rank_a_contiguous_slice_of_the_global_batch():
    batch = [7, 3, 5, 1, 0]
    slices = [shard(batch, World(rank=r, local_rank=r, size=2)) for r in range(2)]
    assert slices == [[7, 3, 5], [1, 0]]
    assert [shard([4], World(rank=r, size=2)) for r in range(2)] == [[4], []]
    assert shard(batch, World()) == batch


def test_one_process_unless_asked_or_several_gpus(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert processes_to_launch(1) == 0 and processes_to_launch(3) == 3
    assert processes_to_launch("auto") == (torch.cuda.device_count() if torch.cuda.device_count() > 1 else 0)
    monkeypatch.setenv("WORLD_SIZE", "2")  # already one of torchrun's processes: train here
    assert processes_to_launch(2) == 0 and processes_to_launch("auto") == 0


def test_a_failing_process_fails_the_launch_with_its_output():
    logged = []
    with pytest.raises(RuntimeError, match="exit code") as failure:
        launch("json.tool", ["/nonexistent/splits.json"], 2, log=logged.append)
    assert "/nonexistent/splits.json" in str(failure.value)  # the worker's own error is in the message


def test_two_gloo_processes_match_one_process_on_the_same_global_batches(tiny_bert_without_dropout, tmp_path):
    # 7 examples in global batches of 3: slices of 2+1 (uneven, so a mean of per-rank means would be
    # wrong) and a last batch of 1 that leaves rank 1 an empty slice.
    splits = {"train": (BILLING[:4] + SHIPPING[:3], ["billing"] * 4 + ["shipping"] * 3),
              "validation": (BILLING[4:5] + SHIPPING[4:5], LABELS),
              "test": (BILLING[5:] + SHIPPING[5:], LABELS)}
    fields = dict(base_model=tiny_bert_without_dropout, epochs=2, batch_size=3, max_length=32,
                  lora={"learning_rate": 5e-3, "dropout": 0.0}, early_stopping_patience=5)
    single = train_classifier(splits, LABELS, TrainingSettings(**fields, data_parallel=1), tmp_path / "single",
                              log=lambda m: None)
    logged = []
    # Launches torchrun (127.0.0.1, a free port); raises, so the test fails, if any process fails.
    ddp = train_classifier(splits, LABELS, TrainingSettings(**fields, data_parallel=2), tmp_path / "ddp",
                           log=logged.append)

    assert single["processes"] == 1 and ddp["processes"] == 2
    assert any("torchrun --nproc-per-node=2" in m for m in logged)
    single_steps = [h["train_step_losses"] for h in single["history"]]
    ddp_steps = [h["train_step_losses"] for h in ddp["history"]]
    assert [len(s) for s in ddp_steps] == [len(s) for s in single_steps] == [3, 3]
    assert single_steps[0][0] != single_steps[-1][-1]  # it trained
    assert torch.allclose(torch.tensor(ddp_steps, dtype=torch.float64),
                          torch.tensor(single_steps, dtype=torch.float64), rtol=1e-5, atol=0)
    first = load_file(tmp_path / "single" / "adapter_model.safetensors")
    second = load_file(tmp_path / "ddp" / "adapter_model.safetensors")
    assert first.keys() == second.keys() and any("lora_A" in k for k in first)
    for name in first:
        assert torch.allclose(first[name], second[name], rtol=1e-4, atol=1e-6), name
    assert ddp["test"] == single["test"]
