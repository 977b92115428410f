"""Text generators for paraphrases and synthetic examples: one interface, three backends.

- `OpenAICompatibleGenerator`: any server speaking the OpenAI chat-completions protocol (vLLM, Ollama,
  llama.cpp server, a hosted API). URL and model come from `finetune.yaml`, the key from an environment
  variable; neither the key nor the prompts are logged.
- `HuggingFaceGenerator`: a local model folder (causal LM or seq2seq), loaded with transformers, never
  with `trust_remote_code`; chat template when the tokenizer has one.
- `RuleVariations`: model-free word dropout and neighbour swaps; paraphrases only.

Every backend answers `complete(conversations, n)` -> n candidate texts per conversation, and
`paraphrase(texts, n)`. Failures raise `GenerationError` with a message naming the setting to fix.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod

import numpy as np

from finetune_pipeline.settings import GeneratorSettings

log = logging.getLogger(__name__)

Conversation = list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]

PARAPHRASE_SYSTEM = ("You rewrite texts. Keep the meaning, the facts, the language and the register; change "
                     "the wording and sentence structure. Reply with the rewritten text only.")


class GenerationError(RuntimeError):
    """A generator could not produce text (server down, bad model path, refused request)."""


def paraphrase_conversation(text: str) -> Conversation:
    return [{"role": "system", "content": PARAPHRASE_SYSTEM},
            {"role": "user", "content": f"Rewrite this text:\n\n{text}"}]


class TextGenerator(ABC):
    """Produces candidate texts; `name` is recorded on every generated row (model name/version)."""

    name: str

    @abstractmethod
    def complete(self, conversations: list[Conversation], n: int) -> list[list[str]]:
        """`n` candidate replies for each conversation."""

    def paraphrase(self, texts: list[str], n: int) -> list[list[str]]:
        return self.complete([paraphrase_conversation(t) for t in texts], n)


class OpenAICompatibleGenerator(TextGenerator):
    """POST {base_url}/chat/completions, with retries on 429 and 5xx."""

    def __init__(self, cfg: GeneratorSettings):
        if not cfg.base_url or not cfg.model:
            raise GenerationError("augmentation.generator.base_url and .model must be set for backend 'openai'")
        self.cfg = cfg
        self.name = f"openai:{cfg.model}"
        self.api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if cfg.api_key_env and not self.api_key:
            raise GenerationError(f"environment variable {cfg.api_key_env} (augmentation.generator.api_key_env) "
                                  f"is not set; export the API key there")

    def complete(self, conversations: list[Conversation], n: int) -> list[list[str]]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        out = []
        with httpx.Client(timeout=self.cfg.timeout_s, headers=headers) as client:
            for messages in conversations:
                replies: list[str] = []
                while len(replies) < n:  # some servers ignore `n`; ask again for the rest
                    body = {"model": self.cfg.model, "messages": messages, "n": n - len(replies),
                            "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_new_tokens}
                    choices = self._post(client, url, body)["choices"]
                    if not choices:
                        break
                    replies += [(c.get("message") or {}).get("content") or "" for c in choices]
                out.append(replies[:n])
        return out

    def _post(self, client, url: str, body: dict) -> dict:
        import httpx

        for attempt in range(self.cfg.retries + 1):
            try:
                response = client.post(url, json=body)
            except httpx.HTTPError as exc:
                error = f"cannot reach {self.cfg.base_url} ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise GenerationError(f"{self.cfg.base_url} answered with something that is not JSON")
                error = f"{self.cfg.base_url} answered HTTP {response.status_code}"
                if response.status_code not in (408, 429) and response.status_code < 500:
                    raise GenerationError(f"{error}; check augmentation.generator.model and the API key")
            if attempt < self.cfg.retries:
                time.sleep(min(2 ** attempt, 8) * 0.5)
        raise GenerationError(f"{error} after {self.cfg.retries + 1} attempts")


class HuggingFaceGenerator(TextGenerator):
    """A local transformers model: causal LM (with its chat template when it has one) or seq2seq."""

    def __init__(self, cfg: GeneratorSettings):
        if not cfg.model_path:
            raise GenerationError("augmentation.generator.model_path must name a local model folder "
                                  "for backend 'hf_local'")
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        self.cfg = cfg
        try:
            config = AutoConfig.from_pretrained(cfg.model_path)
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
            self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
            loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
            self.model = loader.from_pretrained(cfg.model_path)
        except (OSError, ValueError) as exc:
            raise GenerationError(f"cannot load a generation model from augmentation.generator.model_path "
                                  f"({type(exc).__name__}); it must be a local transformers model folder") from None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = f"hf:{os.path.basename(os.path.normpath(cfg.model_path))}"

    def _prompt(self, messages: Conversation) -> str:
        if not self.seq2seq and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + ("\n\n" if not self.seq2seq else "")

    def complete(self, conversations: list[Conversation], n: int) -> list[list[str]]:
        import torch

        torch.manual_seed(self.cfg.seed)
        out = []
        for messages in conversations:
            inputs = self.tokenizer(self._prompt(messages), return_tensors="pt", truncation=True,
                                    max_length=self.cfg.max_prompt_tokens).to(self.device)
            with torch.no_grad():
                generated = self.model.generate(
                    **inputs, do_sample=True, temperature=max(self.cfg.temperature, 1e-3),
                    num_return_sequences=n, max_new_tokens=self.cfg.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id)
            if not self.seq2seq:
                generated = generated[:, inputs["input_ids"].shape[1]:]
            out.append([t.strip() for t in self.tokenizer.batch_decode(generated, skip_special_tokens=True)])
        return out


class RuleVariations(TextGenerator):
    """Model-free variations: each word dropped with probability `word_dropout`, plus `swaps` swaps of
    neighbouring words. Cheap and label-preserving for most classification data; no synthetic examples."""

    def __init__(self, cfg: GeneratorSettings):
        self.cfg = cfg
        self.name = f"rules:dropout={cfg.word_dropout},swaps={cfg.swaps}"
        self.rng = np.random.default_rng(cfg.seed)

    def complete(self, conversations: list[Conversation], n: int) -> list[list[str]]:
        raise GenerationError("backend 'rules' only makes paraphrase-like variations; choose 'hf_local' or "
                              "'openai' in augmentation.generator.backend for synthetic examples")

    def paraphrase(self, texts: list[str], n: int) -> list[list[str]]:
        return [[self._vary(text) for _ in range(n)] for text in texts]

    def _vary(self, text: str) -> str:
        words = text.split()
        if len(words) < 4:
            return text
        keep = self.rng.random(len(words)) >= self.cfg.word_dropout
        words = [w for w, k in zip(words, keep) if k] or words
        for _ in range(self.cfg.swaps):
            if len(words) > 2:
                i = int(self.rng.integers(0, len(words) - 1))
                words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)


def make_generator(cfg: GeneratorSettings) -> TextGenerator:
    backends = {"openai": OpenAICompatibleGenerator, "hf_local": HuggingFaceGenerator, "rules": RuleVariations}
    return backends[cfg.backend](cfg)
