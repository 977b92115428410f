"""Preference pairs for DPO and its relatives: a prompt with a chosen and a rejected answer. The data side:
reading pairs in TRL's preference format and UltraFeedback-style rated answers, making pairs from resolved
instruction conflicts, the pair filters, and the text units cleaning and the PII policy see.

The record of a pair (besides the columns every record carries, `records.CORPUS_SCHEMA`):
- `prompt`: the last user turn of the prompt, as text (what near-duplicate prompts are grouped on);
- `prompt_messages`, `chosen`, `rejected`: JSON arrays of {role, content} turns (strings, like an instruction
  record's `messages`, so a record stays one flat row in every store); `prompt_messages` is every turn before
  the answers, `chosen` and `rejected` the answer turns (usually one assistant turn each). TRL's
  conversational form is these three decoded; its plain form the last turn's content of each (`to_trl`);
- `text`: the prompt turns, then "chosen:" and "rejected:" with their turns (`render_text`): what the
  quality filters and erasure see.

Inputs (TRL 1.x, `trl.data_utils.maybe_extract_prompt`): `chosen` and `rejected` as text or as lists of
{role, content}; with an explicit `prompt` of the same form (text with text, turns with turns) the answers
are the completions; otherwise the prompt is implicit: the turns (or, for text, the characters) `chosen`
and `rejected` start with alike, a space before the first difference belonging to the answers, as TRL's
`extract_prompt` does. Rated answers (UltraFeedback: `completions: [{response, overall_score}]`, or
`responses` with `ratings`) become pairs by `preference.pairing`; answers rated as high as the chosen one
are ties, dropped and counted. A row that cannot be a pair is rejected with a reason and a detail naming
the fix (`MalformedPair`). Imports no dagster and no torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from finetune_pipeline.records import (SPLITS, StageResult, StageStats, corpus_frame, reject_rows)
from finetune_pipeline.settings import (CleaningSettings, DedupSettings, PreferenceSettings, Settings,
                                        TrainingSettings)
from finetune_pipeline.filtering import Filter
from finetune_pipeline.tasks.base import Metric, Splits, Task
from finetune_pipeline.tasks.pairs import MESSAGE, PAIR_COLUMNS, PreferencePair, pair_records, pair_text  # noqa: F401 (the kind's face)
from finetune_pipeline.training.results import TrainingResult

# sources/ and cleaning/ are imported inside the functions that read or filter: both packages' stage runners
# import the task registry (`finetune_pipeline.tasks`), which imports this module, so a module-level import
# here would close an import circle.

Reject = tuple[str, str] | None  # as cleaning.quality_filters.Reject: (reason, detail) to reject, None to keep

# Reject reasons of the reader (each a MalformedPair's reason).
CHOSEN_EQUALS_REJECTED = "chosen_equals_rejected"
MISSING_SIDE = "missing_side"
UNKNOWN_ROLE = "unknown_role"
EMPTY_PROMPT = "empty_prompt"
MALFORMED_PAIR = "malformed_pair"  # a value of the wrong shape (not text, not a list of turns)
TIED_RATINGS = "tied_ratings"  # rated answers that make no pair: every one rated alike
TOO_FEW_RATED = "too_few_rated_answers"


class MalformedPair(ValueError):
    """A row that cannot be a preference pair: `reason` (a reject reason) and a message naming the fix."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def to_trl(record: dict, conversational: bool = True) -> dict:
    """The record as one row of TRL's preference format with an explicit prompt: message lists
    (conversational) or the last turn's text of each (plain)."""
    pair = PreferencePair.from_record(record)
    if conversational:
        return {"prompt": pair.prompt_messages, "chosen": pair.chosen, "rejected": pair.rejected}
    return {"prompt": pair.prompt, "chosen": pair.chosen_text, "rejected": pair.rejected_text}


# ---- one row -> one pair (TRL's preference format)

def _is_messages(value) -> bool:
    """Whether a value is a list of turns: a list (or a JSON array in a CSV/SQL cell) of objects with a role."""
    if isinstance(value, str):
        stripped = value.lstrip()
        if not stripped.startswith("["):
            return False
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return False
    if hasattr(value, "to_list"):
        value = value.to_list()
    return (isinstance(value, (list, tuple)) and bool(value)
            and all(isinstance(t, dict) and "role" in t for t in value))


def _turns(value, column: str) -> list[dict]:
    """A list of {role, content} from a list or a JSON array, roles folded to lower case; MalformedPair naming
    the fix for an unknown role or a turn that is not {role, content} text."""
    from finetune_pipeline.sources.conversations import ROLES

    if isinstance(value, str):
        value = json.loads(value)
    if hasattr(value, "to_list"):
        value = value.to_list()
    turns = []
    for number, turn in enumerate(value, start=1):
        role, content = turn.get("role"), turn.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise MalformedPair(MALFORMED_PAIR, f"{column!r} turn {number} is not an object with text 'role' and "
                                                f"'content'; write each turn as {{\"role\": ..., \"content\": ...}}")
        role = role.strip().lower()
        if role not in ROLES:
            raise MalformedPair(UNKNOWN_ROLE, f"{column!r} turn {number} has unknown role {role!r}; use one of "
                                              f"{', '.join(ROLES)}")
        turns.append({"role": role, "content": content})
    return turns


def _text(value, column: str) -> str:
    if value is None:
        raise MalformedPair(MISSING_SIDE, f"no {column!r} value; a pair needs a prompt, a chosen and a rejected "
                                          f"answer: fill it in or remove the row")
    if not isinstance(value, str):
        raise MalformedPair(MALFORMED_PAIR, f"{column!r} is a {type(value).__name__}, neither text nor a list of "
                                            f"{{role, content}} turns; write it as one of the two")
    return value


