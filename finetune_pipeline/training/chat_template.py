"""The chat template and tokenizer training renders conversations with: they live in `finetune_pipeline.chat`,
below cleaning (the too-long filter counts tokens with them) and training alike."""

from finetune_pipeline.chat import PLAIN_CHAT_TEMPLATE, conversation_ids, load_chat_tokenizer  # noqa: F401
