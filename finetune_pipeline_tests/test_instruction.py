"""Instruction tuning on a tiny random Llama built from a config, with a word-level tokenizer trained on
the fly: loss on response tokens only, packing that keeps examples apart, loss/perplexity, the registry."""

import json
import math

import pytest
import torch
from huggingface_hub import ModelCard

from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training.instruction import (IGNORE, collate, pack, read_pairs, sequences_for,
                                                    tokenize_conversation, tokenize_example, train_instruction,
                                                    write_pairs)
from finetune_pipeline_tests.conftest import REPO

PAIRS = [("How do I reset my password?", "Use the Forgot password link on the sign-in page."),
         ("Where is my parcel?", "Track it with the link in your shipping e-mail."),
         ("Can I change my plan?", "Yes, under Settings, Billing, Change plan."),
         ("Why was I charged twice?", "A pending hold drops off within three days."),
         ("How do I delete my account?", "Write to support and we erase it within a week."),
         ("Do you ship to Berlin?", "Yes, parcels to Germany take two to four days.")]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; see test_training.py
    yield
    torch.set_num_threads(before)


def tiny_llama_folder(folder, texts: list[str]) -> str:
    """A 1-layer, 32-wide Llama with random weights, a word-level tokenizer trained on `texts` and a chat
    template, saved as a local model folder (the path is returned)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(texts) + ["system user assistant : You are a support agent"],
                            trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
                               "{% if m['role'] == 'assistant' %}</s>{% endif %}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=128, pad_token_id=3, bos_token_id=1,
                                         eos_token_id=2))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """The tiny Llama trained on PAIRS' words, and its tokenizer."""
    from transformers import AutoTokenizer

    folder = tiny_llama_folder(tmp_path_factory.mktemp("tiny_llama"), [p + " " + r for p, r in PAIRS])
    return folder, AutoTokenizer.from_pretrained(folder)


def test_only_response_tokens_carry_loss(tiny_llama):
    _, tokenizer = tiny_llama
    prompt, response = PAIRS[0]
    example = tokenize_example(tokenizer, prompt, response, max_length=64)
    ids, labels = example["input_ids"], example["labels"]
    prompt_part = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_dict=True)["input_ids"]
    n = len(prompt_part)
    assert ids[:n] == list(prompt_part)
    assert labels[:n] == [IGNORE] * n  # user turn and template text up to the answer: no loss
    assert labels[n:] == ids[n:]  # every response token (and the end-of-turn token) carries loss
    assert tokenizer.decode([t for t in labels if t != IGNORE]).split() == \
        tokenizer.decode(tokenizer(response)["input_ids"]).split() + ["</s>"]

    batch = collate([example, {**example, "input_ids": ids[:5], "labels": labels[:5], "position_ids": list(range(5))}],
                    tokenizer.pad_token_id, torch.device("cpu"))
    padded = batch["input_ids"][1] == tokenizer.pad_token_id
    assert padded.sum() == len(ids) - 5 and (batch["labels"][1][padded] == IGNORE).all()  # padding: no loss


CONVERSATION = [{"role": "system", "content": "You are a support agent."},
                {"role": "user", "content": PAIRS[0][0]}, {"role": "assistant", "content": PAIRS[0][1]},
                {"role": "user", "content": PAIRS[1][0]}, {"role": "assistant", "content": PAIRS[1][1]},
                {"role": "user", "content": PAIRS[2][0]}, {"role": "assistant", "content": PAIRS[2][1]}]


def _labelled_stretches(tokenizer, example) -> list[list[str]]:
    """The decoded tokens of each stretch of labelled (loss-carrying) tokens, in order."""
    stretches, current = [], []
    for label in example["labels"] + [IGNORE]:
        if label != IGNORE:
            current.append(label)
        elif current:
            stretches.append(tokenizer.decode(current).split())
            current = []
    return stretches


def test_every_assistant_turn_and_only_those_carry_loss_in_a_multi_turn_conversation(tiny_llama):
    _, tokenizer = tiny_llama
    example = tokenize_conversation(tokenizer, CONVERSATION, max_length=256)
    answers = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert _labelled_stretches(tokenizer, example) == \
        [tokenizer.decode(tokenizer(a)["input_ids"]).split() + ["</s>"] for a in answers]
    labelled = [i for i, t in enumerate(example["labels"]) if t != IGNORE]
    assert all(example["labels"][i] == example["input_ids"][i] for i in labelled)
    # the same through the training pairs: (messages JSON, final response), as InstructionTask carries them
    pair = (json.dumps(CONVERSATION), CONVERSATION[-1]["content"])
    assert sequences_for(tokenizer, [pair], 256, packing=False) == [example]
    # truncation keeps the answers that fit
    cut = tokenize_conversation(tokenizer, CONVERSATION, max_length=len(example["input_ids"]) - 3)
    assert len(_labelled_stretches(tokenizer, cut)) == 3 and _labelled_stretches(tokenizer, cut)[:2] == \
        _labelled_stretches(tokenizer, example)[:2]