def _common_prefix(a, b) -> int:
    """How many leading items (turns or characters) `a` and `b` share; for text a space before the first
    difference belongs to the answers, as in TRL's `extract_prompt`."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    if isinstance(a, str) and 0 < n < min(len(a), len(b)) and a[n - 1] == " ":
        n -= 1
    return n


def _answer(turns: list[dict], column: str) -> list[dict]:
    """An answer's turns, checked: present, not empty, ending with the assistant's turn."""
    if not turns or not any(t["content"].strip() for t in turns):
        raise MalformedPair(MISSING_SIDE, f"{column!r} is empty (nothing after the prompt); a pair needs two "
                                          f"answers: fill it in or remove the row")
    if turns[-1]["role"] != "assistant":
        raise MalformedPair(MALFORMED_PAIR, f"{column!r} ends with a {turns[-1]['role']} turn; an answer must end "
                                            f"with the assistant's turn")
    if not turns[-1]["content"].strip():
        raise MalformedPair(MISSING_SIDE, f"{column!r}: the final assistant turn is empty; fill it in or remove "
                                          f"the row")
    return turns


def _prompt(turns: list[dict], column: str) -> list[dict]:
    if not any(t["role"] == "user" and t["content"].strip() for t in turns):
        raise MalformedPair(EMPTY_PROMPT, f"{column!r} has no user turn with text; give the question (or, with the "
                                          f"prompt implicit, start chosen and rejected with the same user turn)")
    return turns


def pair_from_row(row: dict, cfg: PreferenceSettings) -> tuple[PreferencePair, bool]:
    """The pair of one row in TRL's preference format, and whether its prompt was implicit. Raises
    MalformedPair (reason + fix) for a missing side, an unknown role, an empty prompt, chosen equal to
    rejected, or a value of the wrong shape."""
    chosen_col, rejected_col = cfg.chosen_column, cfg.rejected_column
    prompt_col = next((c for c in cfg.prompt_columns if row.get(c) is not None), None)
    chosen, rejected = row.get(chosen_col), row.get(rejected_col)
    for value, column in ((chosen, chosen_col), (rejected, rejected_col)):
        if value is None or (isinstance(value, str) and not value.strip()) or (
                isinstance(value, (list, tuple)) and not value):
            raise MalformedPair(MISSING_SIDE, f"no {column!r} answer; a pair needs a chosen and a rejected answer: "
                                              f"fill it in or remove the row")
    conversational = _is_messages(chosen)
    if conversational != _is_messages(rejected):
        raise MalformedPair(MALFORMED_PAIR, f"{chosen_col!r} and {rejected_col!r} are in different forms (one a list "
                                            f"of turns, one text); write both the same way")
    prompt = row.get(prompt_col) if prompt_col else None
    explicit = prompt is not None and _is_messages(prompt) == conversational
    if conversational:
        chosen_turns, rejected_turns = _turns(chosen, chosen_col), _turns(rejected, rejected_col)
        if explicit:
            prompt_turns = _prompt(_turns(prompt, prompt_col), prompt_col)
        else:
            shared = _common_prefix(chosen_turns, rejected_turns)
            if shared == len(chosen_turns) == len(rejected_turns):
                raise _same(chosen_col, rejected_col)
            prompt_turns = _prompt(chosen_turns[:shared], f"{chosen_col}/{rejected_col} (implicit prompt)")
            chosen_turns, rejected_turns = chosen_turns[shared:], rejected_turns[shared:]
    else:
        chosen_text, rejected_text = _text(chosen, chosen_col), _text(rejected, rejected_col)
        if explicit:
            prompt_text = _text(prompt, prompt_col)
            column = prompt_col
        else:
            if chosen_text == rejected_text:
                raise _same(chosen_col, rejected_col)
            shared = _common_prefix(chosen_text, rejected_text)
            prompt_text, chosen_text, rejected_text = (chosen_text[:shared], chosen_text[shared:],
                                                       rejected_text[shared:])
            column = f"{chosen_col}/{rejected_col} (implicit prompt)"
        prompt_turns = _prompt([{"role": "user", "content": prompt_text.strip()}], column)
        chosen_turns = [{"role": "assistant", "content": chosen_text.strip()}]
        rejected_turns = [{"role": "assistant", "content": rejected_text.strip()}]
    chosen_turns, rejected_turns = _answer(chosen_turns, chosen_col), _answer(rejected_turns, rejected_col)
    if [(t["role"], t["content"].strip()) for t in chosen_turns] == [(t["role"], t["content"].strip())
                                                                      for t in rejected_turns]:
        raise _same(chosen_col, rejected_col)
    return PreferencePair(prompt_turns, chosen_turns, rejected_turns), not explicit


def _same(chosen_col: str, rejected_col: str) -> MalformedPair:
    return MalformedPair(CHOSEN_EQUALS_REJECTED, f"{chosen_col!r} equals {rejected_col!r}: a pair needs two different "
                                                 f"answers; write the worse answer into {rejected_col!r} or remove "
                                                 f"the row")


# ---- one row of rated answers -> several pairs (UltraFeedback)

@dataclass
class RatedAnswer:
    text: str
    rating: float
    position: int  # 1-based, in the row's order


def rated_answers(row: dict, cfg: PreferenceSettings) -> list[RatedAnswer]:
    """The answers of an UltraFeedback-style row with their ratings, in the row's order; an answer without a
    usable rating or text is left out (the row is rejected when fewer than two remain)."""
    if row.get(cfg.completions_column) is not None:
        items = row[cfg.completions_column]
        items = json.loads(items) if isinstance(items, str) else items
        pairs = []
        for item in items or []:
            if not isinstance(item, dict):
                continue
            score = next((item[f] for f in cfg.score_fields if item.get(f) is not None), None)
            pairs.append((item.get(cfg.response_field), score))
    else:
        responses, ratings = row.get(cfg.responses_column), row.get(cfg.ratings_column)
        responses = json.loads(responses) if isinstance(responses, str) else responses
        ratings = json.loads(ratings) if isinstance(ratings, str) else ratings
        if responses is None or ratings is None or len(responses) != len(ratings):
            raise MalformedPair(MALFORMED_PAIR, f"{cfg.responses_column!r} and {cfg.ratings_column!r} must be two "
                                                f"lists of the same length (one rating per answer)")
        pairs = list(zip(responses, ratings))
    answers = []
    for position, (text, score) in enumerate(pairs, start=1):
        try:
            rating = float(score)
        except (TypeError, ValueError):
            continue
        if isinstance(text, str) and text.strip() and not math.isnan(rating):
            answers.append(RatedAnswer(text.strip(), rating, position))
    return answers


@dataclass
class RatedPairs:
    pairs: list[tuple[RatedAnswer, RatedAnswer]]  # (chosen, rejected)
    ties: int  # answers left out because they are rated as high as the chosen one


def pairs_by_rating(answers: list[RatedAnswer], pairing: str) -> RatedPairs:
    """Pairs from rated answers. `best_vs_each`: the highest-rated answer (the first of them on a tie) chosen
    against every answer rated strictly lower; `best_vs_worst`: one pair, the highest against the lowest.
    Answers rated as high as the chosen one are ties: no pair, counted."""
    if len(answers) < 2:
        return RatedPairs([], 0)
    best = max(answers, key=lambda a: (a.rating, -a.position))
    ties = sum(1 for a in answers if a is not best and a.rating == best.rating)
    lower = [a for a in answers if a.rating < best.rating]
    if pairing == "best_vs_worst":
        lower = [min(lower, key=lambda a: (a.rating, a.position))] if lower else []
    return RatedPairs([(best, a) for a in lower], ties)


# ---- reading sources

@dataclass
class PreferenceReadStats(StageStats):
    rows: int = 0
    pairs: int = 0
    explicit_prompts: int = 0
    implicit_prompts: int = 0
    rated_rows: int = 0  # UltraFeedback-style rows
    ties_dropped: int = 0  # rated answers that made no pair: rated as high as the chosen one
    conversations: int = 0  # instruction rows, for the conflict path (`pairs_from_conflicts`)


@dataclass
class PreferenceRead:
    """What one source gave: pair records, instruction conversations (for the conflict path), and rejects
    as {locator, reason, detail} (the collection stage adds where)."""

    pairs: list[dict] = field(default_factory=list)
    conversations: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    stats: PreferenceReadStats = field(default_factory=PreferenceReadStats)

    def extend(self, other: "PreferenceRead", prefix: str = "") -> None:
        self.pairs += [{**r, "locator": prefix + r["locator"]} for r in other.pairs]
        self.conversations += [{**r, "locator": prefix + r["locator"]} for r in other.conversations]
        self.rejects += [{**r, "locator": prefix + r["locator"] if r["locator"] else r["locator"]}
                         for r in other.rejects]
        for name in PreferenceReadStats.__dataclass_fields__:
            setattr(self.stats, name, getattr(self.stats, name) + getattr(other.stats, name))


def preference_format(columns: set[str], cfg: PreferenceSettings, mapping) -> str:
    """Which form a table's columns hold: `pairs` (chosen + rejected), `rated` (completions, or responses +
    ratings) or `conversations` (an instruction format, for the conflict path); MissingColumn naming the
    settings when none."""
    from finetune_pipeline.sources import tabular

    if cfg.chosen_column in columns or cfg.rejected_column in columns:
        return "pairs"
    if cfg.completions_column in columns or {cfg.responses_column, cfg.ratings_column} <= columns:
        return "rated"
    try:
        tabular.conversation_format(columns, mapping)
        return "conversations"
    except tabular.MissingColumn:
        raise tabular.MissingColumn(
            f"no preference columns (found: {', '.join(sorted(map(str, columns)))}); preference data needs "
            f"{cfg.chosen_column!r} + {cfg.rejected_column!r} (TRL's format), {cfg.completions_column!r} or "
            f"{cfg.responses_column!r} + {cfg.ratings_column!r} (rated answers), or an instruction format whose "
            f"conflicts become pairs; set preference.chosen_column / rejected_column / completions_column in "
            f"finetune.yaml") from None


def rows_to_pairs(rows: list[tuple[str, dict]], cfg: PreferenceSettings, mapping) -> PreferenceRead:
    """Pair records from table rows (row locator, mapping), in whichever form the columns hold; rows that
    cannot be pairs become rejects with a reason. `mapping` (sources.tabular) names instruction columns."""
    from finetune_pipeline.sources import tabular

    read = PreferenceRead()
    if not rows:
        return read
    columns = set().union(*(row.keys() for _, row in rows))
    form = preference_format(columns, cfg, mapping)
    read.stats.rows = len(rows)
    if form == "conversations":
        conversations, bad = tabular.rows_to_conversations(rows, mapping)
        read.conversations = conversations
        read.rejects = [{"locator": loc, "reason": "malformed_conversation", "detail": why} for loc, why in bad]
        read.stats.conversations = len(conversations)
        return read
    for locator, row in tabular._named_rows(rows, mapping):
        try:
            if form == "pairs":
                pair, implicit = pair_from_row(row, cfg)
                read.pairs.append({**pair.fields(), "locator": locator, "label": None, "label_source": None})
                read.stats.implicit_prompts += implicit
                read.stats.explicit_prompts += not implicit
            else:
                _rated_row(row, locator, cfg, read)
        except MalformedPair as exc:
            read.rejects.append({"locator": locator, "reason": exc.reason, "detail": str(exc)})
    read.stats.pairs = len(read.pairs)
    return read


def _rated_row(row: dict, locator: str, cfg: PreferenceSettings, read: PreferenceRead) -> None:
    read.stats.rated_rows += 1
    prompt_col = next((c for c in cfg.prompt_columns if row.get(c) is not None), None)
    if prompt_col is None:
        raise MalformedPair(EMPTY_PROMPT, f"no prompt column ({', '.join(map(repr, cfg.prompt_columns))}) in a row "
                                          f"of rated answers; add the question or set preference.prompt_columns")
    prompt = row[prompt_col]
    prompt_turns = (_turns(prompt, prompt_col) if _is_messages(prompt)
                    else [{"role": "user", "content": _text(prompt, prompt_col).strip()}])
    prompt_turns = _prompt(prompt_turns, prompt_col)
    answers = rated_answers(row, cfg)
    if len(answers) < 2:
        raise MalformedPair(TOO_FEW_RATED, f"{len(answers)} answer(s) with text and a numeric rating; a pair needs "
                                           f"two: rate the answers ({', '.join(cfg.score_fields)}) or remove the row")
    made = pairs_by_rating(answers, cfg.pairing)
    pending = []
    if cfg.review_ties:  # the ties wait for people's choice (labeling/pairwise.py) instead of being dropped
        from finetune_pipeline.labeling.pairwise import tie_records

        pending = tie_records(prompt_turns, answers, locator)
        read.pairs += pending
    read.stats.ties_dropped += made.ties - len(pending)
    if not made.pairs and pending:
        return
    if not made.pairs:
        raise MalformedPair(TIED_RATINGS, f"all {len(answers)} answers are rated {answers[0].rating:g}: no answer is "
                                          f"preferred; rate them apart or remove the row")
    for chosen, rejected in made.pairs:
        where = f"{locator}; answer {chosen.position} over {rejected.position}"
        if chosen.text == rejected.text:
            read.rejects.append({"locator": where, "reason": CHOSEN_EQUALS_REJECTED, "detail":
                                 f"answers {chosen.position} and {rejected.position} are the same text with different "
                                 f"ratings; remove the repeated answer"})
            continue
        pair = PreferencePair(prompt_turns, [{"role": "assistant", "content": chosen.text}],
                              [{"role": "assistant", "content": rejected.text}])
        read.pairs.append({**pair.fields(), "locator": where, "label": None, "label_source": None,
                           "chosen_rating": chosen.rating, "rejected_rating": rejected.rating})
        read.stats.explicit_prompts += 1


def preference_columns(mapping, cfg: PreferenceSettings) -> list[str]:
    """Every column that marks a table as preference data (for finding SQLite tables)."""
    from finetune_pipeline.sources import tabular

    return [cfg.chosen_column, cfg.rejected_column, cfg.completions_column, cfg.responses_column,
            *tabular.conversation_columns(mapping)]


def read_preference_source(path: Path, settings: Settings) -> PreferenceRead:
    """Pairs (and instruction conversations) from one table source: .jsonl/.json/.parquet/.csv, a Hugging Face
    `save_to_disk` folder (locators prefixed by the split) or a SQLite file (by the table), read with the
    project's table readers. Raises tabular.MissingColumn / sql.DatabaseUnavailable like the other readers."""
    from finetune_pipeline.sources import sql, tabular

    cfg, mapping = settings.preference, settings.sources.tabular
    read = PreferenceRead()
    if tabular.is_hf_dataset_dir(path):
        for split, rows in tabular.read_hf_dataset(path).items():
            read.extend(rows_to_pairs(rows, cfg, mapping), f"split {split}; " if split else "")
        return read
    suffix = path.suffix.lower()
    if suffix in tabular.TABULAR_TYPES:
        rows, malformed = tabular.read_table(path)
        read = rows_to_pairs(rows, cfg, mapping)
        read.rejects = [{"locator": loc, "reason": "malformed_row", "detail": why} for loc, why in malformed] + read.rejects
        return read
    if suffix in sql.SQLITE_TYPES:
        tables = sql.read_sqlite_tables(path, preference_columns(mapping, cfg))
        if not tables:
            raise tabular.MissingColumn("no table has preference or conversation columns; set preference.chosen_column"
                                        " / rejected_column (or sources.tabular) to the database's columns")
        for table, rows in tables.items():
            read.extend(rows_to_pairs([(f"row {i + 1}", r) for i, r in enumerate(rows)], cfg, mapping),
                        f"table {table}; ")
        return read
    raise tabular.MissingColumn(f"{path.name}: not a table; preference pairs come from .jsonl, .json, .parquet, .csv, "
                                f"a `save_to_disk` folder or SQLite: export the pairs as one of those")


