"""DPO (Rafailov et al. 2023, "Direct Preference Optimization") on a LoRA adapter of a causal LM.

Reads top to bottom:
1. Pairs: each record is a prompt (`prompt_messages` or `prompt`: a list of {role, content} messages or a
   string) with a `chosen` and a `rejected` answer (each messages or a string). Without a prompt, the
   turns `chosen` and `rejected` share at the start are the prompt (TRL's "implicit prompt").
2. Tokens, as TRL's `DPOTrainer` makes them for a conversational pair: the prompt rendered by the chat
   template with the generation prompt, and prompt+answer rendered whole; the answer is what follows the
   prompt's rendering (so it carries the end-of-turn token and the model learns to stop). String pairs
   are rendered as [user prompt, assistant answer] with the same template (the project's tokenizer always
   has one: chat.py). The prompt keeps its last `max_prompt_length` tokens; prompt+answer its
   first `max_length`.
3. Log-probabilities: the sum over answer tokens of log p(token | everything before it). The policy is
   the model with the adapter; the reference is the same model with the adapter disabled
   (`with model.disable_adapter():`), so there is no second copy of the base model in memory.
4. Loss: TRL's "sigmoid" loss, -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), averaged over the
   pairs of a batch (`test_dpo.py` checks it equals `trl.DPOTrainer.compute_loss` on the same batch).
5. A plain loop: seeded shuffles, AdamW on the LoRA weights, gradient clipping, a log line every
   `log_every` steps; then preference accuracy and reward margins on validation/test, for the adapter
   and for the base (preference_eval.py); the adapter (safetensors), tokenizer and metrics.json saved.
CUDA in bf16 when present, the CPU otherwise; imports no dagster. Never trust_remote_code.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from finetune_pipeline.atomic import atomic_path
from finetune_pipeline.training.base_model import autocast, quiet_transformers
from finetune_pipeline.chat import conversation_ids, load_chat_tokenizer
from finetune_pipeline.split_files import read_split_rows
from finetune_pipeline.settings import PreferenceTrainingSettings  # training.preference
from finetune_pipeline.training.preference_eval import PreferenceEvaluation, preference_evaluation

ROLES = {"system", "user", "assistant", "tool"}


# ---- pairs and tokens

def _messages(value, role: str, where: str) -> list[dict]:
    """`value` as a list of {role, content}: messages as they are, a JSON array of messages parsed, any
    other string as one message of `role`."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where} is empty: give it text or messages, or drop the pair")
        return [{"role": role, "content": value}]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} is {type(value).__name__} {value!r:.60}: give a string or a non-empty list of "
                         "{role, content} messages")
    for m in value:
        if not isinstance(m, dict) or not {"role", "content"} <= m.keys() or m["role"] not in ROLES:
            raise ValueError(f"{where}: {m!r:.80} is not a message: each needs a role in {sorted(ROLES)} and a "
                             "content")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def pair_conversations(record: dict, where: str = "pair") -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected) messages of a pair record (see the module's docstring, step 1)."""
    for side in ("chosen", "rejected"):
        if record.get(side) is None:
            raise ValueError(f"{where}: no {side!r} answer; every pair needs a chosen and a rejected answer")
    chosen = _messages(record["chosen"], "assistant", f"{where}.chosen")
    rejected = _messages(record["rejected"], "assistant", f"{where}.rejected")
    prompt = record.get("prompt_messages") or record.get("prompt")
    if prompt is not None:
        return _messages(prompt, "user", f"{where}.prompt"), chosen, rejected
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise ValueError(f"{where}: no prompt, and chosen and rejected share no first turn to take as one: add a "
                         "'prompt' column")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_pair(tokenizer, record: dict, max_length: int, max_prompt_length: int,
                  where: str = "pair") -> dict[str, list[int]]:
    """{"prompt_ids", "chosen_ids", "rejected_ids"} (TRL's names) of one pair, truncated (step 2)."""
    return truncate_pair(pair_tokens(tokenizer, record, where), max_length, max_prompt_length)


def pair_tokens(tokenizer, record: dict, where: str = "pair") -> dict[str, list[int]]:
    """`tokenize_pair` without truncation."""
    prompt, chosen, rejected = pair_conversations(record, where)
    prompt_ids = conversation_ids(tokenizer, prompt, add_generation_prompt=True)
    with_chosen = conversation_ids(tokenizer, prompt + chosen)
    with_rejected = conversation_ids(tokenizer, prompt + rejected)
    # As TRL: the answer starts where the prompt's rendering and prompt+answer part (tokens may merge there).
    start = min(_common_prefix(prompt_ids, with_chosen), _common_prefix(prompt_ids, with_rejected))
    return {"prompt_ids": prompt_ids[:start], "chosen_ids": with_chosen[start:], "rejected_ids": with_rejected[start:]}


def truncate_pair(pair: dict[str, list[int]], max_length: int, max_prompt_length: int) -> dict[str, list[int]]:
    """The prompt's last `max_prompt_length` tokens, then each answer's first tokens up to `max_length` in all."""
    prompt_ids = pair["prompt_ids"][-max_prompt_length:]
    room = max_length - len(prompt_ids)
    return {"prompt_ids": prompt_ids, "chosen_ids": pair["chosen_ids"][:room],
            "rejected_ids": pair["rejected_ids"][:room]}


def collate_pairs(pairs: list[dict[str, list[int]]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """TRL's batch layout: the chosen sequences, then the rejected ones, right-padded; `completion_mask` is 1
    on answer tokens."""
    rows = [(p["prompt_ids"], p[side]) for side in ("chosen_ids", "rejected_ids") for p in pairs]
    width = max(len(prompt) + len(answer) for prompt, answer in rows)
    ids, attention, completion = [], [], []
    for prompt, answer in rows:
        gap = width - len(prompt) - len(answer)
        ids.append(prompt + answer + [pad_id] * gap)
        attention.append([1] * (len(prompt) + len(answer)) + [0] * gap)
        completion.append([0] * len(prompt) + [1] * len(answer) + [0] * gap)
    return {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(attention, device=device),
            "completion_mask": torch.tensor(completion, device=device)}


# ---- log-probabilities and the loss

def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row of `batch`, the sum of log p(token | tokens before it) over its answer tokens (nats)."""
    device = batch["input_ids"].device
    with autocast(device):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    targets = batch["input_ids"][:, 1:]  # position t predicts token t+1
    # One row at a time: a float32 log-softmax of the whole batch would hold 2 x batch x length x vocabulary.
    token_logps = torch.stack([torch.log_softmax(row.float(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
                               for row, target in zip(logits[:, :-1], targets)])
    return (token_logps * batch["completion_mask"][:, 1:]).sum(dim=1)


def pair_logps(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Policy (adapter on) and reference (adapter off, no gradient) log-probs of the chosen and rejected
    answers: {"chosen", "rejected", "ref_chosen", "ref_rejected"}, one value per pair."""
    policy = sequence_logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_logps(model, batch)
    chosen, rejected = policy.chunk(2)
    ref_chosen, ref_rejected = reference.chunk(2)
    return {"chosen": chosen, "rejected": rejected, "ref_chosen": ref_chosen, "ref_rejected": ref_rejected}


def dpo_loss(logps: dict[str, torch.Tensor], beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean sigmoid DPO loss, chosen rewards, rejected rewards); a reward is beta * (policy - reference)."""
    chosen_rewards = beta * (logps["chosen"] - logps["ref_chosen"])
    rejected_rewards = beta * (logps["rejected"] - logps["ref_rejected"])
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean(), chosen_rewards, rejected_rewards


@torch.no_grad()
def evaluate_preferences(model, pairs: list[dict], pad_id: int, beta: float, batch_size: int) -> PreferenceEvaluation:
    """Preference accuracy and reward margins of `model`'s adapter on tokenized `pairs`, and the base's
    log-likelihood accuracy (preference_eval.py). Leaves the model in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    parts = [pair_logps(model, collate_pairs(pairs[i:i + batch_size], pad_id, device))
             for i in range(0, len(pairs), batch_size)]
    return preference_evaluation({k: torch.cat([p[k] for p in parts]) if parts else torch.zeros(0)
                                  for k in ("chosen", "rejected", "ref_chosen", "ref_rejected")}, beta)


# ---- the recipe

@dataclass
class DPOEpoch:
    """One epoch of training, as logged and kept in `DPOResult.history`."""

    epoch: int
    train_loss: float  # mean over the epoch's steps
    train_reward_accuracy: float  # share of the epoch's pairs whose chosen reward beat the rejected one, in training
    steps: int


@dataclass
class DPOResult:
    """What `train_dpo` returns and saves as metrics.json."""

    approach: str
    base_model: str
    settings: dict
    split_sizes: dict[str, int]  # pairs per split, as given
    truncated: dict[str, int]  # pairs per split whose prompt or an answer lost tokens to the length limits
    steps: int
    history: list[DPOEpoch]
    test: PreferenceEvaluation | None
    validation: PreferenceEvaluation | None
    wall_time_s: float
    train_pairs_per_s: float
    data_snapshot: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DPOResult":
        raw = json.loads(text)
        raw["history"] = [DPOEpoch(**e) for e in raw["history"]]
        for split in ("test", "validation"):
            raw[split] = PreferenceEvaluation(**raw[split]) if raw[split] is not None else None
        return cls(**raw)


def device_for() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_dpo_model(cfg: PreferenceTrainingSettings, device: torch.device):
    """The causal LM at `cfg.base_model` (bf16 on CUDA, float32 on the CPU) with a fresh LoRA adapter."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with quiet_transformers():
        base = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype)
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=cfg.target_modules)
    return get_peft_model(base, lora).to(device)


def tokenize_split(tokenizer, records: list[dict], cfg: PreferenceTrainingSettings,
                   split: str) -> tuple[list[dict], int]:
    """(tokenized pairs, how many lost tokens to the length limits) of one split."""
    pairs, truncated = [], 0
    for i, record in enumerate(records):
        whole = pair_tokens(tokenizer, record, f"{split}[{i}]")
        pair = truncate_pair(whole, cfg.max_length, cfg.max_prompt_length)
        truncated += pair != whole
        pairs.append(pair)
    return pairs, truncated


def train_dpo(splits: dict[str, list[dict]], cfg: PreferenceTrainingSettings, output_dir: str | Path | None = None,
              data_snapshot: str = "", log=print) -> tuple[DPOResult, object]:
    """DPO on a LoRA adapter of `cfg.base_model` with the pair records of `splits` ("train", and "validation"/
    "test" when present, evaluated after training). Saves the adapter, tokenizer and metrics.json to
    `output_dir` when given (swapped in whole). Returns (result, the PeftModel)."""
    if not cfg.base_model:
        raise ValueError("training.preference.base_model is not set: name a local causal LM folder")
    if not splits.get("train"):
        raise ValueError("no training pairs: the train split is empty")
    started = time.perf_counter()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = device_for()
    tokenizer = load_chat_tokenizer(cfg.base_model)
    model = build_dpo_model(cfg, device)
    data, truncated = {}, {}
    for name, records in splits.items():
        data[name], truncated[name] = tokenize_split(tokenizer, records, cfg, name)
    train = data["train"]
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    log(f"dpo: {len(train)} training pairs ({truncated['train']} truncated), {steps_per_epoch} steps per epoch "
        f"of {cfg.batch_size} pairs, {cfg.epochs} epoch(s), beta {cfg.beta}, LoRA r {cfg.lora_r} on "
        f"{cfg.target_modules}, {device.type}")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    order = random.Random(cfg.seed)
    history, step = [], 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        rows = list(range(len(train)))
        order.shuffle(rows)
        losses, wins = [], 0
        for start in range(0, len(rows), cfg.batch_size):
            batch = collate_pairs([train[i] for i in rows[start:start + cfg.batch_size]], tokenizer.pad_token_id,
                                  device)
            loss, chosen_rewards, rejected_rewards = dpo_loss(pair_logps(model, batch), cfg.beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            step += 1
            losses.append(loss.item())
            wins += int((chosen_rewards > rejected_rewards).sum())
            if step % cfg.log_every == 0:
                log(f"dpo: epoch {epoch} step {step}/{steps_per_epoch * cfg.epochs}: loss {loss.item():.4f}, "
                    f"reward margin {(chosen_rewards - rejected_rewards).mean().item():.4f}")
        history.append(DPOEpoch(epoch, sum(losses) / len(losses), wins / len(train), len(losses)))
        log(f"dpo: epoch {epoch} done: mean loss {history[-1].train_loss:.4f}, reward accuracy "
            f"{history[-1].train_reward_accuracy:.3f}")
    train_time = time.perf_counter() - started
    scores = {name: evaluate_preferences(model, data[name], tokenizer.pad_token_id, cfg.beta, cfg.batch_size)
              for name in ("validation", "test") if data.get(name)}
    for name, score in scores.items():
        log(f"dpo: {name}: {score.summary()}")
    result = DPOResult(
        approach="dpo", base_model=cfg.base_model, settings=cfg.model_dump(),
        split_sizes={name: len(records) for name, records in splits.items()}, truncated=truncated, steps=step,
        history=history, test=scores.get("test"), validation=scores.get("validation"),
        wall_time_s=round(time.perf_counter() - started, 3),
        train_pairs_per_s=round(len(train) * cfg.epochs / train_time, 3), data_snapshot=data_snapshot)
    if output_dir is not None:
        save_dpo_adapter(model, tokenizer, result, output_dir)
    return result, model


def save_dpo_adapter(model, tokenizer, result: DPOResult, output_dir: str | Path) -> Path:
    """The adapter (adapter_config.json, adapter_model.safetensors), the tokenizer and metrics.json in
    `output_dir`, swapped in whole."""
    with atomic_path(Path(output_dir)) as tmp, quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "metrics.json").write_text(result.to_json())
    return Path(output_dir)


def load_dpo_adapter(adapter_dir: str | Path):
    """(model, tokenizer, result) for an adapter saved by `train_dpo`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(adapter_dir)
    result = DPOResult.from_json((adapter_dir / "metrics.json").read_text())
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(result.base_model), adapter_dir)
    model.eval()
    return model, AutoTokenizer.from_pretrained(adapter_dir), result


def read_preference_splits(splits_dir: str | Path) -> dict[str, list[dict]]:
    """Pair records per split from the `<split>.jsonl` files that exist in `splits_dir` (TRL's preference
    format: prompt, chosen, rejected)."""
    return read_split_rows(splits_dir)


def main(argv: list[str] | None = None) -> None:
    """DPO from exported preference splits without dagster, e.g. on a GPU machine."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m finetune_pipeline.training.dpo", description=main.__doc__)
    parser.add_argument("splits_dir", help="folder with train/validation/test.jsonl (prompt, chosen, rejected)")
    parser.add_argument("output_dir")
    parser.add_argument("--settings", help="JSON of PreferenceTrainingSettings fields; base_model is required")
    parser.add_argument("--data-snapshot", default="", help="recorded in metrics.json")
    args = parser.parse_args(argv)
    cfg = PreferenceTrainingSettings.model_validate(json.loads(args.settings or "{}"))
    result, _ = train_dpo(read_preference_splits(args.splits_dir), cfg, args.output_dir, args.data_snapshot)
    print(json.dumps({"test": asdict(result.test) if result.test else None, "steps": result.steps,
                      "wall_time_s": result.wall_time_s}, indent=2))


if __name__ == "__main__":
    main()
