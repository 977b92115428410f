"""Instruction data: every turn of a conversation is cleaned and redacted, and the columns training and the
exports read (`messages`, `prompt`, `response`) never keep what `text` lost."""

import json

import polars as pl
import pytest

from finetune_pipeline.cleaning import clean_corpus
from finetune_pipeline.cleaning.erasure import ErasureRequest
from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text
from finetune_pipeline.settings import PrivacySettings, Settings

CARD, EMAIL, PHONE = "4111 1111 1111 1111", "jane.doe@example.com", "+44 20 7946 0958"
PERSONAL = (CARD, EMAIL, PHONE, "4111111111111111", "jane.doe", "7946 0958")


def _conversation_corpus(conversations, source="raw/chats.jsonl"):
    """Records shaped as the instruction readers make them (written out here so the test stands alone)."""
    rows = []
    for i, turns in enumerate(conversations):
        text = "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
        prompt = next(t["content"] for t in reversed(turns[:-1]) if t["role"] == "user")
        rows.append({"record_id": make_record_id(source, f"line {i + 1}"), "text": text, "source_uri": source,
                     "source_type": "jsonl", "locator": f"line {i + 1}", "content_sha256": sha256_text(text),
                     "messages": json.dumps(turns), "prompt": prompt, "response": turns[-1]["content"],
                     "category": None})
    return corpus_frame(rows)


def _turn(role, content):
    return {"role": role, "content": content}


# One personal value in each place a value can hide: system turn, a middle turn, the prompt, the response.
CONVERSATIONS = [
    [_turn("user", f"My card {CARD} was charged twice for the same order, can you refund one of the charges?"),
     _turn("assistant", f"I have refunded one charge; the receipt went to {EMAIL} and should arrive within the hour.")],
    [_turn("system", f"You are the helpdesk assistant. Escalations go to {EMAIL} or {PHONE} during office hours."),
     _turn("user", f"Please call me back on {PHONE} about my broken grinder, it stopped working yesterday."),
     _turn("assistant", "Our team will call you back today between two and four in the afternoon."),
     _turn("user", f"Thanks. Also, can you charge the replacement part to my card {CARD} please?"),
     _turn("assistant", "Done: the replacement part is ordered and charged to the card you gave us.")],
]


def _values_left(frame: pl.DataFrame) -> list[tuple[str, str]]:
    return [(column, value) for column in frame.columns if frame.schema[column] == pl.String
            for cell in frame[column].to_list() if cell for value in PERSONAL if value in cell]


@pytest.fixture(scope="module")
def patterns():
    return Settings(privacy=PrivacySettings(detector="patterns"))


def test_no_personal_value_survives_in_any_turn_or_column(patterns):
    corpus = _conversation_corpus(CONVERSATIONS)
    result = clean_corpus(corpus, patterns)
    assert result.kept.height == 2, result.rejected.to_dicts()
    kept = result.kept.drop("text_raw")  # the audit column keeps the original text by design
    assert _values_left(kept) == []
    for row in kept.iter_rows(named=True):
        turns = json.loads(row["messages"])
        assert row["response"] == turns[-1]["content"]
        assert row["prompt"] == [t for t in turns if t["role"] == "user"][-1]["content"]
        assert row["text"] == "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
        assert row["content_sha256"] == sha256_text(row["text"])
    first, second = (json.loads(m) for m in kept.sort("locator")["messages"])
    assert "<CREDIT_CARD>" in first[0]["content"] and "<EMAIL>" in first[1]["content"]
    assert "<EMAIL>" in second[0]["content"] and "<PHONE>" in second[0]["content"]
    assert "<CREDIT_CARD>" in second[3]["content"]
    assert result.kept.sort("locator")["text_raw"].to_list() == corpus.sort("locator")["text"].to_list()
    # every turn counted: 2 cards, 2 emails, 2 phones over the two conversations
    assert result.stats.pii_by_type == {"credit_card": 2, "email": 2, "phone": 2}


@pytest.mark.parametrize("kind, where", [("credit_card", 0), ("email", 0), ("phone", 1)])
def test_drop_policy_in_any_turn_rejects_the_conversation(kind, where):
    settings = Settings(privacy=PrivacySettings(detector="patterns", **{kind: "drop"}))
    result = clean_corpus(_conversation_corpus([CONVERSATIONS[where]]), settings)
    assert result.kept.is_empty()
    reject = result.rejected.row(0, named=True)
    assert reject["reason"] == "pii_policy" and not any(v in reject["detail"] for v in PERSONAL)


@pytest.mark.parametrize("subject", [EMAIL, PHONE, "Kowalczyk"])
def test_erasure_subject_in_any_turn_removes_the_conversation(patterns, subject):
    turns = [_turn("system", "You answer questions about orders for the espresso grinder shop."),
             _turn("user", "Who handled the return of my grinder last week, and when will it arrive?"),
             _turn("assistant", f"Agnieszka Kowalczyk handled it; she reached you at {EMAIL} and {PHONE}."),
             _turn("user", "Thanks, and when will the refund for the grinder reach my account?"),
             _turn("assistant", "The refund reaches your account within five working days of the return.")]
    other = [_turn("user", "How long does a refund for a returned espresso grinder usually take to arrive?"),
             _turn("assistant", "A refund reaches your account within five working days of the return.")]
    result = clean_corpus(_conversation_corpus([turns, other]), patterns,
                          [ErasureRequest("r1", subject)])
    assert result.kept.height == 1 and result.kept["locator"].to_list() == ["line 2"]
    assert result.rejected["reason"].to_list() == ["erased_by_request"]
    assert result.stats.erasure.removed_by_request == {"r1": 1}