# ---- pairs the pipeline makes itself: resolved instruction conflicts

CONFLICT_REASON = "conflicting_instruction"


@dataclass
class ConflictPairStats(StageStats):
    pairs: int = 0
    conflicts: int = 0  # resolved conflicts that gave at least one pair
    unresolved: int = 0  # conflicting_instruction rejects naming no kept answer (drop_all): no pair
    missing: int = 0  # rejects whose record or kept record is not in the conversations given


def pairs_from_conflicts(conversations: pl.DataFrame, rejected: pl.DataFrame) -> tuple[pl.DataFrame, ConflictPairStats]:
    """Pairs from resolved instruction conflicts: each `conflicting_instruction` reject whose `duplicate_of`
    names the kept answer (dedup.conflicts: keep_first, or a reviewer's choice in labeling/conflicts.py)
    gives one pair, the kept conversation's final answer chosen and the reject's final answer rejected, the
    prompt being the kept conversation's turns before its answer. `conversations` holds both records
    (record_id, messages, source_uri, locator): the collected or cleaned instruction corpus."""
    stats = ConflictPairStats()
    losers = rejected.filter(pl.col("reason") == CONFLICT_REASON)
    stats.unresolved = losers.filter(pl.col("duplicate_of").is_null()).height
    losers = losers.filter(pl.col("duplicate_of").is_not_null())
    by_id = {row["record_id"]: row for row in conversations.select("record_id", "messages", "source_uri", "locator")
             .iter_rows(named=True)}
    rows, conflicts = [], set()
    for reject in losers.iter_rows(named=True):
        kept, loser = by_id.get(reject["duplicate_of"]), by_id.get(reject["record_id"])
        if kept is None or loser is None:
            stats.missing += 1
            continue
        kept_turns, loser_turns = json.loads(kept["messages"]), json.loads(loser["messages"])
        pair = PreferencePair(kept_turns[:-1], kept_turns[-1:], loser_turns[-1:])
        conflicts.add(kept["record_id"])
        rows.append({**pair.fields(), "locator": f"{kept['locator']}; chosen over {loser['record_id']}",
                     "source_uri": kept["source_uri"], "label": None, "label_source": None,
                     "chosen_record_id": kept["record_id"], "rejected_record_id": loser["record_id"]})
    stats.pairs, stats.conflicts = len(rows), len(conflicts)
    frames = [pair_records([r], r["source_uri"], "conflict") for r in rows]
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pair_records([], "", "conflict")
    return frame, stats