def test_template_text_after_the_end_of_turn_token_carries_no_loss(tiny_llama):
    import copy

    _, tokenizer = tiny_llama
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = tokenizer.chat_template.replace("</s>{% endif %}", "</s> :{% endif %}")
    example = tokenize_conversation(tokenizer, CONVERSATION[:5], max_length=256)
    assert [s[-1] for s in _labelled_stretches(tokenizer, example)] == ["</s>", "</s>"]  # the ":" after it: none
    assert tokenizer.decode(example["input_ids"]).count("</s> :") == 2


def test_training_pairs_carry_the_conversation_from_splits_to_jsonl(tmp_path):
    import polars as pl

    from finetune_pipeline.tasks import task_named

    frame = pl.DataFrame({"record_id": ["a", "b"], "split": ["train", "test"],
                          "messages": [json.dumps(CONVERSATION), None],
                          "prompt": [PAIRS[2][0], PAIRS[3][0]], "response": [PAIRS[2][1], PAIRS[3][1]]})
    splits = task_named("instruction").training_splits(frame)
    assert json.loads(splits["train"][0][0]) == CONVERSATION and splits["train"][1] == [PAIRS[2][1]]
    assert json.loads(splits["test"][0][0]) == [{"role": "user", "content": PAIRS[3][0]},
                                                 {"role": "assistant", "content": PAIRS[3][1]}]
    write_pairs({name: list(zip(*columns)) for name, columns in splits.items()}, tmp_path)  # as compare.py does
    again = read_pairs(tmp_path)
    assert [json.loads(p) for p, _ in again["train"]] == [CONVERSATION]


def test_truncation_that_leaves_no_response_drops_the_example(tiny_llama):
    _, tokenizer = tiny_llama
    assert tokenize_example(tokenizer, PAIRS[0][0], PAIRS[0][1], max_length=4) is None


def test_packing_puts_several_examples_in_a_sequence_and_keeps_every_response_token(tiny_llama):
    _, tokenizer = tiny_llama
    examples = [tokenize_example(tokenizer, p, r, 64) for p, r in PAIRS]
    packed = pack(examples, max_length=64)
    assert len(packed) < len(examples)
    assert all(len(s["input_ids"]) <= 64 for s in packed)
    assert sum(len(s["input_ids"]) for s in packed) == sum(len(e["input_ids"]) for e in examples)
    labelled = [t for s in packed for t in s["labels"] if t != IGNORE]
    assert labelled == [t for e in examples for t in e["labels"] if t != IGNORE]
    starts = sum(s["position_ids"].count(0) for s in packed)
    assert starts == len(examples)  # positions restart at each example
    assert sequences_for(tokenizer, PAIRS, 64, packing=False)[0]["position_ids"][0] == 0


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_match_unpacked(tiny_llama, attention):
    """Attention never crosses examples in a packed sequence: the logits equal each example's alone (with
    either attention kernel the CPU has; the position ids alone keep the examples apart)."""
    from transformers import AutoModelForCausalLM

    path, tokenizer = tiny_llama
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention).eval()
    examples = [tokenize_example(tokenizer, p, r, 64) for p, r in PAIRS[:3]]
    packed = pack(examples, max_length=128)
    assert len(packed) == 1
    batch = collate(packed, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples])
    assert torch.allclose(together, alone, atol=1e-5)


