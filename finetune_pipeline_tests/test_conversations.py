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


# instruction settings need a base model; none here, so the too-long filter is skipped (with a warning)
NO_MODEL = {"instruction": {"base_model": "/nonexistent/instruction-base-model"}}


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
    return Settings(task="instruction", privacy=PrivacySettings(detector="patterns"), training=NO_MODEL)


def test_no_personal_value_survives_in_any_turn_or_column(patterns):
    corpus = _conversation_corpus(CONVERSATIONS)
    result = clean_corpus(corpus, patterns)
    assert result.kept.height == 2, result.rejected.to_dicts()
    kept = result.kept
    assert "text_raw" not in kept.columns and _values_left(kept) == []  # no clear copy in any column
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
    redacted = [{s["kind"] for s in json.loads(r)} for r in result.kept.sort("locator")["redactions"]]
    assert redacted == [{"credit_card", "email"}, {"credit_card", "email", "phone"}]  # kinds, never values
    # every turn counted: 2 cards, 2 emails, 2 phones over the two conversations
    assert result.stats.pii_by_type == {"credit_card": 2, "email": 2, "phone": 2}


@pytest.mark.parametrize("kind, where", [("credit_card", 0), ("email", 0), ("phone", 1)])
def test_drop_policy_in_any_turn_rejects_the_conversation(kind, where):
    settings = Settings(task="instruction", privacy=PrivacySettings(detector="patterns", **{kind: "drop"}),
                        training=NO_MODEL)
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


# ---- readers (task: instruction), recognised by their columns

def _instruction(**sources) -> Settings:
    return Settings.model_validate({"task": "instruction", "training": {"instruction": {"base_model": "models/tiny"}},
                                    "sources": sources})


ASK, ANSWER = "How do I reset my password?", "Use the 'Forgot password' link on the sign-in page."
CHAT = [_turn("system", "You are the helpdesk assistant."), _turn("user", "Hello, my login fails."),
        _turn("assistant", "Which error do you see?"), _turn("user", ASK), _turn("assistant", ANSWER)]


def _collect(root, settings=None):
    from finetune_pipeline.sources import collect_raw_corpus

    return collect_raw_corpus(root, settings or _instruction())


def _raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    return raw


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _expect_chat(row, turns=CHAT):
    assert json.loads(row["messages"]) == turns
    assert row["prompt"] == ASK and row["response"] == ANSWER
    assert row["text"] == "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
    assert row["label"] is None


def test_openai_messages_from_jsonl_json_parquet_csv_and_hf_dataset(tmp_path):
    import datasets

    raw = _raw(tmp_path)
    _jsonl(raw / "a.jsonl", [{"id": 1, "messages": CHAT, "category": "account"}])
    (raw / "b.json").write_text(json.dumps([{"id": 2, "messages": CHAT}]))
    pl.DataFrame({"id": [3], "messages": [CHAT]}).write_parquet(raw / "c.parquet")
    pl.DataFrame({"id": [4], "messages": [json.dumps(CHAT)]}).write_csv(raw / "d.csv")
    datasets.Dataset.from_list([{"id": 5, "messages": CHAT}]).save_to_disk(str(raw / "e"))
    result = _collect(tmp_path)
    assert result.rejected.is_empty(), result.rejected.to_dicts()
    kept = result.kept.sort("source_uri")
    assert kept["locator"].to_list() == ["id=1", "id=2", "id=3", "id=4", "id=5"]
    assert kept["category"].to_list() == ["account", None, None, None, None]
    for row in kept.iter_rows(named=True):
        _expect_chat(row)


def test_sharegpt_alpaca_and_prompt_response_columns(tmp_path):
    raw = _raw(tmp_path)
    sharegpt = [{"from": "system", "value": "You are the helpdesk assistant."},
                {"from": "human", "value": "Hello, my login fails."}, {"from": "gpt", "value": "Which error do you see?"},
                {"from": "user", "value": ASK}, {"from": "assistant", "value": ANSWER}]
    _jsonl(raw / "sharegpt.jsonl", [{"conversations": sharegpt}])
    _jsonl(raw / "alpaca.jsonl", [{"instruction": "Summarise the ticket.", "input": "My parcel is late.",
                                   "output": "A late parcel."},
                                  {"instruction": ASK, "input": "", "output": ANSWER}])
    _jsonl(raw / "pairs.jsonl", [{"prompt": ASK, "response": ANSWER}])
    kept = _collect(tmp_path).kept.sort("source_uri", "locator")
    rows = {(r["source_uri"], r["locator"]): r for r in kept.iter_rows(named=True)}
    _expect_chat(rows[("raw/sharegpt.jsonl", "line 1")])
    assert json.loads(rows[("raw/alpaca.jsonl", "line 1")]["messages"]) == [
        _turn("user", "Summarise the ticket.\n\nMy parcel is late."), _turn("assistant", "A late parcel.")]
    pair = [_turn("user", ASK), _turn("assistant", ANSWER)]
    _expect_chat(rows[("raw/alpaca.jsonl", "line 2")], pair)
    _expect_chat(rows[("raw/pairs.jsonl", "line 1")], pair)