# ---- text units: what cleaning and the PII policy see, and the record rebuilt from them

def text_units(record: dict) -> list[str]:
    """Every turn's content of a pair record, in order: the prompt turns, the chosen turns, the rejected turns."""
    pair = PreferencePair.from_record(record)
    return [t["content"] for t in (*pair.prompt_messages, *pair.chosen, *pair.rejected)]


def fields_from_units(record: dict, units: list[str]) -> dict:
    """The pair fields (prompt, prompt_messages, chosen, rejected, text) of `record` with each turn's content
    replaced by the cleaned or redacted unit at the same place in `text_units(record)`."""
    pair = PreferencePair.from_record(record)
    sizes = [len(pair.prompt_messages), len(pair.chosen), len(pair.rejected)]
    if len(units) != sum(sizes):
        raise ValueError(f"{len(units)} text units for a pair of {sum(sizes)} turns")
    it = iter(units)
    parts = [[{**t, "content": next(it)} for t in turns] for turns in (pair.prompt_messages, pair.chosen, pair.rejected)]
    return PreferencePair(*parts).fields()


# ---- pair filters: each (pair, its settings) -> (reason, detail) to reject, or None to keep

def both_refusals_filter(pair: PreferencePair, cleaning: CleaningSettings) -> Reject:
    from finetune_pipeline.cleaning.sft_filters import refusal_filter

    if refusal_filter(pair.chosen_text, cleaning) and refusal_filter(pair.rejected_text, cleaning):
        return "both_refusals", ("both answers start with a boilerplate refusal (cleaning.refusal_patterns): the pair "
                                 "teaches no preference; replace one with a real answer or remove the pair")
    return None


def both_truncated_filter(pair: PreferencePair, cleaning: CleaningSettings) -> Reject:
    from finetune_pipeline.cleaning.sft_filters import truncated_response_filter

    if truncated_response_filter(pair.chosen_text, cleaning) and truncated_response_filter(pair.rejected_text, cleaning):
        return "both_truncated", ("both answers are cut off (mid-sentence at cleaning.truncation_min_chars or more, or "
                                  "an unclosed ``` block); complete the chosen answer or remove the pair")
    return None


