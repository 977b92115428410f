"""Instruction fine-tuning of a causal LM with LoRA: chat template, loss on the assistant turns only, packing.

Reads top to bottom:
1. Each example is a conversation: its `messages` (system/user/assistant, any number of turns, carried as
   a JSON array), or [user prompt, assistant response] for a (prompt, response) pair, rendered by the
   tokenizer's chat template (a plain one is set when the tokenizer has none). Labels are the token ids
   of every assistant turn and of the end-of-turn token after it, so the model learns to stop; everything
   else is -100 (no loss): system and user turns and the template text up to where each answer starts
   (the rendering of the turns before it with `add_generation_prompt=True`), and template text after an
   answer's end-of-turn token.
2. Packing (`packing: true`): examples are laid one after another into sequences of at most
   `training.instruction.max_length` tokens. Each example's `position_ids` restart at 0 and no attention mask is passed, so
   transformers builds a block-diagonal causal mask from the position ids (`find_packed_sequence_indices`
   in masking_utils, used only without a KV cache, hence `use_cache=False`; flash-attention reads the same
   position ids): a token attends only to earlier tokens of
   its own example, and the last token of one example is never trained to predict the next example's
   first token (that label is a prompt token, -100). Right padding forms its own block with -100 labels.
   `test_packed_logits_match_unpacked` checks the logits equal those of each example alone. With
   flash_attention_2 (causal_lm.py) every batch is padding-free: its sequences end to end in one row, the
   only layout in which transformers' flash path reads packed sequences from the position ids.
3. The model as causal_lm.py sets it up: frozen base weights in bf16 on CUDA, LoRA in fp32, the attention
   kernel, activation checkpointing when a micro-batch's activations would not fit, and on the fast path
   (CUDA by default) the chunked linear cross-entropy instead of full-vocabulary logits.
4. This module supplies the task's part of the shared loop (loop.py): the causal LM with LoRA, the loss
   summed over a batch's response (assistant) tokens and normalised by their count (over the global batch when
   data-parallel), early stopping on validation loss, then loss and perplexity (exp of the mean token
   loss over response tokens) on validation and test, and the same for the base model before training as
   the baseline. The loop trains, resumes a killed run and runs data-parallel under torchrun when asked.
4. Generation (generation.py): greedy answers to a seeded sample of test prompts, base model and adapter,
   scored by ROUGE-L F1 against the reference answers (`training.instruction.generation_samples`, `generation_max_new_tokens`).
CUDA in bf16 when present, the CPU otherwise; imports no dagster. Never trust_remote_code.

    python -m finetune_pipeline.training.instruction --help
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from peft import PeftModel, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune_pipeline.split_files import read_split_rows
from finetune_pipeline.settings import TrainingSettings
from finetune_pipeline.training import distributed, loop
from finetune_pipeline.training.base_model import autocast
from finetune_pipeline.training.causal_lm import (LastHiddenState, enable_activation_checkpointing, fast_path_on,
                                                  load_options, wants_activation_checkpointing)
from finetune_pipeline.training.chat_template import conversation_ids, load_chat_tokenizer
from finetune_pipeline.training.checkpoint import TrainState
from finetune_pipeline.training.chunked_cross_entropy import chunked_linear_cross_entropy
from finetune_pipeline.training.generation import generation_scores, sample_indices
from finetune_pipeline.training.lora import lora_config
from finetune_pipeline.training.results import TrainingResult

IGNORE = -100  # label id that carries no loss (cross_entropy's ignore_index)
# (prompt, response), or (the conversation's messages as a JSON array, its final response): see
# `InstructionTask.training_splits` and `example_messages`.
Pairs = list[tuple[str, str]]


def chat_messages(prompt: str, response: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": prompt}]
    return messages + ([{"role": "assistant", "content": response}] if response is not None else [])


def example_messages(first: str, response: str) -> list[dict]:
    """The conversation of a training pair: `first` itself when it is a JSON array of {role, content}
    messages, else [user `first`, assistant `response`]."""
    if first.lstrip().startswith("["):
        try:
            messages = json.loads(first)
        except ValueError:
            messages = None
        if (isinstance(messages, list) and messages
                and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)):
            return [{"role": m["role"], "content": m["content"]} for m in messages]
    return chat_messages(first, response)



def tokenize_example(tokenizer, prompt: str, response: str, max_length: int) -> dict | None:
    """`input_ids`, `labels` and `position_ids` of one (prompt, response) pair, or of the conversation
    `prompt` holds as a JSON messages array (see `example_messages`); see `tokenize_conversation`."""
    return tokenize_conversation(tokenizer, example_messages(prompt, response), max_length)


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> dict | None:
    """`input_ids`, `labels` (the ids on every assistant turn and its end-of-turn token, -100 elsewhere)
    and `position_ids` of one conversation. None when truncation to `max_length` leaves no assistant token."""
    full_ids = conversation_ids(tokenizer, messages)
    labels = [IGNORE] * len(full_ids)
    special = set(tokenizer.all_special_ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = conversation_ids(tokenizer, messages[:turn], add_generation_prompt=True)
        through, start = conversation_ids(tokenizer, messages[:turn + 1]), len(prompt)
        if through[:start] != prompt or full_ids[:len(through)] != through:
            raise ValueError("the chat template renders a conversation's first turns differently from the whole "
                             "conversation; loss masking needs each turn's rendering to be a prefix of the next")
        end = len(through)
        # Template text after the answer's end-of-turn token (e.g. a newline) is not the answer's.
        last_special = max((i for i in range(start, end) if through[i] in special), default=None)
        if last_special is not None:
            end = last_special + 1
        labels[start:end] = full_ids[start:end]
    full_ids, labels = full_ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": full_ids, "labels": labels, "position_ids": list(range(len(full_ids)))}


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """Lay examples one after another into sequences of at most `max_length` tokens, in order;
    `position_ids` restart at 0 at each example (that is what keeps attention within an example)."""
    sequences, current = [], {"input_ids": [], "labels": [], "position_ids": []}
    for example in examples:
        if current["input_ids"] and len(current["input_ids"]) + len(example["input_ids"]) > max_length:
            sequences.append(current)
            current = {"input_ids": [], "labels": [], "position_ids": []}
        current["input_ids"] += example["input_ids"]
        current["labels"] += example["labels"]
        current["position_ids"] += example["position_ids"]
    if current["input_ids"]:
        sequences.append(current)
    return sequences


def sequences_for(tokenizer, pairs: Pairs, max_length: int, packing: bool) -> list[dict]:
    """Tokenized (and, with `packing`, packed) training sequences for `pairs`."""
    examples = [e for e in (tokenize_example(tokenizer, p, r, max_length) for p, r in pairs) if e is not None]
    return pack(examples, max_length) if packing else examples


def collate(sequences: list[dict], pad_id: int, device: torch.device,
            padding_free: bool = False) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: pad ids, -100 labels, and position ids 0.. so the padding is a
    block of its own that no real token attends to. `padding_free`: one row of the sequences end to end
    instead (for varlen attention); each sequence's first label becomes -100, since in a row of its own
    no token predicts it, so the loss is the padded batch's."""
    if padding_free:
        row = {"input_ids": [], "labels": [], "position_ids": []}
        for s in sequences:
            row["input_ids"] += s["input_ids"]
            row["labels"] += [IGNORE] + s["labels"][1:]
            row["position_ids"] += s["position_ids"]
        return {k: torch.tensor([v], device=device) for k, v in row.items()}
    width = max(len(s["input_ids"]) for s in sequences)
    batch = {"input_ids": [], "labels": [], "position_ids": []}
    for s in sequences:
        gap = width - len(s["input_ids"])
        batch["input_ids"].append(s["input_ids"] + [pad_id] * gap)
        batch["labels"].append(s["labels"] + [IGNORE] * gap)
        batch["position_ids"].append(s["position_ids"] + list(range(gap)))
    return {k: torch.tensor(v, device=device) for k, v in batch.items()}


