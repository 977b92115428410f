"""DPO on a LoRA adapter (training/dpo.py, training/preference_eval.py) on a tiny random Llama built here:
TRL's tokens and loss on the same batch, the reference as the adapter disabled, training that makes the
adapter prefer the chosen answers, and TRL's preference format (the export form) taken by `trl.DPOTrainer`."""

import json
import logging
import math

import pytest
import torch

from finetune_pipeline.training.dpo import (DPOResult, PreferenceTrainingSettings, build_dpo_model, collate_pairs,
                                            dpo_loss, evaluate_preferences, load_dpo_adapter, main,
                                            pair_conversations, pair_logps, pair_tokens, sequence_logps,
                                            tokenize_pair, tokenize_split, train_dpo)
from finetune_pipeline.training.preference_eval import PreferenceEvaluation

QUESTIONS = ["How do I reset my password?", "Where is my parcel?", "Can I change my plan?",
             "Why was I charged twice?", "How do I delete my account?", "Do you ship to Berlin?",
             "Is there a student discount?", "How do I update my address?"]
GOOD = ["Use the Forgot password link on the sign-in page.", "Track it with the link in your shipping e-mail.",
        "Yes, under Settings, Billing, Change plan.", "A pending hold drops off within three days.",
        "Write to support and we erase it within a week.", "Yes, parcels to Germany take two to four days.",
        "Yes, students get ten percent off with a valid card.", "Open Settings, Profile, Address and save it."]
BAD = ["Figure it out yourself, we are busy.", "Not my problem, stop asking us.", "No idea, ask someone else.",
       "Whatever, that is how it goes.", "We do not care, go away.", "Maybe, maybe not, who knows.",
       "Stop asking, read the website.", "Do it yourself, not our job."]
# TRL's preference format, conversational (explicit prompt) and plain.
CONVERSATIONAL = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": g}],
                   "rejected": [{"role": "assistant", "content": b}]} for q, g, b in zip(QUESTIONS, GOOD, BAD)]
PLAIN = [{"prompt": q, "chosen": g, "rejected": b} for q, g, b in zip(QUESTIONS, GOOD, BAD)]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; see test_training.py
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A 1-layer, 32-wide Llama with random weights, a word-level tokenizer trained on the pairs' words and
    a chat template, saved as a local model folder (its path)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(QUESTIONS + GOOD + BAD + ["system user assistant : You are a support agent"],
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


def settings(folder: str, **overrides) -> PreferenceTrainingSettings:
    return PreferenceTrainingSettings(**{"base_model": folder, "max_length": 64, "max_prompt_length": 32,
                                         "lora_dropout": 0.0, **overrides})


def perturb_adapter(model, seed: int = 1) -> None:
    """Random LoRA B matrices (PEFT starts them at zero, where policy and reference coincide)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)


def trl_trainer(folder: str, records: list[dict], tmp_path, beta: float = 0.1, max_steps: int = 1):
    """`trl.DPOTrainer` with a LoRA peft_config on the tiny model, the records taken as they are."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, max_length=64, per_device_train_batch_size=4,
                     max_steps=max_steps, learning_rate=1e-3, report_to="none", use_cpu=True, bf16=False,
                     save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0)
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(folder), args=args,
                      train_dataset=Dataset.from_list(records), processing_class=AutoTokenizer.from_pretrained(folder),
                      peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))