_NOT_WORD = re.compile(r"[\W_]+")


def normalised_answer(text: str) -> str:
    """An answer compared for sameness: case-folded, punctuation and spacing removed."""
    return " ".join(_NOT_WORD.sub(" ", text.casefold()).split())


def identical_answers_filter(pair: PreferencePair) -> Reject:
    if normalised_answer(pair.chosen_text) == normalised_answer(pair.rejected_text):
        return "identical_answers", ("chosen and rejected differ only in case, punctuation or spacing: no preference "
                                     "to learn; write a worse rejected answer or remove the pair")
    return None


def length_ratio_filter(pair: PreferencePair, cfg: PreferenceSettings) -> Reject:
    lengths = sorted((len(pair.chosen_text.strip()), len(pair.rejected_text.strip())))
    ratio = lengths[1] / max(lengths[0], 1)
    if ratio > cfg.max_length_ratio:
        return "length_ratio", (f"one answer is {ratio:.1f} times as long as the other (characters) > "
                                f"preference.max_length_ratio={cfg.max_length_ratio:g}; DPO would learn the length")
    return None


def pair_checks(settings: Settings) -> list[tuple[str, Callable[[dict], Reject]]]:
    """The pair filters in the order they run, each as (name, check of a record's fields -> Reject), their
    parameters bound: what a `cleaning.filters.Filter` wraps (`candidate.fields` is such a record)."""
    cleaning, cfg = settings.cleaning, settings.preference
    return [("identical_answers", lambda r: identical_answers_filter(PreferencePair.from_record(r))),
            ("both_refusals", lambda r: both_refusals_filter(PreferencePair.from_record(r), cleaning)),
            ("both_truncated", lambda r: both_truncated_filter(PreferencePair.from_record(r), cleaning)),
            ("length_ratio", lambda r: length_ratio_filter(PreferencePair.from_record(r), cfg))]


def pair_reject(pair: PreferencePair, settings: Settings) -> Reject:
    """The first pair filter that rejects the pair, or None."""
    record = {"prompt_messages": pair.prompt_messages, "chosen": pair.chosen, "rejected": pair.rejected}
    return next((reject for _, check in pair_checks(settings) if (reject := check(record))), None)