def token_loss(model, batch: dict[str, torch.Tensor], device: torch.device,
               last_hidden: LastHiddenState | None = None) -> tuple[torch.Tensor, int]:
    """(sum of next-token losses over labelled tokens, number of labelled tokens). With `last_hidden` (the
    fast path) the loss is the chunked linear cross-entropy of the decoder's hidden states, else the
    cross-entropy of the model's logits."""
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    # use_cache=False: with a KV cache transformers skips the packed-sequence mask (masking_utils).
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    with autocast(device):
        if last_hidden is None:
            logits = model(**inputs).logits
        else:
            model(**inputs, logits_to_keep=1)  # the logits of one position only; the loss needs none
            hidden = last_hidden.take()
    if last_hidden is None:
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                                                 ignore_index=IGNORE, reduction="sum")
    else:
        loss = chunked_linear_cross_entropy(hidden[:, :-1].flatten(0, 1), last_hidden.head.weight,
                                            targets.flatten(), last_hidden.chunk)
    return loss, int((targets != IGNORE).sum())


@torch.no_grad()
def evaluate_loss(model, sequences: list[dict], pad_id: int, batch_size: int,
                  last_hidden: LastHiddenState | None = None, padding_free: bool = False) -> dict[str, float]:
    """Mean loss per response token and perplexity (its exp) over `sequences` (`token_loss`'s options)."""
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        batch = collate(sequences[start:start + batch_size], pad_id, device, padding_free)
        loss, n = token_loss(model, batch, device, last_hidden)
        total, tokens = total + loss.item(), tokens + n
    mean = total / tokens if tokens else float("nan")
    return {"loss": mean, "perplexity": math.exp(mean) if mean < 700 else float("inf"), "tokens": tokens}


