"""Generation metric of instruction tasks: greedy answers to test prompts, scored by ROUGE-L F1.

Each sampled test conversation is cut before its final answer and rendered by the tokenizer's chat template
with `add_generation_prompt=True`; the model continues it greedily for at most `generation_max_new_tokens`
tokens (stopping at the end-of-turn token), and the answer is scored against the reference answer with
ROUGE-L F1 (longest common subsequence of words; Google's `rouge-score` package, Porter-stemmed). The same
prompts go through the base model (the adapter disabled) and the tuned adapter, so the two compare.
Imports no dagster. Never trust_remote_code.
"""

from __future__ import annotations

import random
from functools import lru_cache

import torch

CARD_EXAMPLES = 3  # (prompt, reference, generated) examples kept for the model card


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_f1(generated: str, reference: str) -> float:
    """ROUGE-L F1 of `generated` against `reference` (0..1; lower-cased words, Porter-stemmed)."""
    return _scorer().score(reference, generated)["rougeL"].fmeasure


def sample_indices(count: int, samples: int, seed: int) -> list[int]:
    """A seeded sample of `samples` indices out of `count` (all of them when there are fewer), in order."""
    if samples >= count:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), samples))


def _stop_ids(model, tokenizer) -> list[int]:
    """Token ids that end an answer: the model's configured end-of-sequence ids and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int,
                     log=None, label: str = "model") -> list[str]:
    """The greedy continuation of each conversation in `prompts` (turns up to the answer), decoded without
    special tokens. Batches of `batch_size` left-padded prompts; `log` hears the progress."""
    model.eval()
    device = next(model.parameters()).device
    stop, pad = _stop_ids(model, tokenizer), tokenizer.pad_token_id
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = [list(tokenizer.apply_chat_template(p, tokenize=True, return_dict=True,
                                                    add_generation_prompt=True)["input_ids"])
                 for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        output = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=stop, pad_token_id=pad)
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]
        if log is not None:
            log(f"generation ({label}): {len(answers)}/{len(prompts)} answers")
    return answers


def generation_scores(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int, batch_size: int,
                      log=None) -> dict:
    """ROUGE-L F1 of the base model (adapter disabled) and of the adapter on `conversations` (each ending in
    its reference answer), with the first CARD_EXAMPLES (prompt, reference, generated) for the model card."""
    prompts = [turns[:-1] for turns in conversations]
    references = [turns[-1]["content"] for turns in conversations]
    with model.disable_adapter():
        base = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, log, "base model")
    tuned = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, log, "adapter")

    def mean(answers: list[str]) -> float:
        scores = [rouge_l_f1(a, r) for a, r in zip(answers, references)]
        return sum(scores) / len(scores) if scores else float("nan")

    return {
        "samples": len(conversations),
        "max_new_tokens": max_new_tokens,
        "rouge_l_f1": mean(tuned),
        "base_model_rouge_l_f1": mean(base),
        "examples": [{"prompt": prompts[i][-1]["content"], "reference": references[i], "generated": tuned[i],
                      "base_model_generated": base[i]} for i in range(min(CARD_EXAMPLES, len(prompts)))],
    }
