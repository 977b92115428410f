"""Paraphrases and synthetic examples for under-represented labels, filtered before they are used.

A candidate is dropped, with its reason counted, when it is:
- `empty`;
- `identical_to_source`: the same words as its source or one of its few-shot examples;
- `near_duplicate`: word n-gram Jaccard with its source at or above the dedup threshold (the same
  measure and threshold as the deduplication stage), the same words as any existing or generated text,
  or, for synthetic text, embedding cosine with an existing text at or above `max_similarity`;
- `too_far`: a paraphrase whose embedding cosine with its source is under `min_similarity`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from finetune_pipeline.augment.generators import Conversation, GenerationError, TextGenerator, make_generator
from finetune_pipeline.augment.oversample import oversample
from finetune_pipeline.embeddings import EmbeddingCache, embed
from finetune_pipeline.settings import Settings

log = logging.getLogger(__name__)

SYNTHETIC_SYSTEM = ("You write new, realistic examples for a text dataset. Reply with the new text only, "
                    "without a number, a label or quotes.")


@dataclass
class Generated:
    rows: list[dict] = field(default_factory=list)  # {"text", "augmented_from", "augmentation"}
    dropped: Counter = field(default_factory=Counter)


@dataclass
class Augmented:
    """What a kind's augmenters made from the training records (`Task.augment`): new rows
    ({"augmented_from", "augmentation", "augmentation_model"} and the fields they change), candidates dropped
    by reason, the generator's name when one ran, and why it failed (the gaps were then filled by copies, or
    left open for kinds that are never copied)."""

    rows: list[dict] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    generator: str | None = None
    generator_error: str | None = None


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def ngram_jaccard(a: str, b: str, n: int) -> float:
    def grams(text):
        tokens = text.split()
        return {tuple(tokens[i:i + n]) for i in range(max(1, len(tokens) - n + 1))}
    ga, gb = grams(words(a)), grams(words(b))
    return len(ga & gb) / len(ga | gb) if ga | gb else 1.0


def synthetic_conversation(label: str, examples: list[str]) -> Conversation:
    shown = "\n\n".join(f"{i}. {text}" for i, text in enumerate(examples, start=1))
    return [{"role": "system", "content": SYNTHETIC_SYSTEM},
            {"role": "user", "content": f"Examples of texts labeled '{label}':\n\n{shown}\n\nWrite one new text "
                                        f"that would get the same label. It must differ from the examples in "
                                        f"content and wording."}]


class CandidateFilter:
    """Checks candidates against their sources and everything seen so far (existing + accepted)."""

    def __init__(self, existing_texts: list[str], settings: Settings, embedder=None,
                 cache: EmbeddingCache | None = None):
        self.settings = settings
        # Similarity is judged with the embedding model and limits semantic deduplication uses; `cache`:
        # vectors embedded before (embeddings.EmbeddingCache) are reused.
        self.embed = embedder or (lambda texts: embed(texts, settings.dedup.semantic_model,
                                                      settings.dedup.semantic_batch_size,
                                                      settings.dedup.semantic_max_length, cache=cache))
        self.seen = {words(t) for t in existing_texts}
        self.existing_texts = existing_texts
        self._existing_vectors: np.ndarray | None = None

    def existing_vectors(self) -> np.ndarray:
        if self._existing_vectors is None:
            self._existing_vectors = self.embed(self.existing_texts)
        return self._existing_vectors

    def paraphrases(self, sources: list[str], candidates: list[list[str]], dropped: Counter) -> list[list[str]]:
        """Kept candidates per source."""
        flat = [(i, c.strip()) for i, cands in enumerate(candidates) for c in cands]
        flat = [(i, c) for i, c in flat if self._lexical_ok(c, [sources[i]], dropped)]
        kept: list[list[str]] = [[] for _ in sources]
        if not flat:
            return kept
        vectors = self.embed([c for _, c in flat])
        source_vectors = self.embed(sources)
        for (i, text), vector in zip(flat, vectors):
            if float(vector @ source_vectors[i]) < self.settings.augmentation.min_similarity:
                dropped["too_far"] += 1
            elif self._accept(text, dropped):
                kept[i].append(text)
        return kept

    def synthetic(self, examples: list[list[str]], candidates: list[str], dropped: Counter) -> list[str | None]:
        """Each candidate kept (its text) or dropped (None)."""
        out: list[str | None] = [None] * len(candidates)
        checked = [(i, c.strip()) for i, c in enumerate(candidates)
                   if self._lexical_ok(c.strip(), examples[i], dropped)]
        if not checked:
            return out
        vectors = self.embed([c for _, c in checked])
        nearest = (vectors @ self.existing_vectors().T).max(axis=1) if len(self.existing_texts) else \
            np.full(len(checked), -1.0)
        accepted_vectors: list[np.ndarray] = []
        for (i, text), vector, near in zip(checked, vectors, nearest):
            near = max([near] + [float(vector @ v) for v in accepted_vectors])
            if near >= self.settings.augmentation.max_similarity:
                dropped["near_duplicate"] += 1
            elif self._accept(text, dropped):
                out[i] = text
                accepted_vectors.append(vector)
        return out

    def _lexical_ok(self, text: str, sources: list[str], dropped: Counter) -> bool:
        if not text:
            dropped["empty"] += 1
            return False
        if any(words(text) == words(s) for s in sources):
            dropped["identical_to_source"] += 1
            return False
        dedup = self.settings.dedup
        if any(ngram_jaccard(text, s, dedup.ngram) >= dedup.threshold for s in sources):
            dropped["near_duplicate"] += 1
            return False
        return True

    def _accept(self, text: str, dropped: Counter) -> bool:
        key = words(text)
        if key in self.seen:
            dropped["near_duplicate"] += 1
            return False
        self.seen.add(key)
        return True


def paraphrase_label(train: pl.DataFrame, label: str, gap: int, generator: TextGenerator,
                     check: CandidateFilter, settings: Settings, rng: np.random.Generator) -> Generated:
    """Up to `gap` paraphrases of this label's training records (each source used once, in seeded order)."""
    out = Generated()
    members = train.filter(pl.col("label") == label).sort("record_id")
    per = settings.augmentation.paraphrases_per_record
    order = rng.permutation(members.height)[: -(-gap // per)]
    sources = members[order.tolist()]
    candidates = generator.paraphrase(sources["text"].to_list(), per)
    kept = check.paraphrases(sources["text"].to_list(), candidates, out.dropped)
    for source_id, texts in zip(sources["record_id"], kept):
        out.rows += [{"text": t, "augmented_from": source_id, "augmentation": "paraphrase"} for t in texts]
    out.rows = out.rows[:gap]
    return out


def synthesize_label(train: pl.DataFrame, label: str, count: int, generator: TextGenerator,
                     check: CandidateFilter, settings: Settings, rng: np.random.Generator) -> Generated:
    """Up to `count` new examples from few-shot prompts of this label's real training records.
    `augmented_from` names the first example shown, so the row stays with training data."""
    out = Generated()
    members = train.filter(pl.col("label") == label).sort("record_id")
    shots = min(settings.augmentation.synthetic_shots, members.height)
    picks = [rng.choice(members.height, size=shots, replace=False).tolist() for _ in range(count)]
    examples = [members[p]["text"].to_list() for p in picks]
    replies = generator.complete([synthetic_conversation(label, e) for e in examples], 1)
    kept = check.synthetic(examples, [r[0] if r else "" for r in replies], out.dropped)
    for pick, text in zip(picks, kept):
        if text is not None:
            out.rows.append({"text": text, "augmented_from": members["record_id"][pick[0]],
                             "augmentation": "synthetic"})
    return out


def label_gaps(train: pl.DataFrame, settings: Settings) -> tuple[int, dict[str, int]]:
    """(target rows per label, rows missing per label) in the training split."""
    counts = dict(train.group_by("label").len().iter_rows())
    if not counts:
        return 0, {}
    cfg = settings.augmentation
    target = cfg.target_count or math.ceil(max(counts.values()) * cfg.oversample_ratio)
    return target, {label: target - n for label, n in sorted(counts.items()) if target > n}


def augment_labels(train: pl.DataFrame, settings: Settings, generator: TextGenerator | None = None,
                   cache: EmbeddingCache | None = None) -> Augmented:
    """Labeled texts: each label topped up to its target (`label_gaps`) by, in order, paraphrases of its
    records, synthetic examples (at most `synthetic_max_share` of the target) and copies. A generator that
    fails is reported and the gaps are filled by copies."""
    cfg = settings.augmentation
    target, gaps = label_gaps(train, settings)
    rng = np.random.default_rng(settings.splits.seed)
    out = Augmented()
    dropped: Counter = Counter()
    if (cfg.paraphrase or cfg.synthetic) and gaps:
        try:
            generator = generator or make_generator(cfg.generator)
            out.generator = generator.name
            check = CandidateFilter(train["text"].to_list(), settings, cache=cache)
            for label in list(gaps):
                if cfg.paraphrase:
                    made = paraphrase_label(train, label, gaps[label], generator, check, settings, rng)
                    out.rows += [{**r, "augmentation_model": generator.name} for r in made.rows]
                    dropped += made.dropped
                    gaps[label] -= len(made.rows)
                if cfg.synthetic and gaps[label] > 0:
                    count = min(gaps[label], math.floor(cfg.synthetic_max_share * target))
                    made = synthesize_label(train, label, count, generator, check, settings, rng) if count else None
                    if made:
                        out.rows += [{**r, "augmentation_model": generator.name} for r in made.rows]
                        dropped += made.dropped
                        gaps[label] -= len(made.rows)
        except GenerationError as exc:
            out.generator_error = str(exc)
            log.warning("augmentation generator failed: %s; the gaps are filled by oversampling", exc)
    if cfg.oversample:
        out.rows += oversample(train, gaps, settings.splits.seed)
    out.dropped = dict(dropped)
    return out
