"""The batched language identifier against langid.py itself: the same language and probability per text."""

import random

from faker import Faker
from langid.langid import LanguageIdentifier, model

from finetune_pipeline.cleaning.language_id import BatchLanguageIdentifier
from finetune_pipeline.cleaning.quality_filters import identify_language, identify_languages


def _texts() -> list[str]:
    rng = random.Random(3)
    texts = ["", " ", "a", "Hello", "Où est mon colis ? Il devait arriver lundi.", "Привет, как дела?",
             "東京都に住んでいます",
             "x" * 3000, "Order #50307 cost $53.99 on 2024-05-03.", "\u00e9\u0301 \U0001f600 emoji \u2022 bullets"]
    for locale in ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR", "ru_RU", "ja_JP"):
        fake = Faker(locale)
        fake.seed_instance(7)
        texts += [fake.paragraph(nb_sentences=rng.randint(1, 6)) for _ in range(25)]
        texts += [fake.sentence(nb_words=rng.randint(2, 8)) for _ in range(10)]
    return texts


def test_batched_identifier_equals_langid_on_many_languages():
    reference = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    texts = _texts()
    ours = BatchLanguageIdentifier().classify_batch(texts)
    for text, (lang, prob) in zip(texts, ours):
        expected_lang, expected_prob = reference.classify(text)
        assert lang == expected_lang, text
        assert abs(prob - expected_prob) <= 1e-9, text
    assert len({lang for lang, _ in ours}) >= 8  # the set really spans languages


def test_one_text_and_a_batch_agree_and_placeholders_are_ignored():
    texts = ["Das Paket ist nicht angekommen, bitte helfen Sie mir.", "Please refund <EMAIL> my order, thanks."]
    assert identify_languages(texts) == [identify_language(t) for t in texts]
    assert identify_languages([]) == []
    assert identify_language("Please refund <EMAIL> my order") == identify_language("Please refund   my order")
