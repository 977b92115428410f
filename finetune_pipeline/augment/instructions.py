"""Augmentation for conversations (task: instruction), off unless `augmentation.paraphrase` or
`augmentation.synthetic` is on. Only training conversations are used; validation and test never change.

- `prompt_paraphrase`: the last user turn before the final answer, rewritten by the generator; every other
  turn and the answer are kept. With a `category` column, categories under the target (the largest
  category's count x `oversample_ratio`, or `target_count`) get paraphrases until they reach it; without
  one, every training conversation gets `paraphrases_per_record`.
- `synthetic_instruction`: a new instruction and answer written by the generator from `synthetic_shots`
  real pairs of a category under its target (at most `synthetic_max_share` of the target). Needs a
  category column and a model backend (`hf_local` or `openai`); the reply must read "Instruction: ...",
  then "Answer: ...", or it is dropped as `unparsable`.

Candidates pass the same filter as label paraphrases (augment/generate.py: not empty, not the source's
words, not a near duplicate, close enough in meaning), and every generated turn goes through the privacy
policy again: a model can write an e-mail address no input had. A candidate whose PII policy says drop is
dropped as `pii`. Conversations are never copied: a copy teaches nothing and would pass for new data.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter

import numpy as np
import polars as pl

from finetune_pipeline.augment.generate import Augmented, CandidateFilter, Generated
from finetune_pipeline.augment.generators import Conversation, GenerationError, TextGenerator, make_generator
from finetune_pipeline.cleaning.privacy import apply_pii_policy_groups
from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.settings import Settings
from finetune_pipeline.sources.conversations import conversation_fields

log = logging.getLogger(__name__)
CATEGORY = "category"
SYNTHETIC_SYSTEM = ("You write new training examples for an assistant. Reply in exactly this form:\n"
                    "Instruction: <a new request a user could make>\nAnswer: <the assistant's answer>")
_PAIR = re.compile(r"^\s*instruction\s*:\s*(?P<instruction>.+?)\n\s*answer\s*:\s*(?P<answer>.+)\s*$",
                   re.IGNORECASE | re.DOTALL)


def _last_user_turn(turns: list[dict]) -> int:
    return max(i for i, t in enumerate(turns[:-1]) if t["role"] == "user")


def category_gaps(train: pl.DataFrame, settings: Settings) -> tuple[int, dict[str, int]]:
    """(target per category, conversations missing per category); ({}, 0) without a category column."""
    if CATEGORY not in train.columns or train[CATEGORY].null_count() == train.height:
        return 0, {}
    counts = dict(train.filter(pl.col(CATEGORY).is_not_null()).group_by(CATEGORY).len().iter_rows())
    cfg = settings.augmentation
    target = cfg.target_count or math.ceil(max(counts.values()) * cfg.oversample_ratio)
    return target, {c: target - n for c, n in sorted(counts.items()) if target > n}


def _redacted(turn_groups: list[list[str]], settings: Settings, dropped: Counter) -> list[list[str] | None]:
    """Each group of generated turns after the privacy policy; None where a found type's policy is drop."""
    out = []
    for results in apply_pii_policy_groups(turn_groups, settings.privacy):
        if any(r.drop_because for r in results):
            dropped["pii"] += 1
            out.append(None)
        else:
            out.append([r.text for r in results])
    return out


def paraphrase_prompts(sources: pl.DataFrame, per_record: int, generator: TextGenerator, check: CandidateFilter,
                       settings: Settings) -> Generated:
    """`per_record` prompt paraphrases of each source conversation (fewer where candidates are dropped)."""
    out = Generated()
    conversations = [json.loads(m) for m in sources["messages"]]
    prompts = [turns[_last_user_turn(turns)]["content"] for turns in conversations]
    kept = check.paraphrases(prompts, generator.paraphrase(prompts, per_record), out.dropped)
    flat = [(i, text) for i, texts in enumerate(kept) for text in texts]
    for (i, _), redacted in zip(flat, _redacted([[t] for _, t in flat], settings, out.dropped)):
        if redacted is None:
            continue
        turns = [dict(t) for t in conversations[i]]
        turns[_last_user_turn(turns)]["content"] = redacted[0]
        out.rows.append({**conversation_fields(turns), "augmented_from": sources["record_id"][i],
                         "augmentation": "prompt_paraphrase"})
    return out


def synthetic_request(category: str, examples: list[tuple[str, str]]) -> Conversation:
    shown = "\n\n".join(f"Instruction: {p}\nAnswer: {r}" for p, r in examples)
    return [{"role": "system", "content": SYNTHETIC_SYSTEM},
            {"role": "user", "content": f"Examples of the category '{category}':\n\n{shown}\n\nWrite one new "
                                        "example of the same category, different from these in content and wording."}]


