"""Augmentation through the generator interface: rules, an OpenAI-compatible server the test starts on
127.0.0.1, and a tiny local transformers model; filters, caps, train-only placement, failure fallback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.augment.generators import PARAPHRASE_SYSTEM, GenerationError, HuggingFaceGenerator, \
    OpenAICompatibleGenerator
from finetune_pipeline.records import sha256_text
from finetune_pipeline.settings import GeneratorSettings, Settings
from finetune_pipeline.splits import apply_split_assignment, split_assignment

BILLING = ["I was charged twice for order {n} and need one payment refunded to my card",
           "The invoice for order {n} lists the shipping fee two times, please correct the total amount",
           "My subscription renewed at the old price for account {n} although I changed plans last month"]
SHIPPING = ["The parcel for order {n} has not arrived after ten days and tracking shows no updates at all",
            "The courier left package {n} at the wrong address and the neighbours do not have it either"]


def _corpus(n_billing: int = 40, n_shipping: int = 12) -> pl.DataFrame:
    rows = []
    for label, templates, count in (("billing", BILLING, n_billing), ("shipping", SHIPPING, n_shipping)):
        for i in range(count):
            text = templates[i % len(templates)].format(n=1000 + i) + "."
            rows.append({"record_id": f"{label}-{i:03d}", "text": text, "source_uri": "raw/t.csv",
                         "source_type": "csv", "locator": f"row {i}", "content_sha256": sha256_text(text),
                         "label": label, "label_source": "column", "label_confidence": 1.0,
                         "ingested_at": "2026-11-24T00:00:00+00:00", "group_id": f"{label}-{i:03d}"})
    return pl.DataFrame(rows)


def _settings(**augmentation) -> Settings:
    # The fixture's texts are a few templates per label (near copies): only exact copies share a split group
    # here, or shipping's two templates would be two groups, too few for three splits.
    return Settings.model_validate({"labels": ["billing", "shipping"], "augmentation": augmentation,
                                    "splits": {"contamination_threshold": 1.0}})


def _placed(result_frame: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The augmented corpus as dataset_splits exports it: the split of its originals (decided as
    augment_corpus decided it) applied, augmented rows in their source's split."""
    return apply_split_assignment(result_frame, split_assignment(result_frame, settings.splits, settings.dedup)[0])


def _check_train_only(result_frame: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    splits = _placed(result_frame, settings)
    generated = splits.filter(pl.col("augmented_from").is_not_null())
    assert set(generated["split"]) == {"train"}
    sources = splits.select(pl.col("record_id").alias("augmented_from"), pl.col("split").alias("source_split"))
    assert set(generated.join(sources, on="augmented_from")["source_split"]) == {"train"}
    return generated


def test_rule_variations_fill_the_gap_and_stay_in_train():
    settings = _settings(paraphrase=True, generator={"backend": "rules", "word_dropout": 0.2, "swaps": 2})
    result = augment_corpus(_corpus(), settings)
    generated = _check_train_only(result.kept, settings)
    stats = result.stats
    assert stats.generator.startswith("rules:")
    train_counts = _placed(result.kept, settings).filter(pl.col("split") == "train") \
        .group_by("label").len()
    counts = dict(train_counts.iter_rows())
    assert counts["shipping"] == counts["billing"]  # balanced: paraphrases, then copies for the rest
    assert set(generated["augmentation"]) <= {"paraphrase", "oversample"} and "paraphrase" in stats.by_technique
    para = generated.filter(pl.col("augmentation") == "paraphrase")
    assert para["text"].n_unique() == para.height and para["augmentation_model"].str.starts_with("rules:").all()
    assert not set(para["text"]) & set(_corpus()["text"])
    assert (para["content_sha256"] == para["text"].map_elements(sha256_text, return_dtype=pl.String)).all()


class _FakeLLM(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint; ignores `n` (returns one choice), like some servers."""

    calls: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"auth": self.headers.get("Authorization"), "body": body})
        messages = body["messages"]
        if messages[0]["content"] == PARAPHRASE_SYSTEM:
            text = messages[-1]["content"].split("\n\n", 1)[1]
            words = text.rstrip(".").split()
            if "twice" in text:
                reply = text  # an echo: must be dropped as identical_to_source
            elif "courier" in text:
                reply = "Quarterly tax filing deadlines for small bakeries in coastal towns vary by region."
            else:  # a genuine rewording: every third word dropped, framed differently on each call
                prefix = ("To sum up:", "In short:")[len(type(self).calls) % 2]
                reply = prefix + " " + " ".join(w for i, w in enumerate(words) if i % 3 != 2) + "."
        else:
            examples = messages[-1]["content"].split("\n\n")[1:-1]
            number = len(type(self).calls)
            reply = examples[0][3:] if number % 4 == 0 else \
                f"Hello, package number {number} was marked delivered yesterday but the box is not at my door."
        payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def llm_server():
    _FakeLLM.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_openai_compatible_paraphrases_are_filtered_with_reasons(llm_server, monkeypatch):
    monkeypatch.setenv("LLM_KEY", "sk-test-123")
    settings = _settings(paraphrase=True, paraphrases_per_record=2, oversample=False,
                         generator={"backend": "openai", "base_url": llm_server, "model": "tiny",
                                    "api_key_env": "LLM_KEY"})
    result = augment_corpus(_corpus(n_billing=30, n_shipping=20), settings)
    assert _FakeLLM.calls and all(c["auth"] == "Bearer sk-test-123" for c in _FakeLLM.calls)
    assert {c["body"]["model"] for c in _FakeLLM.calls} == {"tiny"}
    dropped = result.stats.generated_dropped
    assert dropped["too_far"] > 0  # the off-topic reply for courier texts
    generated = _check_train_only(result.kept, settings)
    assert set(generated["augmentation"]) == {"paraphrase"}
    assert generated["text"].str.contains("^(To sum up|In short):").all()
    assert set(generated["augmentation_model"]) == {"openai:tiny"}
    # two candidates per source even though the server returns one choice per request
    assert generated.group_by("augmented_from").len()["len"].max() == 2


def test_synthetic_examples_are_capped_deduplicated_and_marked(llm_server):
    settings = _settings(synthetic=True, synthetic_max_share=0.25, oversample=True,
                         generator={"backend": "openai", "base_url": llm_server, "model": "tiny"})
    result = augment_corpus(_corpus(n_billing=40, n_shipping=8), settings)
    generated = _check_train_only(result.kept, settings)
    synthetic = generated.filter(pl.col("augmentation") == "synthetic")
    assert synthetic.height > 0 and set(synthetic["label_source"]) == {"synthetic"}
    assert set(synthetic["label"]) == {"shipping"}
    target = 32  # billing records in train (80 % of 40)
    assert synthetic.height <= int(0.25 * target)
    assert result.stats.generated_dropped.get("identical_to_source", 0) > 0  # the echoed example
    assert not set(synthetic["text"]) & set(_corpus()["text"])
    # the rest of the gap is filled by copies
    assert "oversample" in result.stats.by_technique


def test_unreachable_generator_falls_back_to_copies(monkeypatch):
    settings = _settings(paraphrase=True, generator={"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                     "model": "x", "retries": 0, "timeout_s": 2})
    result = augment_corpus(_corpus(), settings)
    assert "cannot reach" in result.stats.generator_error
    assert set(result.stats.by_technique) == {"oversample"}
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(GenerationError, match="NO_SUCH_KEY"):
        OpenAICompatibleGenerator(GeneratorSettings(backend="openai", base_url="http://x", model="m",
                                                    api_key_env="NO_SUCH_KEY"))


def _tiny_causal_lm(folder):
    """A random-weight GPT-2 with a word-level tokenizer trained on the fly: no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    corpus = [t.format(n=i) for t in BILLING + SHIPPING for i in range(5)] + [PARAPHRASE_SYSTEM]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=256, n_embd=32, n_layer=2,
                                       n_head=2, eos_token_id=1, bos_token_id=1))
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)  # safetensors
    return folder


