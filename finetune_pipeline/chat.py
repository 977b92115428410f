"""The chat template instruction training renders conversations with, and the tokenizer that carries it.

Below both cleaning and training (no torch, no peft): the cleaning stage counts a conversation's tokens the
way training will (the too-long filter) without loading a model, and training renders with the same
template. Never trust_remote_code.
"""

from __future__ import annotations

# Used only when the tokenizer has no chat template of its own (e.g. a base, non-chat model).
PLAIN_CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}### System:\n{{ m['content'] }}\n"
                       "{% elif m['role'] == 'user' %}### Prompt:\n{{ m['content'] }}\n"
                       "{% else %}### Response:\n{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
                       "{% if add_generation_prompt %}### Response:\n{% endif %}")


def load_chat_tokenizer(path: str):
    """The tokenizer of the model folder `path`, with PLAIN_CHAT_TEMPLATE when it has no chat template and
    its end-of-sequence token as padding when it has no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def conversation_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """The token ids of `messages` rendered by the tokenizer's chat template."""
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                              add_generation_prompt=add_generation_prompt)["input_ids"])
