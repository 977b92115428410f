"""Domain relevance (seed 1.1): score each record against the task's domain and reject (or flag) the ones
that do not belong, e.g. a recipe or a newsletter that landed among support tickets.

Two scores, both on the MiniLM sentence embeddings of `embeddings.embed`:
- similarity (in-domain examples and/or a description): the mean cosine similarity of a record to its
  `top_k` most similar in-domain examples (the description is one more example);
- classifier (when out-of-domain examples exist too): a logistic regression on the embeddings of both
  kinds, the score being the probability of in-domain.
A conversation is scored on its prompt (every turn before the final answer), which says what it is about.
Runs at the start of `deduplicated_corpus` (dedup/__init__.py), so a duplicate never names an off-domain
record as the one kept. Rejects carry the score, never the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.records import StageResult, StageStats, empty_rejects, reject_rows
from finetune_pipeline.settings import DomainSettings

STAGE = "deduplicated_corpus"
REASON = "off_domain"
EXAMPLE_SUFFIXES = (".txt", ".md")
BIN_WIDTH = 0.1


@dataclass
class DomainStats(StageStats):
    method: str = ""  # similarity | classifier
    policy: str = ""  # reject | flag
    threshold: float = 0.0  # in the method's unit: cosine similarity, or probability of in-domain
    scored: int = 0
    off_domain: int = 0  # rejected or flagged
    in_domain_examples: int = 0  # the description counts as one
    out_of_domain_examples: int = 0
    score_histogram: dict[str, int] = field(default_factory=dict)  # records by score bin ("0.3-0.4": n)


def read_examples(folder: str | Path) -> list[str]:
    """Every .txt/.md file under `folder` (sorted by path) as one example text; empty files are skipped."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES)
    texts = [p.read_text(encoding="utf-8", errors="replace").strip() for p in paths]
    return [t for t in texts if t]


def _embed(texts: list[str], cfg: DomainSettings, cache: EmbeddingCache | None = None) -> np.ndarray:
    from finetune_pipeline.embeddings import embed  # torch on first use only

    return embed(texts, cfg.model, cfg.batch_size, cfg.max_length, cache=cache)


@dataclass
class DomainScorer:
    """Scores texts against a domain; `threshold` in the score's unit."""

    cfg: DomainSettings
    in_domain: np.ndarray  # (n, dim) embeddings of the in-domain examples (and the description)
    classifier: object | None = None  # LogisticRegression when out-of-domain examples exist
    out_of_domain_examples: int = 0

    @classmethod
    def from_settings(cls, cfg: DomainSettings, in_texts: list[str] | None = None,
                      out_texts: list[str] | None = None, cache: EmbeddingCache | None = None) -> "DomainScorer":
        """From the settings' description and example folders, or from the texts given (benchmarks, tests);
        `cache`: where the example vectors are looked up first (embeddings.EmbeddingCache)."""
        if in_texts is None:
            in_texts = read_examples(cfg.examples_dir) if cfg.examples_dir else []
        if out_texts is None:
            out_texts = read_examples(cfg.out_of_domain_dir) if cfg.out_of_domain_dir else []
        in_texts = [*([cfg.description] if cfg.description else []), *in_texts]
        if not in_texts:
            raise ValueError("domain: no description and no in-domain example; set domain.description or "
                             "domain.examples_dir")
        return cls.from_embeddings(cfg, _embed(in_texts, cfg, cache),
                                   _embed(out_texts, cfg, cache) if out_texts else None)

    @classmethod
    def from_embeddings(cls, cfg: DomainSettings, in_domain: np.ndarray,
                        out_domain: np.ndarray | None = None) -> "DomainScorer":
        """From example embeddings (rows of unit length); a classifier when out-of-domain ones are given."""
        classifier = None
        if out_domain is not None and len(out_domain):
            from sklearn.linear_model import LogisticRegression

            x = np.concatenate([in_domain, out_domain])
            y = np.r_[np.ones(len(in_domain)), np.zeros(len(out_domain))]
            # balanced: a few in-domain examples beside many out-of-domain ones still put P = 0.5 at the border
            classifier = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=0).fit(x, y)
        return cls(cfg, in_domain, classifier, 0 if out_domain is None else len(out_domain))

    @property
    def method(self) -> str:
        return "classifier" if self.classifier is not None else "similarity"

    @property
    def threshold(self) -> float:
        return self.cfg.classifier_threshold if self.classifier is not None else self.cfg.threshold

    def score(self, texts: list[str], cache: EmbeddingCache | None = None) -> np.ndarray:
        """(len(texts),) relevance scores: mean top-k cosine similarity, or probability of in-domain."""
        if not texts:
            return np.zeros(0)
        return self.score_embeddings(_embed(texts, self.cfg, cache))

    def score_embeddings(self, x: np.ndarray) -> np.ndarray:
        """Scores of texts already embedded with the same model."""
        if self.classifier is not None:
            return self.classifier.predict_proba(x)[:, 1]
        similarity = x @ self.in_domain.T
        k = min(self.cfg.top_k, similarity.shape[1])
        return np.sort(similarity, axis=1)[:, -k:].mean(axis=1)