def test_tokens_and_loss_equal_trl_dpo_trainer_on_the_same_batch(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    trainer = trl_trainer(tiny_llama, CONVERSATIONAL[:4], tmp_path, beta=0.3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    ours = [tokenize_pair(tokenizer, r, 64, 32) for r in CONVERSATIONAL[:4]]
    theirs = [{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in trainer.train_dataset]
    assert ours == theirs
    batch = collate_pairs(ours, tokenizer.pad_token_id, torch.device("cpu"))
    trl_batch = trainer.data_collator(theirs)
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(batch[key], trl_batch[key].to(batch[key].dtype)), key
    model = trainer.model
    perturb_adapter(model)
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))
        loss, chosen_rewards, rejected_rewards = dpo_loss(pair_logps(model, batch), beta=0.3)
    assert abs(loss.item() - math.log(2)) > 1e-3  # the adapter moved the policy, so the loss is not trivial
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
    # Same margin TRL logs as rewards/margins for this batch.
    margins = trainer._metrics["eval"]["rewards/margins"]
    assert margins and margins[-1] == pytest.approx((chosen_rewards - rejected_rewards).mean().item(), rel=1e-4)


def test_reference_log_probs_are_the_base_models_with_no_second_copy(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = settings(tiny_llama)
    torch.manual_seed(0)
    model = build_dpo_model(cfg, torch.device("cpu"))
    perturb_adapter(model)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batch = collate_pairs([tokenize_pair(tokenizer, r, 64, 32) for r in PLAIN[:3]], tokenizer.pad_token_id,
                          torch.device("cpu"))
    with torch.no_grad():
        logps = pair_logps(model, batch)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
        base_chosen, base_rejected = sequence_logps(base, batch).chunk(2)
    assert torch.allclose(logps["ref_chosen"], base_chosen, atol=1e-5)
    assert torch.allclose(logps["ref_rejected"], base_rejected, atol=1e-5)
    assert not torch.allclose(logps["chosen"], base_chosen, atol=1e-3)  # the policy is the adapter's
    with torch.no_grad():  # and the adapter is on again after the reference pass
        assert torch.allclose(sequence_logps(model, batch).chunk(2)[0], logps["chosen"])


def test_pairs_in_every_input_form_give_the_same_tokens(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    q, g, b = QUESTIONS[0], GOOD[0], BAD[0]
    user, good, bad = [{"role": "user", "content": q}], [{"role": "assistant", "content": g}], \
        [{"role": "assistant", "content": b}]
    forms = [{"prompt": q, "chosen": g, "rejected": b},
             {"prompt_messages": user, "chosen": good, "rejected": bad},
             {"prompt": json.dumps(user), "chosen": json.dumps(good), "rejected": json.dumps(bad)},
             {"chosen": user + good, "rejected": user + bad}]  # implicit prompt
    tokens = [tokenize_pair(tokenizer, r, 64, 32) for r in forms]
    assert all(t == tokens[0] for t in tokens)
    # The prompt ends with the generation prompt; the answer is the text and its end-of-turn token.
    assert tokenizer.convert_ids_to_tokens(tokens[0]["prompt_ids"])[-2:] == ["assistant", ":"]
    assert tokens[0]["chosen_ids"] == tokenizer(g)["input_ids"] + [tokenizer.eos_token_id]


@pytest.mark.parametrize("record, says", [
    ({"prompt": "Q?", "chosen": "A."}, "no 'rejected' answer"),
    ({"prompt": "Q?", "chosen": "", "rejected": "B."}, "chosen is empty"),
    ({"prompt": "Q?", "chosen": [{"role": "bot", "content": "A."}], "rejected": "B."}, "needs a role in"),
    ({"chosen": [{"role": "assistant", "content": "A."}], "rejected": "B."}, "add a 'prompt' column"),
])
def test_malformed_pairs_are_refused_naming_the_fix(record, says):
    with pytest.raises(ValueError, match=says):
        pair_conversations(record, "train[3]")


def test_truncation_keeps_the_prompt_end_and_the_answer_start(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    record = {"prompt": " ".join(QUESTIONS), "chosen": " ".join(GOOD), "rejected": BAD[0]}
    full, cut = pair_tokens(tokenizer, record), tokenize_pair(tokenizer, record, 40, 12)
    assert cut["prompt_ids"] == full["prompt_ids"][-12:]
    assert cut["chosen_ids"] == full["chosen_ids"][:28] and cut["rejected_ids"] == full["rejected_ids"]
    cfg = settings(tiny_llama, max_length=40, max_prompt_length=12)
    assert tokenize_split(tokenizer, [record, PLAIN[0]], cfg, "train") == ([cut, tokenize_pair(tokenizer, PLAIN[0],
                                                                                                40, 12)], 1)
    with pytest.raises(ValueError, match="max_prompt_length"):
        PreferenceTrainingSettings(base_model="m", max_length=16, max_prompt_length=16)


def test_dpo_makes_the_adapter_prefer_the_chosen_answers_and_saves_safetensors(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    cfg = settings(tiny_llama, learning_rate=1e-2, epochs=4, batch_size=4, lora_r=8, lora_alpha=16, log_every=3,
                   seed=7)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    pairs = [tokenize_pair(tokenizer, r, 64, 32) for r in CONVERSATIONAL]
    torch.manual_seed(cfg.seed)
    before = evaluate_preferences(build_dpo_model(cfg, torch.device("cpu")), pairs, tokenizer.pad_token_id,
                                  cfg.beta, 4)
    assert before.accuracy == 0.0 and before.reward_margin == 0.0  # a fresh adapter is the base: rewards are 0
    assert before.logp_accuracy == before.base_accuracy

    lines = []
    result, model = train_dpo({"train": CONVERSATIONAL, "test": CONVERSATIONAL}, cfg, tmp_path / "adapter",
                              log=lines.append)
    after = result.test
    assert after.pairs == len(CONVERSATIONAL) and after.base_accuracy == before.base_accuracy
    assert after.accuracy > 0.85 and after.reward_margin > 0 and after.chosen_reward > after.rejected_reward
    # The chosen answers here are longer, so their summed log-likelihood stays below the rejected ones' for
    # the base (and, a few nats closer, for the adapter): DPO moves the ranking relative to the reference.
    assert after.logp_accuracy >= after.base_accuracy
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.steps == 8
    # Progress inside the epoch: step lines every log_every steps, not only at epoch ends.
    assert [line.split(":")[1] for line in lines if " step " in line] == [" epoch 2 step 3/8", " epoch 3 step 6/8"]

    saved = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert "adapter_model.safetensors" in saved and "adapter_config.json" in saved and "metrics.json" in saved
    assert not [name for name in saved if name.endswith((".bin", ".pt", ".pkl"))]
    assert DPOResult.from_json((tmp_path / "adapter" / "metrics.json").read_text()) == result
    assert PreferenceEvaluation.from_json(after.to_json()) == after
    reloaded, reloaded_tokenizer, _ = load_dpo_adapter(tmp_path / "adapter")
    reread = evaluate_preferences(reloaded, pairs, reloaded_tokenizer.pad_token_id, cfg.beta, 4)
    assert reread.accuracy == after.accuracy and reread.reward_margin == pytest.approx(after.reward_margin, rel=1e-4)

    again, _ = train_dpo({"train": CONVERSATIONAL}, cfg, log=lambda line: None)  # the seed fixes the run
    assert again.history == result.history


@pytest.mark.parametrize("records", [CONVERSATIONAL, PLAIN], ids=["conversational", "plain"])
def test_trl_dpo_trainer_takes_the_preference_format_as_it_is(tiny_llama, tmp_path, records):
    """The export form (TRL's preference format, JSONL with prompt/chosen/rejected) read back with
    `datasets` and trained one step by `trl.DPOTrainer` with a LoRA peft_config."""
    from datasets import load_dataset

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    logging.getLogger("trl").setLevel(logging.ERROR)
    trainer = trl_trainer(tiny_llama, list(load_dataset("json", data_files=str(path), split="train")), tmp_path)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    output = trainer.train()
    assert output.global_step == 1 and math.isfinite(output.training_loss)
    assert any(not torch.equal(p, lora_before[n]) for n, p in trainer.model.named_parameters() if n in lora_before)


def test_command_line_trains_from_exported_jsonl_splits(tiny_llama, tmp_path, capsys):
    """The recipe without dagster: `python -m finetune_pipeline.training.dpo splits_dir output_dir`."""
    splits = tmp_path / "splits"
    splits.mkdir()
    for name, records in (("train", CONVERSATIONAL[:6]), ("test", PLAIN[6:])):
        (splits / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    main([str(splits), str(tmp_path / "adapter"), "--settings",
          json.dumps({"base_model": tiny_llama, "max_length": 64, "max_prompt_length": 32, "batch_size": 3})])
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{\n"):])
    result = DPOResult.from_json((tmp_path / "adapter" / "metrics.json").read_text())
    assert result.split_sizes == {"train": 6, "test": 2} and result.steps == 2 and result.test.pairs == 2
    assert printed["test"] == json.loads(result.test.to_json()) and "dpo: epoch 1 done" in out
