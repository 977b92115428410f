"""Prompt-level deduplication and conflicting instructions, for conversations.

A conversation's *context* is every turn before its final answer (system and user turns, and earlier
exchanges of a multi-turn conversation). Two conversations have duplicate prompts when their contexts are
equal after case and whitespace folding, near duplicates by MinHash over character 5-grams (prompts are
short; threshold `dedup.prompt_threshold`, 0.85): light edits, typos, punctuation. Prompts that differ in
one content word ("the capital of France" / "of Spain", Jaccard about 0.6; a support template filled with
another product, 0.7-0.8) stay apart, and so do reworded prompts: paraphrases are found with `dedup.semantic` on (sentence-embedding cosine at
`dedup.prompt_semantic_threshold`). Prompts that name different things are different prompts however
similar the rest: a near or paraphrase link between two prompts that each name something the other does
not (an identifier, a command, a product, a number, a place: `dpkg` / `dpkg-name`, `ucf` / `ucfr`; see
dedup/identifiers.py), or that each have a content word the other lacks and that is no typo of the other's
("What is less used for?" / "What is make used for?" behind one long system prompt), is dropped, also
when a chain of links would join them.

Within one prompt cluster, answers are compared on their content: their words without the prompt's own
words and without function words ("dpkg: package manager for Debian." and "The dpkg command: package
manager for Debian." both say {package, manager, debian}). They agree when those word sets are equal
after folding, reach Jaccard `dedup.threshold`, or differ by one word added on one side:

- every answer agrees with the first: the later records are `duplicate_prompt` rejects of the first;
- answers diverge: a *conflict*. Of each group of agreeing answers the first stays a candidate (the others
  are `duplicate_prompt`), and `dedup.conflicts` says what happens to the candidates: `review` (they carry
  `conflict_id` and wait for a person, see labeling/), `keep_first` (the first stays, the others are
  `conflicting_instruction` rejects), `drop_all` (all are rejected).

Every record of a prompt cluster gets the cluster's `group_id` (its first record), so near-duplicate
prompts never straddle two splits. Counts and record ids go to the stats; never text.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher

import numpy as np
import polars as pl

from finetune_pipeline.dedup.exact import dedup_key
from finetune_pipeline.dedup.identifiers import names_differ
from finetune_pipeline.dedup.minhash import components_naming_one_thing, verified_pairs
from finetune_pipeline.records import StageStats, reject_rows
from finetune_pipeline.settings import DedupSettings
from finetune_pipeline.sources.conversations import render_text

STAGE = "deduplicated_corpus"
PROMPT_SHINGLE, PROMPT_NGRAM = "char", 5
# Function words left out when answers are compared (negations and modals are content: "can" / "cannot").
FUNCTION_WORDS = frozenset("""
a an the this that these those it its it's is are was were be been being am do does did done doing has have
had having of in on at to for from by with as into onto about over under than then so and or but if while
i you he she we they me him her us them my your his our their what which who whom whose when where why how
here there also just very please
""".split())
_WORD = re.compile(r"[\w][\w.+/-]*[\w]|[\w]")
MAX_LISTED = 20  # conflicts listed with their record ids in the stats


@dataclass
class ConflictSummary:
    """One conflict: its id and the record ids of the competing answers (first = first seen)."""

    conflict_id: str
    record_ids: list[str]


@dataclass
class ConflictStats(StageStats):
    policy: str = "review"
    prompt_clusters: int = 0  # prompt clusters with more than one record
    duplicate_prompts: int = 0  # same prompt, agreeing answer: rejected
    conflicts: int = 0  # prompt clusters whose answers diverge
    conflict_records: int = 0  # competing answers in them
    conflicts_listed: list[ConflictSummary] = field(default_factory=list)
    prompts_kept_apart: int = 0  # similar prompts not linked: each names something the other does not


@dataclass
class PromptDedup:
    kept: pl.DataFrame  # with `group_id` (prompt cluster) and `conflict_id` (null unless waiting for review)
    rejected: pl.DataFrame
    stats: ConflictStats


def context_text(messages: str) -> str:
    """Every turn before the final answer, rendered as in `text`."""
    return render_text(json.loads(messages)[:-1])


def context_contents(messages: str) -> str:
    """The contents of every turn before the final answer, one per line: what prompts are compared on
    (role names would make every short prompt look alike)."""
    return "\n".join(turn["content"] for turn in json.loads(messages)[:-1])


def conflict_id(record_ids: list[str]) -> str:
    """Stable id of a conflict from its candidates: a changed set of answers is a new conflict."""
    return "conflict-" + hashlib.sha256("\x1f".join(sorted(record_ids)).encode()).hexdigest()[:16]


def content_words(text: str, prompt_words: frozenset[str] = frozenset()) -> frozenset[str]:
    """The case-folded words of `text` without function words and without `prompt_words`."""
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in FUNCTION_WORDS and w not in prompt_words)


def answers_agree(a: str, b: str, prompt: str, threshold: float) -> bool:
    """Whether two answers to `prompt` say the same thing: equal after folding, or content word sets
    (`content_words` without the prompt's words) at Jaccard >= `threshold` or one word apart on one side."""
    if " ".join(a.lower().split()) == " ".join(b.lower().split()):
        return True
    own = frozenset(_WORD.findall(prompt.lower()))
    sa, sb = content_words(a, own), content_words(b, own)
    if sa == sb:
        return True
    one_sided = len(sa ^ sb) == 1
    return one_sided or len(sa & sb) / len(sa | sb) >= threshold


def _typo_of(word: str, others: set[str]) -> bool:
    """Whether `word` is a one- or two-letter slip of one of `others` (both at least 5 letters: "faling")."""
    return len(word) >= 5 and any(len(o) >= 5 and SequenceMatcher(None, word, o).ratio() >= 0.8 for o in others)


def prompts_ask_different_things(a: str, b: str) -> bool:
    """Two similar prompts ask different things when each has a content word the other lacks that is not a
    typo of one of the other's words ("reset" / "change my password", "less" / "make", "France" / "Spain");
    names (`names_differ`) are checked before, on all pairs at once."""
    wa, wb = content_words(a), content_words(b)
    only_a, only_b = wa - wb, wb - wa
    return (any(not _typo_of(w, only_b) for w in only_a)
            and any(not _typo_of(w, only_a) for w in only_b))


@dataclass
class PromptLinks:
    root: np.ndarray  # per context, the index of its cluster's first member
    kept_apart: int  # near or paraphrase links dropped: the two prompts name different things


def prompt_clusters(contexts: list[str], cfg: DedupSettings) -> PromptLinks:
    """Per context (in keep order) the index of its cluster's first member: the connected components of
    exact, near and (with `semantic`) paraphrase links, without the links between prompts that name
    different things."""
    n = len(contexts)
    series = pl.Series(contexts, dtype=pl.String)
    keys = pl.DataFrame({"k": series}).select(dedup_key(pl.col("k")))["k"]
    exact = pl.DataFrame({"k": keys, "i": np.arange(n)}).select(pl.col("i").first().over("k"))["i"].to_numpy()
    similar = [np.empty((0, 2), dtype=np.int64)]
    if cfg.near_duplicates and n > 1:
        similar.append(verified_pairs(series, cfg.model_copy(
            update={"shingle": PROMPT_SHINGLE, "ngram": PROMPT_NGRAM, "threshold": cfg.prompt_threshold})))
    if cfg.semantic and n > 1:
        from finetune_pipeline.dedup.semantic import search_pairs  # torch only when asked for
        from finetune_pipeline.embeddings import embed

        vectors = embed(contexts, cfg.semantic_model, cfg.semantic_batch_size, cfg.semantic_max_length)
        similar.append(search_pairs(vectors, cfg.prompt_semantic_threshold, cfg)[0])  # exact or index: semantic_search
    similar = np.unique(np.concatenate(similar).astype(np.int64).reshape(-1, 2), axis=0)
    apart = names_differ(series, similar)
    apart |= np.array([prompts_ask_different_things(contexts[i], contexts[j]) for i, j in similar.tolist()],
                      dtype=bool).reshape(-1)
    edges = np.concatenate([np.stack([np.arange(n), exact], axis=1), similar[~apart]]).astype(np.int64)
    joined = components_naming_one_thing(series, np.ones(n, dtype=bool), edges)
    return PromptLinks(root=joined.root, kept_apart=int(apart.sum()) + joined.kept_apart)


def prompt_dedup(kept: pl.DataFrame, cfg: DedupSettings) -> PromptDedup:
    """Prompt duplicates and conflicts among `kept` (conversations, in keep order)."""
    stats = ConflictStats(policy=cfg.conflicts)
    if kept.is_empty():
        empty = kept.with_columns(pl.lit(None, pl.String).alias("conflict_id"))
        return PromptDedup(empty, reject_rows(kept, STAGE, "duplicate_prompt", ""), stats)
    contexts = [context_contents(m) for m in kept["messages"]]
    links = prompt_clusters(contexts, cfg)
    root, stats.prompts_kept_apart = links.root, links.kept_apart
    ids, answers = kept["record_id"].to_list(), kept["response"].to_list()

    duplicate_of: dict[int, int] = {}  # index -> index of the record whose answer it repeats
    conflict_of: dict[int, str] = {}  # candidate index -> conflict id
    members: dict[int, list[int]] = {}
    for i, r in enumerate(root):
        members.setdefault(int(r), []).append(i)
    for group in members.values():
        if len(group) < 2:
            continue
        stats.prompt_clusters += 1
        leaders: list[int] = []  # first record of each group of agreeing answers
        for i in group:
            same = next((lead for lead in leaders
                         if answers_agree(answers[lead], answers[i], f"{contexts[lead]}\n{contexts[i]}",
                                          cfg.threshold)), None)
            if same is None:
                leaders.append(i)
            else:
                duplicate_of[i] = same
        if len(leaders) > 1:
            cid = conflict_id([ids[i] for i in leaders])
            conflict_of.update({i: cid for i in leaders})
            stats.conflicts += 1
            stats.conflict_records += len(leaders)
            if len(stats.conflicts_listed) < MAX_LISTED:
                stats.conflicts_listed.append(ConflictSummary(cid, [ids[i] for i in leaders]))
    stats.duplicate_prompts = len(duplicate_of)

    frame = kept.with_columns(
        pl.Series("group_id", [ids[r] for r in root], pl.String),
        pl.Series("conflict_id", [conflict_of.get(i) for i in range(len(ids))], pl.String),
        pl.Series("duplicate_of", [ids[duplicate_of[i]] if i in duplicate_of else None for i in range(len(ids))],
                  pl.String),
    )
    first_candidate = {}
    for i in sorted(conflict_of):
        first_candidate.setdefault(conflict_of[i], i)
    frame = frame.with_columns(pl.Series("_first", [first_candidate.get(conflict_of.get(i)) == i
                                                    for i in range(len(ids))], pl.Boolean))
    dups = frame.filter(pl.col("duplicate_of").is_not_null())
    rejected = [reject_rows(dups, STAGE, "duplicate_prompt",
                            pl.format("same prompt as {} with an agreeing answer (content words: Jaccard >= {} "
                                      "or one word apart)", "duplicate_of", pl.lit(cfg.threshold)),
                            duplicate_of=pl.col("duplicate_of"))]
    frame = frame.filter(pl.col("duplicate_of").is_null())
    in_conflict = pl.col("conflict_id").is_not_null()
    if cfg.conflicts == "keep_first":
        losers = frame.filter(in_conflict & ~pl.col("_first"))
        firsts = frame.filter(in_conflict & pl.col("_first")).select("conflict_id", pl.col("record_id").alias("_kept"))
        losers = losers.join(firsts, on="conflict_id", how="left")
        rejected.append(reject_rows(losers, STAGE, "conflicting_instruction", pl.format(
            "{}: same prompt as {} with a different answer; the first seen was kept (dedup.conflicts: keep_first)",
            "conflict_id", "_kept"), duplicate_of=pl.col("_kept")))
        frame = frame.filter(~in_conflict | pl.col("_first")).with_columns(pl.lit(None, pl.String).alias("conflict_id"))
    elif cfg.conflicts == "drop_all":
        rejected.append(reject_rows(frame.filter(in_conflict), STAGE, "conflicting_instruction", pl.format(
            "{}: the same prompt has answers that disagree; all dropped (dedup.conflicts: drop_all)", "conflict_id")))
        frame = frame.filter(~in_conflict)
    return PromptDedup(frame.drop("duplicate_of", "_first"), pl.concat(rejected), stats)


_ANSWER = re.compile(r"^\s*answer\s*(\d+)\s*$", re.IGNORECASE)
DROP_ALL = "drop_all"


def conflict_choice(label: str, candidates: list[str]) -> str | None:
    """What an annotation's label picks among `candidates` (record ids, first seen first): a record id,
    `drop_all`, or None when the label names neither ("Answer 2" and the record id both work)."""
    label = label.strip()
    if label in candidates:
        return label
    if label.lower().replace(" ", "_") == DROP_ALL:
        return DROP_ALL
    match = _ANSWER.match(label)
    if match and 1 <= int(match.group(1)) <= len(candidates):
        return candidates[int(match.group(1)) - 1]
    return None