def filter_pairs(frame: pl.DataFrame, settings: Settings, stage: str = "cleaned_corpus"
                 ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The pair records `pair_reject` keeps, and the others as rejects of `stage` with their reason."""
    verdicts = [pair_reject(PreferencePair.from_record(row), settings) for row in frame.iter_rows(named=True)]
    marked = frame.with_columns(pl.Series("_reason", [v[0] if v else None for v in verdicts], pl.String),
                                pl.Series("_detail", [v[1] if v else None for v in verdicts], pl.String))
    dropped = marked.filter(pl.col("_reason").is_not_null())
    rejected = [reject_rows(part, stage, reason, pl.col("_detail"))
                for (reason,), part in dropped.group_by("_reason", maintain_order=True)]
    rejected = pl.concat(rejected) if rejected else reject_rows(dropped, stage, "", "")
    return marked.filter(pl.col("_reason").is_null()).drop("_reason", "_detail"), rejected


# ---- conflicts read from an instruction file: pairs at reading

NO_CONFLICT = "no_conflict"
UNRESOLVED_CONFLICT = "unresolved_conflict"


def pairs_from_conversations(conversations: list[dict], dedup) -> tuple[list[dict], list[dict]]:
    """Pair records and rejects ({locator, reason, detail}) from the instruction conversations of one source
    (`PreferenceRead.conversations`): conflicts are found among them as an instruction root's dedup finds them
    (dedup/conflicts.py: same prompt, answers that disagree) and settled by `dedup.conflicts`; with
    keep_first each rejected answer becomes a pair, the first answer chosen (`pairs_from_conflicts`).
    Every conversation ends in a pair or a reject: a repeated answer is `duplicate_prompt`, a conversation
    whose prompt has no other answer `no_conflict`, conflicts under drop_all `conflicting_instruction`; under review every two differing
    answers become a pending pair for pairwise review ("which answer is better", labeling/pairwise.py), decided
    by the annotations that come back. Conflicts are found within one source."""
    from finetune_pipeline.dedup.conflicts import prompt_dedup

    if not conversations:
        return [], []
    # record_id = locator: ids unique within the source, readable in the pairs' locators ("line 3; chosen over line 4")
    corpus = corpus_frame([{**c, "record_id": c["locator"], "source_uri": ""} for c in conversations])
    found = prompt_dedup(corpus, dedup)
    pairs, stats = pairs_from_conflicts(corpus, found.rejected)
    chosen = set(pairs["chosen_record_id"].to_list()) if not pairs.is_empty() else set()
    records = [{**{k: row[k] for k in (*PAIR_COLUMNS, "text", "locator")}, "label": None, "label_source": None}
               for row in pairs.iter_rows(named=True)]
    rejects = [{"locator": r["locator"], "reason": r["reason"], "detail": r["detail"]}
               for r in found.rejected.iter_rows(named=True)
               if not (r["reason"] == CONFLICT_REASON and r["duplicate_of"] is not None)]
    if dedup.conflicts == "review":  # people pick the better answer: pending pairs (labeling/pairwise.py)
        from finetune_pipeline.labeling.pairwise import conflict_pending

        pending = conflict_pending(found.kept)
        records += pending
        chosen |= {r[side] for r in pending for side in ("answer_a_id", "answer_b_id")}
    for row in found.kept.filter(~pl.col("record_id").is_in(list(chosen))).iter_rows(named=True):
        if row.get("conflict_id") is not None:  # review, and every answer equal to another: nothing to choose
            rejects.append({"locator": row["locator"], "reason": UNRESOLVED_CONFLICT, "detail": (
                f"{row['conflict_id']}: the same prompt has answers that disagree, and dedup.conflicts: review "
                f"cannot be settled while reading; set dedup.conflicts: keep_first (the first answer chosen, each "
                f"other answer rejected) or write the pairs yourself (prompt, chosen, rejected)")})
        else:
            rejects.append({"locator": row["locator"], "reason": NO_CONFLICT, "detail": (
                "an instruction conversation whose prompt has no other answer in this file: a preference root makes "
                "pairs only from conflicting answers; add the competing answer, or put it in an instruction root")})
    return records, rejects


# ---- the kind

class PairFilter(Filter):
    """One pair filter of `pair_checks` on a cleaned pair record (`Candidate.fields`)."""

    def __init__(self, name: str, check: Callable[[dict], Reject]):
        self.name, self.check = name, check

    def reject(self, candidate) -> Reject:
        return self.check(candidate.fields)


class EmptyPairTurnFilter(Filter):
    """A turn of the prompt or of an answer left empty by cleaning."""

    name = "empty_turn"

    def reject(self, candidate) -> Reject:
        pair = PreferencePair.from_record(candidate.fields)
        for side, turns in (("prompt", pair.prompt_messages), ("chosen", pair.chosen), ("rejected", pair.rejected)):
            empty = next((i for i, turn in enumerate(turns, start=1) if not turn["content"].strip()), None)
            if empty:
                return "empty", (f"{side} turn {empty} ({turns[empty - 1]['role']}) is empty after cleaning; fix the "
                                 f"turn or remove the pair")
        return None


class PreferenceTask(Task):
    """Preference pairs for DPO: a prompt with a chosen and a rejected answer, trained by DPO on a LoRA
    adapter (training/dpo.py) and scored by preference accuracy and reward margins against the base model
    (training/preference_eval.py)."""

    name = "preference"
    input_column, target_column = "prompt", "chosen"
    metrics = (Metric("preference_accuracy", "preference accuracy", 3, True, 3),
               Metric("reward_margin", "reward margin", 4, True, 4),
               Metric("likelihood_accuracy", "likelihood accuracy", 3, True, 3))
    headline = metrics[0]
    baseline_name = "base model"
    evaluated_on = ("test pairs: preference accuracy (the share whose chosen answer DPO's implicit reward ranks "
                    "above the rejected one; the base model's reward is 0 for both: chance, 0.5), the mean reward "
                    "margin, and likelihood accuracy (chosen more likely than rejected, the base model measured "
                    "the same way)")
    base_model_setting = "preference.base_model"

    # ---- reading and cleaning

    content_columns = ("text", "prompt", "prompt_messages", "chosen", "rejected")

    def read_rows(self, path: Path, source_type: str, settings: Settings,
                  notes: list[str]) -> tuple[list[dict], list[dict]]:
        """Pairs in TRL's preference format or rated answers (`read_preference_source`); an instruction file's
        conversations become pairs from their resolved conflicts (`pairs_from_conversations`, by the root's
        `dedup.conflicts`). Documents are refused."""
        from finetune_pipeline.sources import files

        if path.suffix.lower() in files.DOCUMENT_TYPES:
            return [], [{"locator": None, "reason": "not_a_pair", "detail": (
                "a document holds no preference pairs; give pairs as .jsonl/.json/.parquet/.csv rows (prompt, "
                "chosen, rejected) or move the file out of raw/")}]
        read = read_preference_source(path, settings)
        pairs, rejects = pairs_from_conversations(read.conversations, settings.dedup)
        stats = read.stats
        if stats.implicit_prompts:
            notes.append(f"{stats.implicit_prompts} pair(s) with an implicit prompt (the start chosen and rejected "
                         f"share)")
        if stats.ties_dropped:
            notes.append(f"{stats.ties_dropped} rated answer(s) tied with the best one: no pair (ties dropped)")
        if read.conversations:
            notes.append(f"{len(read.conversations)} instruction conversation(s): {len(pairs)} pair(s) from their "
                         f"conflicts (dedup.conflicts: {settings.dedup.conflicts})")
        return read.pairs + pairs, read.rejects + rejects

    def read_query_rows(self, rows: list[tuple[str, dict]], source, uri: str) -> tuple[list[dict], list[dict]]:
        """Pairs from a SQL query's rows under the default column names of `PreferenceSettings` (name them in
        the SELECT: `SELECT question AS prompt, good AS chosen, bad AS rejected ...`)."""
        from finetune_pipeline.settings import DedupSettings

        read = rows_to_pairs(rows, PreferenceSettings(), source)
        pairs, rejects = pairs_from_conversations(read.conversations, DedupSettings(conflicts="keep_first"))
        return read.pairs + pairs, read.rejects + rejects

    def record_columns(self, settings: Settings) -> dict[str, pl.DataType]:
        """`prompt`, `prompt_messages`, `chosen`, `rejected` (JSON arrays of turns) and the ratings of pairs made
        from rated answers."""
        return {**PAIR_COLUMNS, "chosen_rating": pl.Float64, "rejected_rating": pl.Float64}

    def text_units(self, row: dict) -> list[str]:
        """Every turn of the prompt, then of the chosen and of the rejected answer."""
        return text_units(row)

    def from_units(self, row: dict, units: list[str]) -> dict:
        return fields_from_units(row, units)

    def cleaning_filters(self, settings: Settings) -> list:
        """A turn emptied by cleaning, the pair filters (`pair_checks`), then the quality filters, the
        repetition filters on each turn alone."""
        from finetune_pipeline.cleaning import filters

        return [EmptyPairTurnFilter(), *(PairFilter(name, check) for name, check in pair_checks(settings)),
                *filters.quality_filters(settings.cleaning, turns_alone=True)]

    def domain_texts(self, corpus: pl.DataFrame) -> list[str]:
        """A pair's prompt (its last user turn)."""
        return corpus.select(pl.coalesce("prompt", "text").fill_null("")).to_series().to_list()

    # ---- dedup, labeling, augmentation, splits, exports

    def near_duplicate_texts(self, kept: pl.DataFrame) -> pl.Series | None:
        """None: pairs that share a prompt differ on purpose (rated answers give several pairs per prompt);
        only exact copies of a whole pair are duplicates."""
        return None

    def duplicate_groups(self, kept: pl.DataFrame, dedup: DedupSettings) -> StageResult:
        """Pairs whose prompts are the same or near duplicates (dedup/conflicts.py's prompt links) share a
        group, so one split holds them all; nothing is rejected: one prompt with two answers is the point."""
        from finetune_pipeline.dedup.conflicts import prompt_clusters

        if kept.is_empty():
            return StageResult(kept.with_columns(pl.col("record_id").alias("group_id")), stats=None)
        contexts = ["\n".join(t["content"] for t in json.loads(m)) for m in kept["prompt_messages"].to_list()]
        root = prompt_clusters(contexts, dedup).root
        ids = kept["record_id"].to_list()
        return StageResult(kept.with_columns(pl.Series("group_id", [ids[r] for r in root], pl.String)), stats=None)

    def label(self, corpus: pl.DataFrame, settings: Settings, annotations: pl.DataFrame,
              annotation_problems: list[dict] | None, labeler, cache):
        """Pairs go on as they are; pending pairs (two answers, no preference yet) are decided by people's
        pairwise choices in annotations/ or stay in review (labeling/pairwise.py)."""
        from finetune_pipeline.labeling.pairwise import label_with_pairwise_review

        return label_with_pairwise_review(corpus, settings, annotations, annotation_problems)

    too_few_groups_hint = "add pairs with other prompts or change `splits`"

    def stratify_column(self, frame: pl.DataFrame) -> str:
        """`source_uri`: pairs from one file kept in proportion (explicit, rated, conflict pairs alike)."""
        return "source_uri"

    exported_text_columns = ("prompt_text", "chosen_text", "rejected_text", "source_uri", "locator")
    exported_turn_columns = ("prompt", "chosen", "rejected")

    def export_columns(self) -> tuple[str, ...]:
        """TRL's conversational preference format first (`prompt`, `chosen`, `rejected`), then the plain form's
        texts, then where each pair comes from."""
        return ("prompt", "chosen", "rejected", "prompt_text", "chosen_text", "rejected_text", "record_id", "split",
                "group_id", "source_uri", "source_type", "locator", "content_sha256", "chosen_rating",
                "rejected_rating")

    def export_form(self, frame: pl.DataFrame) -> pl.DataFrame:
        """TRL's preference format with an explicit prompt, as `trl.DPOTrainer` takes it: conversational
        `prompt` (the prompt's turns), `chosen` and `rejected` (the answer turns: [assistant message]), each a
        list of {role, content}; the plain form beside it as `prompt_text`, `chosen_text`, `rejected_text`
        (the last turn's text of each: select those three and rename them for TRL's plain form)."""
        if frame.is_empty() or "prompt_messages" not in frame.columns:
            return frame
        turns = pl.List(MESSAGE)
        return frame.with_columns(
            pl.col("prompt").alias("prompt_text"),
            pl.col("chosen").str.json_decode(turns).list.last().struct.field("content").alias("chosen_text"),
            pl.col("rejected").str.json_decode(turns).list.last().struct.field("content").alias("rejected_text"),
        ).with_columns(pl.col("prompt_messages").str.json_decode(turns).alias("prompt"),
                       pl.col("chosen").str.json_decode(turns), pl.col("rejected").str.json_decode(turns))

    # ---- training, evaluation, gate, cards

    recipes = ("dpo",)
    adapter_approaches = ("dpo",)
    fold_metric = "preference_accuracy"
    hub_categories = ("text-generation",)

    def settings_problem(self, settings: Settings) -> str | None:
        """A causal LM to tune: training.preference.base_model."""
        if not settings.training.preference.base_model:
            return "task: preference needs training.preference.base_model (a local causal LM folder)"
        return None

    def training_splits(self, frame: pl.DataFrame) -> Splits:
        """Per split (each pair as a JSON object {prompt, chosen, rejected} of turn lists, its chosen answer)."""
        parts = {}
        for name in SPLITS:
            part = frame.filter(pl.col("split") == name)
            rows = part.select("prompt_messages", "chosen", "rejected").iter_rows(named=True)
            parts[name] = ([json.dumps(to_trl(row), ensure_ascii=False) for row in rows],
                           [PreferencePair.from_record(row).chosen_text
                            for row in part.select("prompt_messages", "chosen", "rejected").iter_rows(named=True)])
        return parts

    def train(self, approach, splits: Splits, labels: list[str], cfg: TrainingSettings,
              output_dir, data_snapshot: str = "", log=print) -> TrainingResult:
        """DPO on a LoRA adapter of `training.preference.base_model` (training/dpo.py), the reference being the
        base with the adapter disabled; saved as safetensors with the tokenizer, metrics.json and a model card."""
        import torch

        from finetune_pipeline.atomic import atomic_path
        from finetune_pipeline.chat import load_chat_tokenizer
        from finetune_pipeline.training.base_model import quiet_transformers
        from finetune_pipeline.training.dpo import train_dpo

        pairs = {name: [json.loads(x) for x in inputs] for name, (inputs, _) in splits.items() if inputs}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        dpo, model = train_dpo(pairs, cfg.preference, None, data_snapshot, log)
        result = dpo_training_result(dpo, model, cfg)
        if output_dir is not None:
            with atomic_path(Path(output_dir)) as tmp, quiet_transformers():
                model.save_pretrained(tmp, safe_serialization=True)
                load_chat_tokenizer(cfg.preference.base_model).save_pretrained(tmp)
                (tmp / "metrics.json").write_text(result.to_json())
                (tmp / "README.md").write_text(self.model_card(result))
        return result

    def configured_base_model(self, training: TrainingSettings) -> str | None:
        return training.preference.base_model

    def buildable_base_model(self, training: TrainingSettings) -> str | None:
        return training.preference.base_model

    def untrained_model(self, entry: dict):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(entry["base"])

    def model_card(self, result: TrainingResult) -> str:
        return preference_card(result)

    def card_sections(self, splits: pl.DataFrame, agreement: dict) -> list[str]:
        from_conflicts = splits.filter(pl.col("locator").str.contains("; chosen over ")).height \
            if "locator" in splits.columns else 0
        rated = splits["chosen_rating"].is_not_null().sum() if "chosen_rating" in splits.columns else 0
        return ["## Preference pairs", "",
                "Records are preference pairs in TRL's preference format with an explicit prompt: `prompt` (the "
                "prompt's turns), `chosen` and `rejected` (the answer turns), each a list of {role, content}, as "
                "`trl.DPOTrainer` takes them; the plain form is `prompt_text`, `chosen_text`, `rejected_text`. "
                "No labels. Pairs whose prompts are the same or near duplicates are in one split.", "",
                f"- Pairs made from rated answers (`chosen_rating`, `rejected_rating` kept): {rated}",
                f"- Pairs made from resolved instruction conflicts (the kept answer chosen): {from_conflicts}", ""]

    def approaches(self, training: TrainingSettings) -> list:
        return ["dpo"]

    def trained_approach(self, training: TrainingSettings):
        return "dpo"

    def record_expectations(self, labels: list[str]) -> list | None:
        """A prompt and both answers, none empty."""
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        E = validation.E
        return [exp for column in ("prompt", "chosen", "rejected") for exp in (
            E.ExpectColumnToExist(column=column), E.ExpectColumnValuesToNotBeNull(column=column),
            E.ExpectColumnValueLengthsToBeBetween(column=column, min_value=1))]

    def baseline(self, result: TrainingResult) -> dict[str, float]:
        return result.base_model_test

    def baseline_gate(self, result: TrainingResult) -> tuple[pl.DataFrame, list, dict[str, float]]:
        """No NaN loss; the adapter's preference accuracy on the test pairs above the base model's (chance: its
        reward ranks no pair), and its mean reward margin positive (chosen rewarded above rejected). An adapter
        that learnt nothing, or the preferences backwards, fails both."""
        from finetune_pipeline import validation  # Great Expectations: only the check pays the import

        E = validation.E
        test, base = result.test, self.baseline(result)
        frame = pl.DataFrame({"nan_loss": [result.nan_loss], "test_preference_accuracy": [test["preference_accuracy"]],
                              "test_reward_margin": [test["reward_margin"]]})
        expectations = [
            E.ExpectColumnValuesToBeInSet(column="nan_loss", value_set=[False]),
            E.ExpectColumnValuesToBeBetween(column="test_preference_accuracy", min_value=base["preference_accuracy"],
                                            max_value=1, strict_min=True),
            E.ExpectColumnValuesToBeBetween(column="test_reward_margin", min_value=0, strict_min=True),
        ]
        return frame, expectations, {"test_preference_accuracy": test["preference_accuracy"],
                                     "base_model_test_preference_accuracy": base["preference_accuracy"],
                                     "test_reward_margin": test["reward_margin"]}

    def model_name(self, result: TrainingResult) -> str:
        return f"{result.approach} (LoRA)"

    def metrics_summary(self, result: TrainingResult) -> dict[str, float]:
        return {f"test_{m.key}": result.test.get(m.key, float("nan")) for m in self.metrics}

    def comparison_scores(self, result: TrainingResult) -> dict[str, float]:
        return {**super().comparison_scores(result),
                "base_model_test_preference_accuracy": result.base_model_test["preference_accuracy"]}