def test_columns_are_renamed_in_finetune_yaml(tmp_path):
    raw = _raw(tmp_path)
    _jsonl(raw / "a.jsonl", [{"chat": CHAT, "topic": "account"}])
    _jsonl(raw / "b.jsonl", [{"q": ASK, "a": ANSWER}])
    settings = _instruction(tabular={"messages_column": "chat", "category_column": "topic", "prompt_column": "q",
                                     "response_column": "a"})
    kept = _collect(tmp_path, settings).kept.sort("source_uri")
    _expect_chat(kept.row(0, named=True))
    assert kept["category"].to_list() == ["account", None]
    assert kept["response"].to_list() == [ANSWER, ANSWER]


def test_sqlite_tables_and_sql_queries_hold_conversations_as_json(tmp_path, monkeypatch):
    import sqlite3

    raw = _raw(tmp_path)
    with sqlite3.connect(raw / "chats.sqlite") as db:
        db.execute("create table chats (id integer primary key, messages text)")
        db.execute("insert into chats values (1, ?)", (json.dumps(CHAT),))
        db.execute("create table agents (id integer, name text)")
    external = tmp_path / "external.sqlite"
    with sqlite3.connect(external) as db:
        db.execute("create table pairs (id integer primary key, instruction text, output text)")
        db.execute("insert into pairs values (7, ?, ?)", (ASK, ANSWER))
    monkeypatch.setenv("PAIRS_DB_URL", f"sqlite:///{external}")
    settings = _instruction(sql=[{"name": "pairs", "url_env": "PAIRS_DB_URL",
                                  "query": "SELECT id, instruction, output FROM pairs"}])
    result = _collect(tmp_path, settings)
    assert result.rejected.is_empty(), result.rejected.to_dicts()
    rows = {r["source_uri"]: r for r in result.kept.iter_rows(named=True)}
    _expect_chat(rows["raw/chats.sqlite"])
    assert rows["raw/chats.sqlite"]["locator"] == "table chats; id=1"
    _expect_chat(rows["sql://pairs"], [_turn("user", ASK), _turn("assistant", ANSWER)])


MALFORMED = [
    ({"messages": [_turn("user", ASK)]}, "no assistant turn"),
    ({"messages": [_turn("user", ASK), _turn("bot", ANSWER)]}, "unknown role 'bot'"),
    ({"messages": [_turn("user", "  "), _turn("assistant", ANSWER)]}, "turn 1 (user) is empty"),
    ({"messages": "not json at all"}, "not valid JSON"),
    ({"messages": {"role": "user"}}, "not a list of turns"),
    ({"messages": [ASK, ANSWER]}, "turn 1 is not an object"),
    ({"messages": [_turn("user", ASK), _turn("assistant", ANSWER), _turn("user", "And?")]},
     "the last turn must be the assistant's answer"),
    ({"messages": []}, "empty conversation"),
]


def test_each_malformed_conversation_is_a_reject_naming_the_row_and_the_fix(tmp_path):
    raw = _raw(tmp_path)
    good = {"messages": CHAT}
    lines = [json.dumps(good)] + [json.dumps(row) for row, _ in MALFORMED] + ['{"messages": [broken']
    (raw / "chats.jsonl").write_text("\n".join(lines) + "\n")
    result = _collect(tmp_path)
    assert result.kept["locator"].to_list() == ["line 1"]
    rejects = {r["locator"]: r for r in result.rejected.iter_rows(named=True)}
    for number, (_, why) in enumerate(MALFORMED, start=2):
        reject = rejects[f"line {number}"]
        assert reject["reason"] == "malformed_conversation" and why in reject["detail"], reject
        assert reject["detail"].startswith(f"raw/chats.jsonl line {number}: ")
    broken = rejects[f"line {len(lines)}"]
    assert broken["reason"] == "malformed_row" and "malformed JSON" in broken["detail"]
    assert result.kept.height + result.rejected.height == len(lines)