def synthesize_instructions(members: pl.DataFrame, category: str, count: int, generator: TextGenerator,
                            check: CandidateFilter, settings: Settings, rng: np.random.Generator) -> Generated:
    """Up to `count` new single-turn conversations of `category` from few-shot prompts of its real pairs;
    `augmented_from` names the first example shown, so the row stays with the training data."""
    out = Generated()
    shots = min(settings.augmentation.synthetic_shots, members.height)
    picks = [rng.choice(members.height, size=shots, replace=False).tolist() for _ in range(count)]
    examples = [[(members["prompt"][i], members["response"][i]) for i in pick] for pick in picks]
    replies = generator.complete([synthetic_request(category, e) for e in examples], 1)
    pairs = []
    for pick, shown, reply in zip(picks, examples, replies):
        match = _PAIR.match(reply[0]) if reply else None
        if match is None:
            out.dropped["unparsable"] += 1
            continue
        pairs.append((pick, shown, match["instruction"].strip(), match["answer"].strip()))
    accepted = check.synthetic([[f"{p}\n{r}" for p, r in shown] for _, shown, _, _ in pairs],
                               [f"{instruction}\n{answer}" for _, _, instruction, answer in pairs], out.dropped)
    chosen = [(pick, i, a) for (pick, _, i, a), ok in zip(pairs, accepted) if ok is not None]
    for (pick, _, _), redacted in zip(chosen, _redacted([[i, a] for _, i, a in chosen], settings, out.dropped)):
        if redacted is None:
            continue
        turns = [{"role": "user", "content": redacted[0]}, {"role": "assistant", "content": redacted[1]}]
        out.rows.append({**conversation_fields(turns), "augmented_from": members["record_id"][pick[0]],
                         "augmentation": "synthetic_instruction"})
    return out


def augment_conversations(train: pl.DataFrame, settings: Settings, generator: TextGenerator,
                          rng: np.random.Generator, cache: EmbeddingCache | None = None) -> Generated:
    """Prompt paraphrases and synthetic pairs for the training conversations (see the module docstring).
    `cache`: the candidate filters' sentence vectors are looked up there first."""
    cfg = settings.augmentation
    out = Generated()
    check = CandidateFilter(train["prompt"].to_list(), settings, cache=cache)
    check_pairs = CandidateFilter([f"{p}\n{r}" for p, r in zip(train["prompt"], train["response"])], settings,
                                  cache=cache)
    target, gaps = category_gaps(train, settings)
    if not target:  # no categories: every conversation gets its paraphrases
        if cfg.paraphrase and train.height:
            made = paraphrase_prompts(train.sort("record_id"), cfg.paraphrases_per_record, generator, check, settings)
            out.rows, out.dropped = made.rows, made.dropped
        return out
    for category, gap in gaps.items():
        members = train.filter(pl.col(CATEGORY) == category).sort("record_id")
        if cfg.paraphrase:
            per = cfg.paraphrases_per_record
            order = rng.permutation(members.height)[: -(-gap // per)]
            made = paraphrase_prompts(members[order.tolist()], per, generator, check, settings)
            made.rows = made.rows[:gap]
            out.rows += made.rows
            out.dropped += made.dropped
            gap -= len(made.rows)
        count = min(gap, math.floor(cfg.synthetic_max_share * target))
        if cfg.synthetic and count > 0:
            made = synthesize_instructions(members, category, count, generator, check_pairs, settings, rng)
            out.rows += made.rows
            out.dropped += made.dropped
    return out


def augment_instruction_rows(train: pl.DataFrame, settings: Settings, generator: TextGenerator | None = None,
                             cache: EmbeddingCache | None = None) -> Augmented:
    """Instruction data's augmented rows (`augment_conversations`), with the generator named; none when
    paraphrase and synthetic are off or the generator fails (conversations are never copied)."""
    cfg = settings.augmentation
    out = Augmented()
    if cfg.paraphrase or cfg.synthetic:
        try:
            generator = generator or make_generator(cfg.generator)
            out.generator = generator.name
            made = augment_conversations(train, settings, generator, np.random.default_rng(settings.splits.seed),
                                         cache)
            out.rows = [{**r, "augmentation_model": generator.name} for r in made.rows]
            out.dropped = dict(made.dropped)
        except GenerationError as exc:
            out.generator_error = str(exc)
            log.warning("augmentation generator failed: %s; nothing added", exc)
    if not out.rows:
        log.info("augmentation: nothing added to the conversations (they are never copied)")
    return out