def test_local_hugging_face_model_generates_and_random_text_is_filtered(tmp_path):
    folder = _tiny_causal_lm(tmp_path / "tiny-gpt2")
    assert (folder / "model.safetensors").exists()
    generator = HuggingFaceGenerator(GeneratorSettings(backend="hf_local", model_path=str(folder),
                                                       max_new_tokens=12))
    replies = generator.paraphrase(["The parcel has not arrived after ten days."], 3)
    assert len(replies) == 1 and len(replies[0]) == 3 and all(isinstance(r, str) for r in replies[0])
    assert generator.name == "hf:tiny-gpt2"
    settings = _settings(paraphrase=True, oversample=False,
                         generator={"backend": "hf_local", "model_path": str(folder), "max_new_tokens": 12})
    result = augment_corpus(_corpus(n_billing=20, n_shipping=10), settings, generator=generator)
    # random weights write word salad: it must not reach the data
    dropped = result.stats.generated_dropped
    assert sum(dropped.values()) > 0
    assert result.stats.by_technique.get("paraphrase", 0) <= sum(dropped.values())
    with pytest.raises(GenerationError, match="model_path"):
        HuggingFaceGenerator(GeneratorSettings(backend="hf_local", model_path=str(tmp_path / "missing")))


def test_target_count_overrides_the_ratio():
    settings = _settings(target_count=20)
    result = augment_corpus(_corpus(n_billing=20, n_shipping=10), settings)
    train = _placed(result.kept, settings).filter(pl.col("split") == "train")
    assert dict(train.group_by("label").len().iter_rows()) == {"billing": 20, "shipping": 20}


def test_a_kind_that_makes_nothing_gets_no_augmented_rows(monkeypatch):
    """The stage asks the kind what to make (`Task.augment`): one that keeps the base contract's default
    (preference pairs: a copied pair teaches nothing) gets its originals back, whatever the settings switch on."""
    from finetune_pipeline.augment import stage
    from finetune_pipeline.tasks import Task, task_named

    class MakesNothing(type(task_named("classification"))):
        augment = Task.augment
        augmented_counts = Task.augmented_counts

    settings = _settings(oversample=True)
    assert augment_corpus(_corpus(), settings).stats.augmented_rows > 0  # classification tops labels up
    monkeypatch.setattr(stage, "task_for", lambda settings: MakesNothing())
    result = augment_corpus(_corpus(), settings)
    assert result.kept.height == _corpus().height and result.kept["augmented_from"].null_count() == result.kept.height
    assert result.stats.augmented_rows == 0 and result.stats.by_label == {} and result.stats.by_technique == {}
