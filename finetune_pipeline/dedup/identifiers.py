"""Distinguishing tokens: the words of a text that name a thing (an identifier, a command, a product, a
number, a place). Two texts that each name something the other does not are about different things,
however similar the rest: "What does `dpkg` do?" and "What does `dpkg-name` do?", "Python bindings for
SLEPc 3.18" and "... 3.19". Near-duplicate clustering of short texts and prompt clustering never link them.

A token is distinguishing when it is in backticks, contains a digit or one of `- _ . / : @ # + ~ =` inside
it, has a capital letter after its first (camelCase, ALLCAPS), starts with a capital anywhere but at the
start of a sentence (a proper noun), or is a lower-case word that is not in the English word list that
`unstructured` ships (427k words: "dpkg", "ucf", "slepc", "gtk" are not in it; "git", "file", "mips" are).

A one-sided difference (a word added, dropped, or a typo of a common word) names nothing new on the other
side, so it never keeps two texts apart; a substituted name does.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

_STRIP = "\"'()[]{}<>,;:!?.*“”‘’«»"
_SENTENCE_BREAK = r"([.!?:]$)|^[-—–]$"
_INNER = r"[0-9\-_./:@#+~=]"
_LATER_CAPITAL = r".[A-Z]"


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # found without importing it (unstructured's import sends telemetry)
    if spec and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0], *parts)
        return path if path.exists() else None
    return None


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The lower-case English word list that `unstructured` ships (427k words; empty when it is not
    installed: then only the shape of a token makes it distinguishing)."""
    listed = _package_file("unstructured", "nlp", "english-words.txt")
    return frozenset(listed.read_text(encoding="utf-8").split()) if listed else frozenset()


def distinguishing_tokens(text: str) -> set[str]:
    """The case-folded distinguishing tokens of `text`."""
    return set(token_table(pl.Series([text], dtype=pl.String)).filter("distinguishing")["token"])


def name_different_things(a: str, b: str) -> bool:
    """True when each text has a distinguishing token that the other does not contain at all."""
    return bool(names_differ([a, b], np.array([[0, 1]]))[0])


def token_table(texts: pl.Series) -> pl.DataFrame:
    """(doc, token, distinguishing) for every whitespace-separated token of every text, surrounding
    punctuation stripped (inner punctuation kept: `dpkg-name`, `3.18`), case-folded."""
    lines = texts.fill_null("").str.replace_all(r"\s*\n\s*", ". ")  # a line break ends a sentence
    raw = (pl.DataFrame({"raw": lines.str.replace_all(r"\s+", " ").str.split(" ")})
           .with_row_index("doc").explode("raw", empty_as_null=False)
           .filter(pl.col("raw").is_not_null() & (pl.col("raw") != "")))
    previous = pl.col("raw").shift(1)
    start = (pl.col("doc") != pl.col("doc").shift(1)).fill_null(True) | previous.str.contains(_SENTENCE_BREAK)
    token = pl.col("raw").str.strip_chars("`").str.strip_chars(_STRIP).str.strip_chars("`")
    frame = raw.with_columns(token.alias("token"), start.alias("_start"),
                             (pl.col("raw").str.starts_with("`") | pl.col("raw").str.ends_with("`")).alias("_code"))
    frame = frame.filter(pl.col("token") != "").with_columns(pl.col("token").str.to_lowercase().alias("lower"))
    english = english_words()
    if english:
        # Looked up once per distinct word, in the Python set (a join with the 427k-word list cost more
        # than the rest of the table, and sorting the list for it 0.3 s per process).
        distinct = frame["lower"].unique()
        known = pl.DataFrame({"lower": distinct, "_known": [w in english for w in distinct.to_list()]},
                             schema={"lower": pl.String, "_known": pl.Boolean})
        frame = frame.join(known, on="lower", how="left", maintain_order="left")
        unknown = pl.col("token").str.contains(r"^[^\W\d_]+$") & ~pl.col("_known")
    else:
        unknown = pl.lit(False)
    distinguishing = (pl.col("_code") | pl.col("token").str.contains(_INNER)
                      | pl.col("token").str.contains(_LATER_CAPITAL)
                      | (pl.col("token").str.slice(0, 1).str.contains(r"^[[:upper:]]$") & ~pl.col("_start"))
                      | unknown)
    return frame.select(pl.col("doc").cast(pl.Int64), pl.col("lower").alias("token"),
                        distinguishing.alias("distinguishing"))