def build_instruction_model(base: str, cfg: TrainingSettings, device: torch.device | None = None):
    """The causal LM at `base` with the instruction LoRA, its frozen weights in the dtype and with the
    attention kernel `cfg` picks for `device` (causal_lm.py). Never trust_remote_code."""
    device = device or torch.device("cpu")
    return with_lora(AutoModelForCausalLM.from_pretrained(base, **load_options(cfg, device)), cfg)


def with_lora(model, cfg: TrainingSettings):
    """`model` wrapped with the instruction LoRA of `cfg` (rank, alpha, dropout, target modules)."""
    return get_peft_model(model, lora_config(cfg, TaskType.CAUSAL_LM, cfg.instruction.target_modules))


def train_instruction(splits: dict[str, Pairs], cfg: TrainingSettings, output_dir: str | Path,
                      data_snapshot: str = "", log=print,
                      on_epoch_end: Callable[[int], None] | None = None) -> TrainingResult:
    """LoRA on `cfg.instruction.base_model` with (prompt, response) pairs per split; early stopping on
    validation loss; loss and perplexity on test; the adapter, tokenizer, metrics.json and a model card
    saved to `output_dir`. Returns the metrics. `on_epoch_end`: see `loop.train`."""
    if not cfg.instruction.base_model:
        raise ValueError("training.instruction.base_model is not set: name a local causal LM folder")
    command = loop.Command("finetune_pipeline.training.instruction", lambda job: write_pairs(splits, job),
                           ["--settings", cfg.model_dump_json(), "--data-snapshot", data_snapshot])
    return loop.train(partial(InstructionTraining, splits, cfg), cfg, output_dir, command, data_snapshot, log,
                      on_epoch_end)


