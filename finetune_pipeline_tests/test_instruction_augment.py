"""Augmentation of conversations: prompt paraphrases (answer kept) and new instruction/answer pairs for
categories under their target, marked with technique and source, in train only, redacted again, never
copies."""

import json

import polars as pl

from finetune_pipeline.augment import augment_corpus
from finetune_pipeline.augment.generators import RuleVariations, TextGenerator
from finetune_pipeline.settings import GeneratorSettings, Settings
from finetune_pipeline.splits import apply_split_assignment, split_assignment
from finetune_pipeline.tasks import task_named
from finetune_pipeline_tests.test_instruction_data import instruction_corpus

TOPICS = ["delivery to Norway", "a cracked kettle lid", "a refund for a double charge", "changing a password",
          "a missing screw in a desk kit", "a late bike courier", "cancelling a subscription", "a broken zip",
          "an invoice address", "a gift card balance", "a noisy fridge", "a lost parcel"]


def corpus(n: int = 40, categories: list | None = None) -> pl.DataFrame:
    frame = instruction_corpus(n, category=categories)
    prompts = [f"Could you please explain to me how you would handle {TOPICS[i % len(TOPICS)]} for case {i}?"
               for i in range(n)]
    messages = [json.dumps([{"role": "user", "content": p}, {"role": "assistant", "content": f"answer {i}."}])
                for i, p in enumerate(prompts)]
    return frame.with_columns(pl.Series("prompt", prompts), pl.Series("messages", messages),
                              pl.Series("response", [f"answer {i}." for i in range(n)]))


def settings(**augmentation) -> Settings:
    return Settings(task="instruction", training={"instruction": {"base_model": "unused"}},
                    privacy={"detector": "patterns"}, augmentation=augmentation)


class Writer(TextGenerator):
    """Paraphrases by rewording the request; new pairs in the documented form, one with an e-mail address
    (redacted again), one not in the form (dropped as unparsable)."""

    name = "test-writer"

    def __init__(self):
        self.calls = 0

    def paraphrase(self, texts, n):
        return [[t.replace("Could you please explain to me how you would handle", f"Tell me how to deal with")
                 .replace("?", f", variant {k}.") for k in range(n)] for t in texts]

    def complete(self, conversations, n):
        replies = []
        for conversation in conversations:
            self.calls += 1
            if self.calls % 4 == 0:
                replies.append(["Sure! Here is a new example about sewing machines."])
            else:
                replies.append([f"Instruction: What should I do about a wobbling office chair number {self.calls}?\n"
                                f"Answer: Tighten the base screws, then mail support-{self.calls}@example.com."])
        return replies


def test_prompt_paraphrases_keep_the_answer_and_stay_in_train():
    cfg = settings(paraphrase=True, paraphrases_per_record=1)
    frame = corpus()
    result = augment_corpus(frame, cfg, Writer())
    generated = result.kept.filter(pl.col("augmented_from").is_not_null())
    split, _ = split_assignment(frame, cfg.splits, cfg.dedup, task_named("instruction"))  # as the pipeline decides it
    train = set(split.filter(pl.col("split") == "train")["record_id"])
    assert generated.height == len(train)  # one per training conversation: no categories
    assert set(generated["augmented_from"]) == train
    assert set(generated["augmentation"]) == {"prompt_paraphrase"}
    assert set(generated["augmentation_model"]) == {"test-writer"}
    source = frame.select(pl.col("record_id").alias("augmented_from"), pl.col("response").alias("source_response"),
                          pl.col("prompt").alias("source_prompt"))
    joined = generated.join(source, on="augmented_from")
    assert (joined["response"] == joined["source_response"]).all()
    assert (joined["prompt"] != joined["source_prompt"]).all()
    assert all(json.loads(m)[0]["content"] == p for m, p in zip(joined["messages"], joined["prompt"]))
    assert result.stats.by_technique == {"prompt_paraphrase": len(train)}


def test_a_paraphrase_that_is_the_same_words_is_dropped_never_kept_as_a_copy():
    class Echo(TextGenerator):
        name = "echo"

        def complete(self, conversations, n):
            raise AssertionError("not asked for new pairs")

        def paraphrase(self, texts, n):
            return [[t.upper()] * n for t in texts]

    result = augment_corpus(corpus(), settings(paraphrase=True), Echo())
    assert result.kept.filter(pl.col("augmented_from").is_not_null()).is_empty()
    assert result.stats.generated_dropped["identical_to_source"] > 0


def test_categories_under_target_get_new_pairs_redacted_and_marked():
    cats = ["billing"] * 5 + ["returns"]  # returns is under-represented
    cfg = settings(synthetic=True, synthetic_max_share=0.5)
    result = augment_corpus(corpus(60, cats), cfg, Writer())
    generated = result.kept.filter(pl.col("augmented_from").is_not_null())
    assert generated.height > 0 and set(generated["augmentation"]) == {"synthetic_instruction"}
    assert set(generated["category"]) == {"returns"}
    assert not generated["text"].str.contains("@example.com").any()
    assert generated["response"].str.contains("<EMAIL>").all()
    assert result.stats.generated_dropped["unparsable"] > 0
    before, _ = split_assignment(corpus(60, cats), cfg.splits, cfg.dedup, task_named("instruction"))
    placed = apply_split_assignment(result.kept, before)
    assert set(placed.filter(pl.col("augmented_from").is_not_null())["split"]) == {"train"}
    assert set(before.filter(pl.col("record_id").is_in(generated["augmented_from"].implode()))["split"]) == {"train"}


def test_off_by_default_and_rules_paraphrase_without_a_model():
    frame = corpus()
    assert augment_corpus(frame, settings(), Writer()).kept.height == frame.height
    rules = RuleVariations(GeneratorSettings(word_dropout=0.3, swaps=2))
    result = augment_corpus(frame, settings(paraphrase=True), rules)
    assert result.stats.augmented_rows > 0