@dataclass
class Tokens:
    """The `token_table` of some texts with each token as a code (UInt32, one per distinct token of all the
    texts coded with this vocabulary): (doc, code, distinguishing), no strings, a third of the size or less.
    Tables coded with one vocabulary compare and concatenate; `add` codes more texts with the same codes."""

    table: pl.DataFrame
    vocabulary: pl.DataFrame  # (token, code) of every token coded so far

    @classmethod
    def empty(cls) -> "Tokens":
        """No texts yet, an empty vocabulary."""
        return cls(pl.DataFrame(schema=_CODED), pl.DataFrame(schema={"token": pl.String, "code": pl.UInt32}))

    @classmethod
    def of(cls, table: pl.DataFrame) -> "Tokens":
        """`table` (a `token_table`) coded with a new vocabulary."""
        tokens = cls.empty()
        tokens.add(table)
        return tokens

    def coded(self, table: pl.DataFrame) -> pl.DataFrame:
        """`table` (a `token_table`) as (doc, code, distinguishing); its new tokens get new codes."""
        new = table.select(pl.col("token").unique()).join(self.vocabulary, on="token", how="anti")
        if new.height:
            first = self.vocabulary.height
            new = new.with_columns(pl.int_range(first, first + new.height, dtype=pl.UInt32).alias("code"))
            self.vocabulary = pl.concat([self.vocabulary, new], rechunk=True)
        return (table.join(self.vocabulary, on="token", how="left", maintain_order="left")
                .select(pl.col("doc").cast(pl.Int64), "code", "distinguishing"))

    def add(self, table: pl.DataFrame) -> None:
        """Append `table` (a `token_table` of texts not in this one yet), coded."""
        self.table = pl.concat([self.table, self.coded(table)], rechunk=False)  # no copy of the rows so far

    def decoded(self) -> pl.DataFrame:
        """The table with its tokens as strings again: the `token_table` rows it was made from."""
        return (self.table.join(self.vocabulary, on="code", how="left", maintain_order="left")
                .select("doc", "token", "distinguishing"))

    def runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(doc, start, end): each text's rows are `table[start:end]` (a text's rows are one run: `token_table`
        lists a text's tokens together, and a text is added once)."""
        doc = self.table["doc"].to_numpy()
        first = np.flatnonzero(np.concatenate([[True], doc[1:] != doc[:-1]])) if len(doc) else np.empty(0, np.int64)
        return doc[first], first, np.append(first[1:], len(doc))


_CODED = {"doc": pl.Int64, "code": pl.UInt32, "distinguishing": pl.Boolean}


PAIR_CHUNK = 65_536  # pairs judged at once by `names_differ`


def names_differ(texts: pl.Series | list[str] | Tokens, pairs: np.ndarray) -> np.ndarray:
    """Per pair (i, j) of indices into `texts`: True when each text has a distinguishing token that the other
    does not contain at all (`name_different_things` for many pairs, vectorised). `texts` may be their
    `Tokens` already, made once for many calls."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return np.zeros(0, dtype=bool)
    if isinstance(texts, Tokens):
        table = texts.table  # other texts' rows are never looked up: no need to leave them out
    else:
        texts = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
        docs = np.unique(pairs)
        table = Tokens.of(token_table(texts.gather(docs))).table
        table = table.with_columns(pl.Series("doc", docs[table["doc"].to_numpy()]))
    # (doc, token) as one uint64: the doc above, the token's code (one per distinct token) below; "does the
    # other text contain this name" is then one sorted-array lookup, not a join of every pair with its words.
    contained = table["doc"].to_numpy().astype(np.uint64)  # one array, shifted, or-ed and sorted in place
    contained <<= np.uint64(32)
    contained |= table["code"].to_numpy()
    contained.sort()
    # the names (distinguishing tokens) of each text: rows lo[d]:hi[d] of (name_doc, name_code), sorted by doc
    names = table.filter("distinguishing").select("doc", "code").sort("doc")
    name_doc, name_code = names["doc"].to_numpy(), names["code"].to_numpy()
    del names

    def lacking(own: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Per pair: a name of `own` that `other` does not contain."""
        lo, hi = np.searchsorted(name_doc, own, "left"), np.searchsorted(name_doc, own, "right")
        counts = hi - lo
        pair = np.repeat(np.arange(len(own)), counts)  # one row per (pair, name of own)
        row = lo[pair] + np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
        key = (other[pair].astype(np.uint64) << np.uint64(32)) | name_code[row]
        found = contained[np.minimum(np.searchsorted(contained, key), len(contained) - 1)] == key
        out = np.zeros(len(own), dtype=bool)
        out[pair[~found]] = True
        return out

    # pairs a chunk at a time: a pair's rows are one per name of one side (millions of pairs at once made
    # gigabytes of them)
    out = np.empty(len(pairs), dtype=bool)
    for start in range(0, len(pairs), PAIR_CHUNK):
        a, b = pairs[start:start + PAIR_CHUNK, 0], pairs[start:start + PAIR_CHUNK, 1]
        out[start:start + len(a)] = lacking(a, b) & lacking(b, a)
    return out