CHANCE = 0.5  # the base model's preference accuracy: its implicit reward is 0 for both answers, a coin decides


def evaluation_scores(evaluation) -> tuple[dict[str, float], dict[str, float]]:
    """(the adapter's scores, the base model's) of a split from its `PreferenceEvaluation` (preference_eval.py).
    Preference accuracy is DPO's: the adapter's implicit reward beta * log(p_adapter / p_base) ranks chosen
    above rejected. The base model's reward is 0 for both answers by definition, so it ranks no pair: its
    preference accuracy is chance (0.5) and its margin 0. Likelihood accuracy (chosen more likely than
    rejected, summed over answer tokens) is measured for both alike; it leans on length."""
    nan = float("nan")
    if evaluation is None or not evaluation.pairs:
        return ({m.key: nan for m in PreferenceTask.metrics}, {m.key: nan for m in PreferenceTask.metrics})
    adapter = {"preference_accuracy": evaluation.accuracy, "reward_margin": evaluation.reward_margin,
               "likelihood_accuracy": evaluation.logp_accuracy, "chosen_reward": evaluation.chosen_reward,
               "rejected_reward": evaluation.rejected_reward, "pairs": evaluation.pairs}
    base = {"preference_accuracy": CHANCE, "reward_margin": 0.0, "likelihood_accuracy": evaluation.base_accuracy,
            "likelihood_margin": evaluation.base_logp_margin, "pairs": evaluation.pairs}
    return adapter, base


