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


PAIR_CHUNK = 65_536  # pairs judged at once by `names_differ`


def names_differ(texts: pl.Series | list[str] | pl.DataFrame, pairs: np.ndarray) -> np.ndarray:
    """Per pair (i, j) of indices into `texts`: True when each text has a distinguishing token that the other
    does not contain at all (`name_different_things` for many pairs, vectorised). `texts` may be their
    `token_table` already (made once for many calls)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return np.zeros(0, dtype=bool)
    if isinstance(texts, pl.DataFrame):
        table = texts.filter(pl.col("doc").is_in(np.unique(pairs)))
    else:
        texts = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
        docs = np.unique(pairs)
        table = token_table(texts.gather(docs))
        table = table.with_columns(pl.Series("doc", docs[table["doc"].to_numpy()]))
    # (doc, token) as one uint64: the doc above, the token's code (one per distinct token) below; "does the
    # other text contain this name" is then one sorted-array lookup, not a join of every pair with its words.
    table = table.select("doc", pl.col("token").cast(pl.Categorical).to_physical().cast(pl.UInt64).alias("code"),
                         "distinguishing")
    doc, code = table["doc"].to_numpy().astype(np.uint64), table["code"].to_numpy()
    contained = pl.Series((doc << np.uint64(32)) | code).unique().sort().to_numpy()
    names = table.filter("distinguishing").select("doc", "code").unique()

    def one_side(frame: pl.DataFrame, own: str, other: str) -> np.ndarray:
        mine = frame.join(names.rename({"doc": own}), on=own)
        key = (mine[other].to_numpy().astype(np.uint64) << np.uint64(32)) | mine["code"].to_numpy()
        lacking = np.zeros(frame.height, dtype=bool)
        found = contained[np.minimum(np.searchsorted(contained, key), len(contained) - 1)] == key
        lacking[mine["pair"].to_numpy()[~found]] = True
        return lacking

    # pairs a chunk at a time: each pair's rows are one per name of one side (millions of pairs at once
    # made gigabytes of them)
    out = np.empty(len(pairs), dtype=bool)
    for start in range(0, len(pairs), PAIR_CHUNK):
        part = pairs[start:start + PAIR_CHUNK]
        frame = pl.DataFrame({"pair": np.arange(len(part)), "a": part[:, 0], "b": part[:, 1]})
        out[start:start + len(part)] = one_side(frame, "a", "b") & one_side(frame, "b", "a")
    return out