class InstructionTraining:
    """Instruction tuning's part of the training loop: next-token loss on response tokens only."""

    approach = "instruction"

    def __init__(self, splits: dict[str, Pairs], cfg: TrainingSettings, device: torch.device, log=print):
        self.splits, self.cfg, self.device, self.log = splits, cfg, device, log
        self.trained_on = splits
        self.tokenizer = load_chat_tokenizer(cfg.instruction.base_model)
        self.model = build_instruction_model(cfg.instruction.base_model, cfg, device).to(device)
        self.learning_rate = cfg.lora.learning_rate
        self.data = {name: sequences_for(self.tokenizer, pairs, cfg.instruction.max_length, cfg.instruction.packing)
                     for name, pairs in splits.items()}
        self.train_rows, self.tokens_seen = len(self.data["train"]), 0
        self.batch_size = (max(1, round(cfg.instruction.global_batch_tokens / cfg.instruction.max_length))
                           if cfg.instruction.global_batch_tokens else cfg.batch_size)
        self.micro_rows = cfg.micro_batch_size or self.batch_size
        fast = fast_path_on(cfg, device)
        self.last_hidden = LastHiddenState(self.model, cfg.instruction.loss_chunk_tokens) if fast else None
        # flash-attention keeps packed sequences apart only within a single row (see causal_lm.py)
        self.padding_free = self.model.config._attn_implementation == "flash_attention_2"
        checkpointing = wants_activation_checkpointing(cfg, device, self.model.config,
                                                       self.micro_rows * cfg.instruction.max_length)
        if checkpointing:
            enable_activation_checkpointing(self.model)
        log(f"instruction: {len(splits['train'])} training examples in {self.train_rows} sequences "
            f"(packing {'on' if cfg.instruction.packing else 'off'}, max_length {cfg.instruction.max_length}); "
            f"{self.batch_size} sequences per step in micro-batches of {min(self.micro_rows, self.batch_size)}; "
            f"base weights {self.model.get_base_model().dtype}, attention "
            f"{self.model.config._attn_implementation}, loss {'chunked' if fast else 'full logits'}"
            f"{', padding-free' if self.padding_free else ''}, "
            f"activation checkpointing {'on' if checkpointing else 'off'}")
        with self.model.disable_adapter():  # the untrained base model: the baseline the adapter must beat
            self.base_test = self.loss_on("test")

    def loss_on(self, split: str) -> dict[str, float]:
        return evaluate_loss(self.model, self.data[split], self.tokenizer.pad_token_id, self.micro_rows,
                             self.last_hidden, self.padding_free)

    def batch_loss(self, forward, rows: list[int]) -> tuple[torch.Tensor, int]:
        sequences = [self.data["train"][i] for i in rows]
        self.tokens_seen += sum(len(s["input_ids"]) for s in sequences)
        batch = collate(sequences, self.tokenizer.pad_token_id, self.device, self.padding_free)
        return token_loss(forward, batch, self.device, self.last_hidden)

    def epoch_loss(self, steps: list[tuple[float, int]]) -> float:
        """The mean loss per response token over the epoch."""
        return sum(total for total, _ in steps) / max(sum(count for _, count in steps), 1)

    def validate(self, train_loss: float) -> loop.Validation:
        val = self.loss_on("validation") if self.data.get("validation") \
            else {"loss": train_loss, "perplexity": math.exp(min(train_loss, 700))}
        return loop.Validation(-val["loss"], {"loss": val["loss"], "perplexity": val["perplexity"]},
                               f"validation loss {val['loss']:.4f} (perplexity {val['perplexity']:.2f})")

    def evaluate(self, state: TrainState) -> dict:
        scores = {name: self.loss_on(name) for name in ("validation", "test") if self.data.get(name)}
        test = scores.get("test", {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0})
        generation = self.generation()
        return {
            "approach": "instruction",
            "task": "instruction",
            "base_model": self.cfg.instruction.base_model,
            "test": {**test, "rouge_l": generation["rouge_l_f1"]},
            "validation": scores.get("validation"),
            "base_model_test": {**self.base_test, "rouge_l": generation["base_model_rouge_l_f1"]},
            "generation": generation,
            "split_sizes": {name: len(pairs) for name, pairs in self.splits.items()},
            "sequences": {name: len(seqs) for name, seqs in self.data.items()},
            "packing": self.cfg.instruction.packing,
        }

    def generation(self) -> dict:
        """ROUGE-L F1 of greedy answers to a seeded sample of test prompts, base model and adapter."""
        test = self.splits.get("test") or []
        picked = sample_indices(len(test), self.cfg.instruction.generation_samples, self.cfg.seed)
        if not picked:
            return {"samples": 0, "max_new_tokens": self.cfg.instruction.generation_max_new_tokens,
                    "rouge_l_f1": float("nan"), "base_model_rouge_l_f1": float("nan"), "examples": []}
        self.log(f"generation: greedy answers to {len(picked)} test prompts (at most "
                 f"{self.cfg.instruction.generation_max_new_tokens} new tokens), base model then adapter")
        return generation_scores(self.model, self.tokenizer, [example_messages(*test[i]) for i in picked],
                                 self.cfg.instruction.generation_max_new_tokens, self.cfg.batch_size, log=self.log)


