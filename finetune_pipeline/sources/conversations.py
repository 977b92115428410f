"""Conversations for instruction tuning: the record fields one conversation gives, and the readers of the
usual chat formats, each recognised by its columns.

A conversation is a list of turns `{"role": "system" | "user" | "assistant", "content": str}`, in order,
ending with an assistant turn. Its record carries `messages` (the turns as a JSON array), `prompt` (the
last user turn before the final answer), `response` (the final answer) and `text` (every turn as
"<role>: <content>", joined by a blank line: what deduplication, the quality filters and erasure see).

Formats (column names from `sources.tabular`):
- OpenAI `messages`: a list of {role, content} (a real list, or a JSON string in CSV/SQL);
- ShareGPT `conversations`: a list of {from, value}, from in system/human/user/gpt/assistant;
- Alpaca `instruction` + optional `input` + `output`: the user turn is the instruction, then a blank line
  and the input when it is not empty;
- `prompt` + `response` columns.
"""

from __future__ import annotations

import json

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class MalformedConversation(ValueError):
    """A row whose conversation cannot be used; the message says what is wrong and what to do."""


def render_text(turns: list[dict]) -> str:
    """Every turn as "<role>: <content>", joined by a blank line."""
    return "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)


def conversation_fields(turns: list[dict]) -> dict:
    """`messages`, `prompt`, `response` and `text` of one valid conversation."""
    prompt = next((t["content"] for t in reversed(turns[:-1]) if t["role"] == "user"), "")
    return {"messages": json.dumps(turns, ensure_ascii=False), "prompt": prompt,
            "response": turns[-1]["content"], "text": render_text(turns)}


def validate_turns(turns: list[dict], column: str) -> list[dict]:
    """Check the shape every format must end up in; raise MalformedConversation naming the fix."""
    if not turns:
        raise MalformedConversation(f"{column!r} is an empty conversation; give at least a user and an assistant turn")
    for number, turn in enumerate(turns, start=1):
        if turn["role"] not in ROLES:
            raise MalformedConversation(f"{column!r} turn {number} has unknown role {turn['role']!r}; "
                                        f"use one of {', '.join(ROLES)}")
        if not turn["content"].strip():
            raise MalformedConversation(f"{column!r} turn {number} ({turn['role']}) is empty; "
                                        f"remove the turn or fill it in")
    if not any(t["role"] == "assistant" for t in turns):
        raise MalformedConversation(f"{column!r} has no assistant turn; a training example needs an answer")
    if turns[-1]["role"] != "assistant":
        raise MalformedConversation(f"{column!r} ends with a {turns[-1]['role']} turn; the last turn must be the "
                                    f"assistant's answer (drop the trailing turns)")
    if not any(t["role"] == "user" for t in turns[:-1]):
        raise MalformedConversation(f"{column!r} has no user turn before the final answer; add the question")
    return turns


def _turn_list(value, column: str) -> list:
    if isinstance(value, str):  # CSV cells and SQL columns hold the list as JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise MalformedConversation(f"{column!r} is not valid JSON ({exc.msg}); write it as a JSON array "
                                        f"of turns") from None
    if hasattr(value, "to_list"):  # a polars Series from a nested parquet/Arrow column
        value = value.to_list()
    if not isinstance(value, (list, tuple)):
        raise MalformedConversation(f"{column!r} is a {type(value).__name__}, not a list of turns; write it as "
                                    f"a JSON array of turns")
    return list(value)


def _text(value, column: str, number: int, field: str) -> str:
    if not isinstance(value, str):
        raise MalformedConversation(f"{column!r} turn {number}: {field!r} must be a string, "
                                    f"not {type(value).__name__}")
    return value


def openai_turns(value, column: str = "messages") -> list[dict]:
    """Turns from an OpenAI-style list of {role, content}."""
    turns = []
    for number, turn in enumerate(_turn_list(value, column), start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise MalformedConversation(f"{column!r} turn {number} is not an object with 'role' and 'content'")
        turns.append({"role": _text(turn["role"], column, number, "role").strip().lower(),
                      "content": _text(turn["content"], column, number, "content")})
    return validate_turns(turns, column)


def sharegpt_turns(value, column: str = "conversations") -> list[dict]:
    """Turns from a ShareGPT list of {from, value}."""
    turns = []
    for number, turn in enumerate(_turn_list(value, column), start=1):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise MalformedConversation(f"{column!r} turn {number} is not an object with 'from' and 'value'")
        speaker = _text(turn["from"], column, number, "from").strip().lower()
        if speaker not in SHAREGPT_ROLES:
            raise MalformedConversation(f"{column!r} turn {number} has unknown speaker {speaker!r}; use one of "
                                        f"{', '.join(SHAREGPT_ROLES)}")
        turns.append({"role": SHAREGPT_ROLES[speaker], "content": _text(turn["value"], column, number, "value")})
    return validate_turns(turns, column)


def alpaca_turns(instruction, input_text, output, columns: tuple[str, str, str]) -> list[dict]:
    """Turns from Alpaca columns: user = instruction (+ blank line + input when not empty), assistant = output."""
    instruction_column, _, output_column = columns
    for value, column in ((instruction, instruction_column), (output, output_column)):
        if value is None or not str(value).strip():
            raise MalformedConversation(f"empty {column!r} value; fill it in or remove the row")
    user = str(instruction)
    if input_text is not None and str(input_text).strip():
        user += "\n\n" + str(input_text)
    return validate_turns([{"role": "user", "content": user}, {"role": "assistant", "content": str(output)}],
                          output_column)


def prompt_response_turns(prompt, response, columns: tuple[str, str]) -> list[dict]:
    """Turns from prompt/response columns."""
    for value, column in ((prompt, columns[0]), (response, columns[1])):
        if value is None or not str(value).strip():
            raise MalformedConversation(f"empty {column!r} value; fill it in or remove the row")
    return [{"role": "user", "content": str(prompt)}, {"role": "assistant", "content": str(response)}]