def dpo_training_result(dpo, model, cfg: TrainingSettings) -> TrainingResult:
    """The kind's `TrainingResult` (metrics.json) of a `DPOResult` and its model."""
    import torch

    test, base_test = evaluation_scores(dpo.test)
    validation, _ = evaluation_scores(dpo.validation)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    history = [asdict(epoch) for epoch in dpo.history]
    device = next(model.parameters()).device
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_rss_mb())
    return TrainingResult(
        approach=dpo.approach, task="preference", base_model=dpo.base_model, test=test, base_model_test=base_test,
        validation=validation, split_sizes=dpo.split_sizes, trainable_parameters=trainable,
        total_parameters=sum(p.numel() for p in model.parameters()), learning_rate=cfg.preference.learning_rate,
        epochs_run=len(dpo.history), history=history,
        nan_loss=any(not math.isfinite(e.train_loss) for e in dpo.history), device=device.type,
        wall_time_s=dpo.wall_time_s, peak_memory_mb=round(peak, 1), data_snapshot=dpo.data_snapshot,
        settings=cfg.model_dump(mode="json"),
        extra={"steps": dpo.steps, "truncated": dpo.truncated, "train_pairs_per_s": dpo.train_pairs_per_s,
               "beta": cfg.preference.beta})


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def preference_card(result: TrainingResult) -> str:
    """The model card of a DPO adapter: what it was trained on, its test scores beside the base model's."""
    from finetune_pipeline import reporting

    test, base = result.test, result.base_model_test
    header = reporting._card_header(
        result, library_name="peft", pipeline_tag="text-generation", tags=["lora", "dpo", "finetune-pipeline"],
        results=[("accuracy", "Preference accuracy (test pairs)", test.get("preference_accuracy")),
                 ("reward_margin", "Reward margin (test pairs)", test.get("reward_margin")),
                 ("accuracy", "Likelihood accuracy (test pairs)", test.get("likelihood_accuracy"))])
    sizes = ", ".join(f"{k} {v}" for k, v in (result.split_sizes or {}).items())

    def number(value, digits=3):
        return "nan" if value is None or value != value else f"{value:.{digits}f}"

    return f"""{header}
# LoRA adapter: DPO on preference pairs

- Base model: {result.base_model}
- Data snapshot: `{result.data_snapshot}`
- Split sizes (pairs): {sizes}
- DPO (sigmoid loss, beta {result.extra.get('beta')}); the reference is the base model (the adapter disabled)
- Trainable parameters: {result.trainable_parameters:,} of {result.total_parameters:,}

| metric (test pairs) | adapter | base model |
|---|---|---|
| preference accuracy (DPO's implicit reward ranks chosen first) | {number(test.get('preference_accuracy'))} | {number(base.get('preference_accuracy'))} |
| reward margin (mean, chosen minus rejected) | {number(test.get('reward_margin'), 4)} | {number(base.get('reward_margin'), 4)} |
| likelihood accuracy (chosen more likely than rejected) | {number(test.get('likelihood_accuracy'))} | {number(base.get('likelihood_accuracy'))} |

The implicit reward of an answer is beta x log(p_adapter / p_base); the base model's is 0 for both answers, so
it ranks no pair: its preference accuracy is chance (0.5). Likelihood accuracy compares summed log-probabilities
of the two answers, for both models alike; it leans on the answers' lengths.
Load it with PEFT: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path)`.
"""