def write_pairs(splits: dict[str, Pairs], splits_dir: str | Path) -> None:
    """`<split>.jsonl` files of {"prompt", "response"} records (and "messages" where a pair carries a
    conversation), as `read_pairs` reads them."""
    for name, pairs in splits.items():
        lines = []
        for first, response in pairs:
            messages = example_messages(first, response)
            row = {"prompt": first, "response": response}
            if messages != chat_messages(first, response):
                row = {"prompt": messages[-2]["content"] if len(messages) > 1 else "", "response": response,
                       "messages": messages}
            lines.append(json.dumps(row) + "\n")
        (Path(splits_dir) / f"{name}.jsonl").write_text("".join(lines))


def read_pairs(splits_dir: str | Path) -> dict[str, Pairs]:
    """Training pairs per split from the exported `<split>.jsonl` files that exist: (messages JSON, response)
    for records with `messages`, else (prompt, response)."""
    return {name: [(json.dumps(r["messages"]) if r.get("messages") else r["prompt"], r["response"]) for r in rows]
            for name, rows in read_split_rows(splits_dir).items()}


def main(argv: list[str] | None = None) -> None:
    """Instruction-tune from exported splits without dagster, e.g. on a GPU machine."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m finetune_pipeline.training.instruction", description=main.__doc__)
    parser.add_argument("splits_dir", help="exports/splits/ (train/validation/test.jsonl with prompt and response)")
    parser.add_argument("output_dir")
    parser.add_argument("--settings", help="JSON of TrainingSettings fields; instruction.base_model is required")
    parser.add_argument("--data-snapshot", default="", help="recorded in metrics.json and the model card")
    args = parser.parse_args(argv)
    cfg = TrainingSettings.model_validate(json.loads(args.settings or "{}"))
    result = train_instruction(read_pairs(args.splits_dir), cfg, args.output_dir, data_snapshot=args.data_snapshot)
    if distributed.World.from_env().main:
        print(json.dumps({"test": result.test, "base_model_test": result.base_model_test,
                          "epochs_run": result.epochs_run, "wall_time_s": result.wall_time_s,
                          "train_tokens_per_s": result.train_tokens_per_s}, indent=2))


def load_instruction_adapter(adapter_dir: str | Path, adapter_name: str = "default"):
    """(model, tokenizer) for an adapter saved by `train_instruction`, ready for generation."""
    adapter_dir = Path(adapter_dir)
    result = TrainingResult.from_json(adapter_dir / "metrics.json")
    model = AutoModelForCausalLM.from_pretrained(result.base_model)
    model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=adapter_name)
    model.eval()
    return model, AutoTokenizer.from_pretrained(adapter_dir)


if __name__ == "__main__":
    main()