def test_sharegpt_unknown_speaker_and_alpaca_without_output_are_rejects(tmp_path):
    raw = _raw(tmp_path)
    _jsonl(raw / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": ASK},
                                                       {"from": "robot", "value": ANSWER}]}])
    _jsonl(raw / "alpaca.jsonl", [{"instruction": ASK, "input": "", "output": ""}])
    details = sorted(_collect(tmp_path).rejected["detail"].to_list())
    assert "empty 'output' value" in details[0] and "unknown speaker 'robot'" in details[1]


def test_documents_in_an_instruction_root_are_rejected_with_what_to_do(tmp_path):
    raw = _raw(tmp_path)
    (raw / "notes.txt").write_text("Some notes about the helpdesk that are not a conversation at all.")
    _jsonl(raw / "chats.jsonl", [{"messages": CHAT}])
    result = _collect(tmp_path)
    assert result.kept["source_uri"].to_list() == ["raw/chats.jsonl"]
    reject = result.rejected.row(0, named=True)
    assert reject["reason"] == "not_a_conversation" and "move documents to a classification root" in reject["detail"]


def test_a_table_without_conversation_columns_says_which_columns_to_set(tmp_path):
    _jsonl(_raw(tmp_path) / "tickets.jsonl", [{"text": "My parcel is late.", "label": "shipping"}])
    reject = _collect(tmp_path).rejected.row(0, named=True)
    assert reject["reason"] == "missing_column" and "sources.tabular.messages_column" in reject["detail"]


def test_collected_conversations_are_cleaned_end_to_end(tmp_path):
    _jsonl(_raw(tmp_path) / "chats.jsonl", [{"messages": CONVERSATIONS[1]}])
    settings = _instruction(tabular={})
    settings = settings.model_copy(update={"privacy": PrivacySettings(detector="patterns")})
    corpus = _collect(tmp_path, settings).kept
    assert set(corpus.columns) >= {"messages", "prompt", "response", "category"}
    cleaned = clean_corpus(corpus, settings).kept
    assert cleaned.height == 1 and _values_left(cleaned) == []


# ---- SFT filters on the final answer

LONG_PROSE = ("To move your subscription to the yearly plan, open the billing page, choose the yearly option and "
              "confirm with your password. The price difference for the current month is credited to your "
              "account, and the next invoice shows the new plan with the credit")


@pytest.mark.parametrize("response, reason", [
    ("   ", "empty_response"),
    ("k", "response_too_short"),
    ("How do I change my plan to the yearly subscription?", "response_equals_prompt"),
    ("As an AI language model, I cannot access your account or change the plan.", "refusal"),
    ("I'm sorry, but I cannot help with changing subscription plans for you today.", "refusal"),
    ("i cannot help with that request about your subscription plan, please ask billing.", "refusal"),
    (LONG_PROSE, "truncated_response"),
    ("Run this:\n```python\nclient.change_plan('yearly')\n", "truncated_response"),
])
def test_each_sft_filter_rejects_with_its_own_reason(patterns, response, reason):
    turns = [_turn("user", "How do I change my plan to the yearly subscription?"), _turn("assistant", response)]
    result = clean_corpus(_conversation_corpus([turns]), patterns)
    assert result.kept.is_empty()
    assert result.rejected.row(0, named=True)["reason"] == reason


@pytest.mark.parametrize("response", [
    "Yes.", "Five working days.", LONG_PROSE + ".",
    "Run this:\n```python\nclient.change_plan('yearly')\n```",
    "Steps:\n- open the billing page in your account settings\n- choose the yearly option from the plan list\n"
    "- confirm the change with your password\n- check the confirmation email for the new invoice date\n"
    "- contact billing if the credit for the current month does not show on the next invoice",
])
def test_short_valid_answers_code_and_lists_are_kept(patterns, response):
    turns = [_turn("user", "Can I move my subscription to the yearly plan, and how long does the change take?"),
             _turn("assistant", response)]
    result = clean_corpus(_conversation_corpus([turns]), patterns)
    assert result.kept.height == 1, result.rejected.to_dicts()