def score_histogram(scores: np.ndarray, low: float = 0.0) -> dict[str, int]:
    """Records per 0.1-wide score bin from `low` to 1.0, every bin listed (and one below `low` when any)."""
    edges = np.round(np.arange(low, 1.0 + 1e-9, BIN_WIDTH), 2)
    counts = {f"< {low:.1f}": int((scores < low).sum())} if (scores < low).any() else {}
    for start, end in zip(edges[:-1], edges[1:]):
        inside = (scores >= start) & ((scores < end) if end < 1.0 else (scores <= end))
        counts[f"{start:.1f}-{end:.1f}"] = int(inside.sum())
    return counts


def record_texts(corpus: pl.DataFrame) -> list[str]:
    """What is scored: a conversation's prompt, any other record's text."""
    if "prompt" in corpus.columns:
        return corpus.select(pl.coalesce("prompt", "text").fill_null("")).to_series().to_list()
    return corpus["text"].fill_null("").to_list()


def domain_filter(corpus: pl.DataFrame, cfg: DomainSettings, scorer: DomainScorer | None = None,
                  cache: EmbeddingCache | None = None) -> StageResult:
    """Score every record; below the threshold: rejected as off_domain (detail: the score), or flagged.
    `cache`: vectors of texts embedded before (embeddings.EmbeddingCache) are reused."""
    scorer = scorer or DomainScorer.from_settings(cfg, cache=cache)
    scores = scorer.score(record_texts(corpus), cache)
    below = pl.Series("_below", scores < scorer.threshold, dtype=pl.Boolean)
    stats = DomainStats(method=scorer.method, policy=cfg.policy, threshold=scorer.threshold, scored=corpus.height,
                        off_domain=int(below.sum()), in_domain_examples=len(scorer.in_domain),
                        out_of_domain_examples=scorer.out_of_domain_examples,
                        score_histogram=score_histogram(scores))
    marked = corpus.with_columns(below, pl.Series("_score", scores, dtype=pl.Float64))
    unit = "probability of in-domain" if scorer.method == "classifier" else "mean cosine similarity to the " \
        "domain's nearest examples"
    setting = "domain.classifier_threshold" if scorer.method == "classifier" else "domain.threshold"
    if cfg.policy == "flag":
        flags = pl.col("quality_flags") if "quality_flags" in corpus.columns else pl.lit([], dtype=pl.List(pl.String))
        kept = marked.with_columns(pl.when(pl.col("_below")).then(flags.list.concat(pl.lit([REASON])))
                                   .otherwise(flags).alias("quality_flags"))
        return StageResult(kept=kept.drop("_below", "_score"), rejected=empty_rejects(), stats=stats)
    detail = pl.format(f"relevance score {{}} ({unit}) below {setting} {scorer.threshold}; if such records "
                       f"belong, add examples like them to domain.examples_dir or lower {setting}",
                       pl.col("_score").round(3))
    rejected = reject_rows(marked.filter(pl.col("_below")), STAGE, REASON, detail)
    return StageResult(kept=marked.filter(~pl.col("_below")).drop("_below", "_score"), rejected=rejected, stats=stats)
