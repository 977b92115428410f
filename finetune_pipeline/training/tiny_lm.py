"""A small causal LM built from a data root's own conversations, for roots that must run offline without a
downloaded model (the shipped `examples/instruction/`, tests).

1. Texts: the root's conversations read by the pipeline's own readers and cleaned by its cleaning stage, so
   the tokenizer learns only what training will see (personal data already redacted: no name, e-mail or
   card number can become a vocabulary entry).
2. Tokenizer: byte-level BPE (Hugging Face `tokenizers`) trained on those turns, with ChatML-style
   special tokens and a chat template; `<|im_end|>` ends a turn and is the end-of-sequence token, so
   generation stops after an answer.
3. Model: a Llama of `training.build_base_model`'s shape with seeded random weights, saved as safetensors.

`ensure_base_model` decides: nothing for classification roots or when the folder exists; build when
`training.build_base_model.enabled`; otherwise a missing local folder is an error (never a silent toy model).
Imports no dagster. Never trust_remote_code.
"""

from __future__ import annotations

import os
from pathlib import Path

from finetune_pipeline.atomic import atomic_path
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.settings import BaseModelBuildSettings, Settings
from finetune_pipeline.tasks import task_for

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class BaseModelMissing(ValueError):
    """training.instruction.base_model names a folder that is not there and is not to be built."""


def root_conversation_texts(root: DataRoot, settings: Settings) -> list[str]:
    """Every text unit of the root's records after the cleaning stage (normalised, personal data redacted):
    each turn of a conversation or of a preference pair (`Task.text_units`)."""
    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.sources import collect_raw_corpus

    corpus = collect_raw_corpus(root.path, settings).kept
    if corpus.is_empty():
        return []
    cleaned = clean_corpus(corpus, settings).kept
    task = task_for(settings)
    return [unit for row in cleaned.iter_rows(named=True) for unit in task.text_units(row)]


def train_chat_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, with the chat template and special tokens above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts + ["system user assistant"], trainer)
    chat = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   unk_token=None, bos_token=None)
    chat.chat_template = CHAT_TEMPLATE
    return chat


def build_tiny_causal_lm(folder: str | Path, texts: list[str], shape: BaseModelBuildSettings) -> Path:
    """Train the tokenizer on `texts`, build a random-weight Llama of `shape`, and save both (safetensors)
    with a short model card into `folder`, swapped in whole."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if not texts:
        raise ValueError("no conversation to train the base model's tokenizer on: put conversations in raw/")
    tokenizer = train_chat_tokenizer(texts, shape.vocab_size)
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=shape.hidden_size,
                         intermediate_size=shape.intermediate_size, num_hidden_layers=shape.layers,
                         num_attention_heads=shape.attention_heads, num_key_value_heads=shape.attention_heads,
                         max_position_embeddings=shape.max_position_embeddings, eos_token_id=eos,
                         pad_token_id=pad, bos_token_id=None, tie_word_embeddings=True,
                         initializer_range=shape.initializer_range)
    torch.manual_seed(shape.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(
            "# A small random-weight Llama built by finetune-pipeline\n\n"
            f"Built by `finetune-pipeline build-base-model` from the data root's conversations: a byte-level BPE "
            f"tokenizer ({len(tokenizer)} tokens) trained on the cleaned turns (personal data redacted), with a "
            f"ChatML-style chat template, and a Llama ({shape.layers} layers, width {shape.hidden_size}, "
            f"{model.num_parameters():,} parameters) with seeded random weights. It knows no language: it exists so "
            "the pipeline runs end to end offline. Set `training.instruction.base_model` to a real model folder for "
            "real work.\n")
    return folder


def _looks_like_a_path(name: str) -> bool:
    return Path(name).expanduser().is_absolute() or name.startswith((".", "~")) or name.count("/") > 1


def ensure_base_model(root: DataRoot, settings: Settings, log=print) -> Path | None:
    """The instruction base model folder, built first when `training.build_base_model.enabled` and it is
    missing. None for tasks without one (classification) and for a hub id left to transformers (online).
    Raises BaseModelMissing for a local folder that is not there and is not to be built."""
    training, task = settings.training, task_for(settings)
    name = task.buildable_base_model(training)
    if not name:
        return None
    folder = Path(name).expanduser()
    if folder.exists():
        return folder
    if training.build_base_model.enabled:
        log(f"base model: {folder} is missing; building a small random-weight Llama with a tokenizer trained on "
            f"{root.raw}")
        build_tiny_causal_lm(folder, root_conversation_texts(root, settings), training.build_base_model)
        log(f"base model: built {folder}")
        return folder
    if _looks_like_a_path(name) or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise BaseModelMissing(
            f"training.{task.base_model_setting}: {name} not found (looked in {root.path} and the working directory"
            f"{'; the hub is offline' if os.environ.get('HF_HUB_OFFLINE') == '1' else ''}). Put a causal LM folder "
            "there (config.json, safetensors weights, tokenizer) or name one that exists; for a small "
            "random-weight model built from raw/ (examples and tests only) set training.build_base_model.enabled: "
            "true")
    return None