def test_refusals_are_kept_when_the_pattern_list_is_empty():
    settings = Settings(task="instruction", privacy=PrivacySettings(detector="patterns"),
                        cleaning={"refusal_patterns": []}, training=NO_MODEL)
    turns = [_turn("user", "Please give me the home address of the engineer who fixed my grinder."),
             _turn("assistant", "I'm sorry, but I cannot share anyone's home address.")]
    assert clean_corpus(_conversation_corpus([turns]), settings).kept.height == 1


def test_a_name_found_in_one_turn_is_redacted_in_every_turn(patterns):
    turns = [_turn("user", "Hello, my name is Kenji Tanaka and my grinder order has not arrived yet."),
             _turn("assistant", "The parcel for Kenji Tanaka left our warehouse today and arrives on Friday.")]
    kept = clean_corpus(_conversation_corpus([turns]), patterns).kept
    assert kept.height == 1
    assert not any("Kenji" in (v or "") for c in ("text", "messages", "prompt", "response") for v in kept[c])
    assert kept["response"][0].startswith("The parcel for <PERSON> left")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny local causal LM whose tokenizer and chat template the too-long filter counts with."""
    from finetune_pipeline_tests.test_instruction import tiny_llama_folder

    texts = [t["content"] for turns in CONVERSATIONS for t in turns] + [t["content"] for t in TOO_LONG_CASES[1]]
    return tiny_llama_folder(tmp_path_factory.mktemp("chat_model"), texts)


TOO_LONG_CASES = [
    [_turn("user", "Where is my parcel? It was due on Monday."), _turn("assistant", "It arrives tomorrow morning.")],
    [_turn("system", "You are the helpdesk assistant for a coffee grinder shop, polite and brief."),
     _turn("user", "My grinder stopped working yesterday after I cleaned the burrs, what should I check first?"),
     _turn("assistant", "Check that the hopper is seated and locked; the grinder will not start otherwise."),
     _turn("user", "It is locked. The motor hums but the burrs do not turn at all, even when empty."),
     _turn("assistant", "Then a coffee bean is stuck between the burrs: unplug it, remove the upper burr and clear it.")],
]


def _too_long_settings(model: str, action: str, max_length: int) -> Settings:
    return Settings.model_validate({"task": "instruction", "privacy": {"detector": "patterns"},
                                    "cleaning": {"too_long_action": action},
                                    "training": {"instruction": {"base_model": model,
                                                                 "max_length": max_length}}})


def _tokens(model: str, turns: list[dict]) -> int:
    from finetune_pipeline.chat import conversation_ids, load_chat_tokenizer

    return len(conversation_ids(load_chat_tokenizer(model), turns))


def test_conversations_longer_than_the_training_length_are_flagged_or_dropped(chat_model):
    short, long = (_tokens(chat_model, turns) for turns in TOO_LONG_CASES)
    assert short < long
    corpus = _conversation_corpus(TOO_LONG_CASES)
    # flag: both kept, the long one (one token over) flagged and counted; exactly the limit is not too long
    flagged = clean_corpus(corpus, _too_long_settings(chat_model, "flag", long - 1))
    assert flagged.kept.height == 2 and flagged.rejected.is_empty() and flagged.stats.warnings == []
    assert [("conversation_too_long" in flags) for flags in flagged.kept["quality_flags"].to_list()] == [False, True]
    assert flagged.stats.quality_flags.get("conversation_too_long") == 1
    assert clean_corpus(corpus, _too_long_settings(chat_model, "flag", long)).stats.quality_flags \
        .get("conversation_too_long") is None
    # drop: the long one is a reject with the reason, its token count and the setting named
    dropped = clean_corpus(corpus, _too_long_settings(chat_model, "drop", short))
    assert dropped.kept.height == 1 and dropped.kept["response"][0] == TOO_LONG_CASES[0][1]["content"]
    reject = dropped.rejected.row(0, named=True)
    assert reject["reason"] == "conversation_too_long"
    assert f"{long} tokens > training.instruction.max_length={short}" in reject["detail"]


def test_too_long_filter_without_a_loadable_tokenizer_warns_instead_of_failing(tmp_path):
    missing = str(tmp_path / "no_model_here")
    result = clean_corpus(_conversation_corpus(TOO_LONG_CASES), _too_long_settings(missing, "drop", 8))
    assert result.kept.height == 2 and result.rejected.is_empty()  # nothing measured, nothing dropped
    [warning] = result.stats.warnings
    assert missing in warning and "too-long filter was skipped" in warning
