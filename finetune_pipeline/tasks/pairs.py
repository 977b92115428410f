"""A preference pair as a record: its columns, its turns (`PreferencePair`) and its corpus rows
(`pair_records`). Shared by the preference kind (tasks/preference.py) and pairwise review
(labeling/pairwise.py), which imports it without the kind (the kind imports pairwise review)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text

# The columns a pair record adds to records.CORPUS_SCHEMA; the message lists are JSON arrays (see above).
PAIR_COLUMNS: dict[str, pl.DataType] = {"prompt": pl.String, "prompt_messages": pl.String,
                                        "chosen": pl.String, "rejected": pl.String}
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})


@dataclass(frozen=True)
class PreferencePair:
    """One pair: the prompt turns and the turns of each answer, every turn {role, content}."""

    prompt_messages: list[dict]
    chosen: list[dict]
    rejected: list[dict]

    @property
    def prompt(self) -> str:
        """The last user turn of the prompt."""
        return next((t["content"] for t in reversed(self.prompt_messages) if t["role"] == "user"), "")

    @property
    def chosen_text(self) -> str:
        return self.chosen[-1]["content"]

    @property
    def rejected_text(self) -> str:
        return self.rejected[-1]["content"]

    def fields(self) -> dict:
        """The record fields of the pair: prompt, prompt_messages, chosen, rejected (JSON) and text."""
        return {"prompt": self.prompt,
                "prompt_messages": json.dumps(self.prompt_messages, ensure_ascii=False),
                "chosen": json.dumps(self.chosen, ensure_ascii=False),
                "rejected": json.dumps(self.rejected, ensure_ascii=False),
                "text": pair_text(self)}

    @classmethod
    def from_record(cls, record: dict) -> "PreferencePair":
        """The pair of a record (its JSON columns, or lists already decoded)."""
        def turns(value):
            return json.loads(value) if isinstance(value, str) else list(value)
        return cls(turns(record["prompt_messages"]), turns(record["chosen"]), turns(record["rejected"]))


def pair_text(pair: PreferencePair) -> str:
    """The prompt turns, then the chosen and the rejected turns, each block headed by its side."""
    from finetune_pipeline.sources.conversations import render_text

    return "\n\n".join([render_text(pair.prompt_messages), "chosen:\n" + render_text(pair.chosen),
                        "rejected:\n" + render_text(pair.rejected)])


def pair_records(records: list[dict], source_uri: str, source_type: str, ingested_at: str | None = None
                 ) -> pl.DataFrame:
    """Pair records from one source as a corpus frame: record_id and content_sha256 as every record has them,
    the pair columns after the standard ones."""
    rows = [{**r, "source_uri": source_uri, "source_type": source_type, "ingested_at": ingested_at,
             "record_id": make_record_id(source_uri, r["locator"]), "content_sha256": sha256_text(r["text"])}
            for r in records]
    frame = corpus_frame(rows)
    for name, dtype in PAIR_COLUMNS.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
    return frame