def test_instruction_tuning_lowers_loss_and_reports_perplexity(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from finetune_pipeline.training import registry

    path, tokenizer = tiny_llama
    cfg = TrainingSettings(instruction={"base_model": path, "max_length": 64}, epochs=3, batch_size=2,
                           lora={"learning_rate": 1e-2, "dropout": 0.0})
    splits = {"train": PAIRS * 3, "validation": PAIRS[:2], "test": PAIRS[2:4]}
    metrics = train_instruction(splits, cfg, tmp_path / "models" / "helpdesk", data_snapshot="s1", log=lambda m: None)
    test = metrics["test"]
    assert math.isclose(test["perplexity"], math.exp(test["loss"]), rel_tol=1e-9)
    assert test["loss"] < metrics["base_model_test"]["loss"]  # the adapter learned the responses
    assert metrics["sequences"]["train"] < len(splits["train"]) and metrics["packing"]
    assert not metrics["nan_loss"] and metrics["epochs_run"] == 3
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    out = tmp_path / "models" / "helpdesk"
    assert (out / "adapter_model.safetensors").exists() and (out / "README.md").exists()
    assert json.loads((out / "metrics.json").read_text())["test"]["loss"] == test["loss"]
    # the generation metric: greedy answers to the 2 test prompts, base model and adapter, in the card
    generation = metrics["generation"]
    assert generation["samples"] == 2 and len(generation["examples"]) == 2
    assert 0 <= test["rouge_l"] <= 1 and 0 <= metrics["base_model_test"]["rouge_l"] <= 1
    assert generation["examples"][0]["reference"] == PAIRS[2][1]
    card = (out / "README.md").read_text()
    assert "ROUGE-L F1" in card and PAIRS[2][0] in card
    data = ModelCard.load(out / "README.md").data
    assert (data.library_name, data.pipeline_tag, data.datasets) == ("peft", "text-generation", ["exports/splits"])
    assert {r.metric_type: r.metric_value for r in data.eval_results} == \
        {"loss": test["loss"], "perplexity": test["perplexity"], "rougeL": test["rouge_l"]}

    registry.register(tmp_path / "models", "helpdesk", out, metrics)
    model, _, entry = registry.load(tmp_path / "models", "helpdesk")
    assert entry["task_type"] == "instruction" and "test_perplexity" in entry["metrics"]
    ids = torch.tensor([tokenize_example(tokenizer, *PAIRS[1], 64)["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    merged = AutoModelForCausalLM.from_pretrained(registry.merge(tmp_path / "models", "helpdesk",
                                                                 tmp_path / "merged")).eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, before, atol=1e-4)


def test_killed_instruction_run_resumes_with_identical_adapter(tiny_llama, tmp_path):
    from safetensors.torch import load_file

    path, _ = tiny_llama
    cfg = TrainingSettings(instruction={"base_model": path, "max_length": 64}, epochs=2, batch_size=2,
                           lora={"learning_rate": 1e-2})
    splits = {"train": PAIRS * 2, "validation": PAIRS[:2], "test": PAIRS[2:4]}
    train_instruction(splits, cfg, tmp_path / "whole", log=lambda m: None)

    def kill(epoch):
        raise KeyboardInterrupt  # as if the process were stopped after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_instruction(splits, cfg, tmp_path / "killed", log=lambda m: None, on_epoch_end=kill)
    resumed = train_instruction(splits, cfg, tmp_path / "killed", log=lambda m: None)
    assert resumed["resumed_from_epoch"] == 1 and [h["epoch"] for h in resumed["history"]] == [1, 2]
    first = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    second = load_file(tmp_path / "killed" / "adapter_model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_two_gloo_processes_match_one_process_on_the_same_global_batches(tiny_llama, tmp_path):
    """Data-parallel instruction tuning (see test_distributed.py): 2 processes under torchrun, gloo on the
    CPU, take the steps of one process; the loss is normalised by the global batch's response tokens."""
    from safetensors.torch import load_file

    path, _ = tiny_llama
    fields = dict(epochs=2, batch_size=3, lora={"learning_rate": 1e-2, "dropout": 0.0})
    instruction = {"base_model": path, "max_length": 40}
    # 10 sequences in global batches of 3: slices of 2+1, and a last batch of 1 that leaves rank 1 empty.
    splits = {"train": (PAIRS * 2)[:10], "validation": PAIRS[:2], "test": PAIRS[2:4]}
    single = train_instruction(splits, TrainingSettings(**fields, instruction=instruction, data_parallel=1), tmp_path / "single",
                               log=lambda m: None)
    # The 2 processes also take the fast path's chunked loss, in micro-batches of one sequence (DDP
    # reduces once per step, after the last micro-batch): the same steps still.
    ddp = train_instruction(splits, TrainingSettings(**fields, instruction={**instruction, "fast_path": "on"}, data_parallel=2, micro_batch_size=1),
                            tmp_path / "ddp", log=lambda m: None)

    assert single["processes"] == 1 and ddp["processes"] == 2
    steps = [h["train_step_losses"] for h in single["history"]]
    assert single["sequences"]["train"] == 10 and [len(s) for s in steps] == [4, 4]
    assert steps[0][0] != steps[-1][-1]  # it trained
    assert torch.allclose(torch.tensor([h["train_step_losses"] for h in ddp["history"]], dtype=torch.float64),
                          torch.tensor(steps, dtype=torch.float64), rtol=1e-5, atol=0)
    first = load_file(tmp_path / "single" / "adapter_model.safetensors")
    second = load_file(tmp_path / "ddp" / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.allclose(first[name], second[name], rtol=1e-4, atol=1e-6), name


def test_project_lora_step_follows_plain_transformers_peft_loss_for_loss():
    """The speed benchmark's two paths (scripts/bench_lora_speed.py) train the same thing: on the same
    batches (one sequence per row, and packed rows) from the same initial weights, the project's step (the
    loop's train_step, chunked loss) gives plain transformers+peft's losses, step by step. On the GPU the
    benchmark compares their speed."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_lora_speed", REPO / "scripts" / "bench_lora_speed.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclass looks itself up there
    spec.loader.exec_module(bench)
    device = torch.device("cpu")
    for docs_per_row in (1, 4):
        case = bench.Case("tiny", micro_batch=2, seq=64, docs_per_row=docs_per_row, steps=4, warmup=1)
        data = bench.batches(4, 2, 64, bench.SHAPES["tiny"]["vocab_size"], device, docs_per_row, distinct=1,
                             token_ids=20)  # one batch, four steps: the loss must fall as the adapter fits it
        plain = bench.measure("plain", bench.plain_step_fn, case, device, data, lr=1e-2)
        project = bench.measure("project", bench.project_step_fn, case, device, data, lr=1e-2)
        assert plain["losses"][-1] < plain["losses"][0]
        assert project["losses"] == pytest.approx(plain["losses"], rel=1e-5)
        assert "chunked loss" in project["about"]
        assert project["tokens_per_s"] > 0 and project["model_flops_per_s"] > 0
    # Under flash_attention_2 (GPU) the project's rows go end to end in one: the same loss as rows apart.
    model = bench.llama("tiny", 64, device)
    losses = []
    for padding_free in (False, True):
        batch = bench._Batch(device, None, padding_free)
        batch.current = data[0]
        with torch.no_grad():
            losses.append(batch.batch_loss(model, [0, 1]))
    assert losses[1][1] == losses[0][1] and losses[1][0].item() == pytest.approx(losses[0][0].item(), rel=1e-5)


def test_rouge_l_f1_matches_hand_computed_values():
    from finetune_pipeline.training.generation import rouge_l_f1

    # LCS "the cat on mat": 4 of 6 words each way
    assert rouge_l_f1("the cat lay on a mat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # LCS 3; precision 3/3, recall 3/6: F1 = 2 * 1 * 0.5 / 1.5
    assert rouge_l_f1("parcel arrives Monday", "The parcel arrives on Monday morning.") == pytest.approx(2 / 3)
    assert rouge_l_f1("refunds killed", "refund kills") == pytest.approx(1.0)  # Porter-stemmed
    # word order matters: the longest common subsequence is 2 words ("on the", "sat the", "cat the")
    assert rouge_l_f1("mat on sat cat the", "the cat sat on the mat") == \
        pytest.approx(2 * (2 / 5) * (2 / 6) / (2 / 5 + 2 / 6))
    assert rouge_l_f1("", "anything") == 0.0


def test_batched_greedy_generation_equals_a_plain_argmax_loop(tiny_llama):
    """Left padding in a batch changes nothing: each answer is the token-by-token argmax of its prompt alone."""
    from transformers import AutoModelForCausalLM

    from finetune_pipeline.training.generation import generate_answers

    path, tokenizer = tiny_llama
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    prompts = [[{"role": "user", "content": p}] for p, _ in PAIRS[:3]] + [CONVERSATION[:4]]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)  # 3 + 1
    for prompt, answer in zip(prompts, answers):
        ids = list(tokenizer.apply_chat_template(prompt, tokenize=True, return_dict=True,
                                                 add_generation_prompt=True)["input_ids"])
        new = []
        with torch.no_grad():
            for _ in range(6):
                token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                new.append(token)
                if token == tokenizer.eos_token_id:
                    break
        assert answer == tokenizer.decode(new, skip_special_tokens=True).strip()
