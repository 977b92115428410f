"""A near-duplicate benchmark corpus with known true pairs, and pairwise precision/recall of a clustering.

Originals are ~1 kB texts of seeded random English words (a Zipf-weighted vocabulary from the word list
that `unstructured` ships, mixed with common function words). A share of the originals get edited
copies: word swaps, insertions, deletions and substitutions at a known rate, two sentences exchanged,
whitespace and case changed. Some originals also get a *related* document that reuses a few of their
sentences around new ones (shared boilerplate): a hard negative, not a duplicate.

Truth is a family id per document: an original and its copies share one; everything else has its own.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

# Word-edit rates of the copies (share of the words edited), drawn uniformly per copy.
EDIT_RATES = (0.0, 0.01, 0.02, 0.03, 0.05)
FUNCTION_WORDS = (
    "the of and to a in is that it for was on are as with be by at this have from or an but not "
    "they which you one had all were we when there can more if will my so what about out up them "
    "then no its me into has would our could been some new other than only do also after your "
    "just like over how any these may because most very well back our even much where way"
).split()


@dataclass
class NearDuplicateBenchmark:
    texts: list[str]
    family: np.ndarray  # int64: documents with the same family are true near duplicates
    kind: list[str]  # "original", "related", or the copy's edits, e.g. "copy rate=0.02 +reorder"
    edit_rate: np.ndarray  # float64: the word-edit rate of a copy; NaN for originals and related documents


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    spec = importlib.util.find_spec("unstructured")  # found without importing it (its import sends telemetry)
    words: list[str] = []
    if spec and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "nlp" / "english-words.txt"
        if path.exists():
            words = [w for w in path.read_text(encoding="utf-8").split() if w.isalpha() and w.islower()
                     and 3 <= len(w) <= 10]
    if len(words) < size:  # no word list: pronounceable pseudo-words
        syllables = [c + v for c in "bcdfghklmnprstvw" for v in "aeiou"]
        words = ["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(size * 2)]
    return list(rng.choice(sorted(set(words)), size=size, replace=False))


class _Writer:
    """Seeded sentences of Zipf-distributed words; about a third of the words are function words."""

    def __init__(self, rng: np.random.Generator, vocabulary_size: int = 20000):
        self.rng = rng
        self.content = np.array(_vocabulary(rng, vocabulary_size))
        weights = 1 / np.arange(1, len(self.content) + 1)
        self.cdf = np.cumsum(weights) / weights.sum()
        self.function = np.array(FUNCTION_WORDS)

    def words(self, k: int) -> np.ndarray:
        content = self.content[np.minimum(np.searchsorted(self.cdf, self.rng.random(k)), len(self.content) - 1)]
        function = self.function[self.rng.integers(len(self.function), size=k)]
        return np.where(self.rng.random(k) < 0.35, function, content)

    def sentences(self, count: int) -> list[str]:
        lengths = self.rng.integers(8, 24, size=count)
        words = self.words(int(lengths.sum())).tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        return [" ".join(words[bounds[i]:bounds[i + 1]]).capitalize() + "." for i in range(count)]

    def documents(self, count: int, chars: int) -> list[list[str]]:
        """`count` documents as lists of sentences, each at least `chars` characters long."""
        pool = self.sentences(count * (chars // 60 + 4))
        docs, current, size, i = [], [], 0, 0
        while len(docs) < count:
            if i == len(pool):
                pool, i = self.sentences(count), 0
            current.append(pool[i])
            size += len(pool[i]) + 1
            i += 1
            if size >= chars:
                docs.append(current)
                current, size = [], 0
        return docs


def _edit_words(words: list[str], rate: float, writer: _Writer, rng: np.random.Generator) -> list[str]:
    words = list(words)
    for _ in range(int(round(rate * len(words)))):
        op, i = rng.integers(4), int(rng.integers(len(words) - 1))
        if op == 0:  # swap two neighbouring words
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == 1:
            words.insert(i, str(writer.words(1)[0]))
        elif op == 2:
            del words[i]
        else:
            words[i] = str(writer.words(1)[0])
    return words


def _edited_copy(sentences: list[str], writer: _Writer, rng: np.random.Generator) -> tuple[str, str, float]:
    rate = float(rng.choice(EDIT_RATES))
    sentences = list(sentences)
    edits = [f"rate={rate:.2f}"]
    if rng.random() < 0.3 and len(sentences) > 2:
        i, j = rng.choice(len(sentences), size=2, replace=False)
        sentences[i], sentences[j] = sentences[j], sentences[i]
        edits.append("+reorder")
    text = " ".join(_edit_words(" ".join(sentences).split(" "), rate, writer, rng))
    if rng.random() < 0.3:
        text = text.lower() if rng.random() < 0.5 else text.upper()
        edits.append("+case")
    if rng.random() < 0.3:
        text = "  ".join(text.split(" ")[:40]) + " " + "\n".join(text.split(" ")[40:]) + "  \n"
        edits.append("+whitespace")
    return text, "copy " + " ".join(edits), rate


def near_duplicate_benchmark(n_docs: int, seed: int = 0, doc_chars: int = 1000, duplicated_share: float = 0.3,
                             max_copies: int = 3, related_share: float = 0.05) -> NearDuplicateBenchmark:
    """About `n_docs` documents of about `doc_chars` characters, shuffled: originals, edited copies of
    `duplicated_share` of them (1 to `max_copies` each) and related hard negatives."""
    rng = np.random.default_rng(seed)
    writer = _Writer(rng)
    texts: list[str] = []
    family: list[int] = []
    kinds: list[str] = []
    rates: list[float] = []
    expected_per_original = 1 + duplicated_share * (1 + max_copies) / 2 + related_share
    originals: list[list[str]] = []
    while len(texts) < n_docs:
        if not originals:
            originals = writer.documents(int((n_docs - len(texts)) / expected_per_original) + 16, doc_chars)
        sentences = originals.pop()
        fam = len(texts)
        texts.append(" ".join(sentences)), family.append(fam), kinds.append("original"), rates.append(np.nan)
        if rng.random() < duplicated_share:
            for _ in range(int(rng.integers(1, max_copies + 1))):
                text, kind, rate = _edited_copy(sentences, writer, rng)
                texts.append(text), family.append(fam), kinds.append(kind), rates.append(rate)
        if rng.random() < related_share:  # shares 2 to 4 sentences with the original: not a duplicate
            shared = rng.choice(len(sentences), size=min(len(sentences), int(rng.integers(2, 5))), replace=False)
            related = [sentences[i] for i in sorted(shared)] + writer.documents(1, doc_chars // 2)[0]
            family.append(len(texts)), texts.append(" ".join(related)), kinds.append("related"), rates.append(np.nan)
    order = rng.permutation(len(texts))[:n_docs]
    return NearDuplicateBenchmark(texts=[texts[i] for i in order], family=np.asarray(family)[order],
                                  kind=[kinds[i] for i in order], edit_rate=np.asarray(rates)[order])


def _same_cluster_pairs(labels: np.ndarray) -> int:
    sizes = np.unique(labels, return_counts=True)[1].astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def pair_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pairwise precision, recall and F1: a pair counts when both documents share a predicted cluster,
    and is true when they share a true family."""
    predicted_pairs = _same_cluster_pairs(predicted)
    true_pairs = _same_cluster_pairs(truth)
    both = pl.DataFrame({"p": predicted, "t": truth}).group_by("p", "t").len()["len"].to_numpy().astype(np.int64)
    tp = int((both * (both - 1) // 2).sum())
    precision = tp / predicted_pairs if predicted_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": true_pairs,
            "predicted_pairs": predicted_pairs, "true_positive_pairs": tp}
