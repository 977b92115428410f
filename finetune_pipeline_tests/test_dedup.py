"""Deduplication on small constructed cases: exact, near, not near, transitive clusters."""

import polars as pl

from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text
from finetune_pipeline.settings import Settings

BASE = ("the replacement charger I ordered last week arrived today but it does not fit the laptop model "
        "listed on the product page and I would like to return it for a full refund as soon as possible")


def _corpus(texts):
    return corpus_frame([{"record_id": make_record_id(f"raw/{i:02d}.txt", "elements 0-0"), "text": t,
                          "source_uri": f"raw/{i:02d}.txt", "source_type": "txt", "locator": "elements 0-0",
                          "content_sha256": sha256_text(t)} for i, t in enumerate(texts)])


def test_exact_duplicates_ignore_case_and_whitespace_and_keep_the_first_source():
    corpus = _corpus([BASE, BASE.upper().replace(" ", "   "), "a different ticket about a missing parcel entirely"])
    result = deduplicate(corpus, Settings())
    assert result.kept["source_uri"].to_list() == ["raw/00.txt", "raw/02.txt"]
    reject = result.rejected.row(0, named=True)
    assert reject["reason"] == "exact_duplicate" and reject["duplicate_of"] == corpus["record_id"][0]


def test_near_duplicates_are_clustered_and_unrelated_text_kept():
    near = BASE.replace("last week", "two weeks ago")
    nearer = near.replace("full refund", "complete refund")  # near `near`, a bit further from BASE
    other = ("my account is locked after three failed password attempts and the reset email never arrives "
             "even though I checked the spam folder twice today and yesterday")
    corpus = _corpus([BASE, near, nearer, other])
    result = deduplicate(corpus, Settings())
    ids = corpus["record_id"].to_list()
    assert sorted(result.kept["record_id"]) == sorted([ids[0], ids[3]])
    near_rejects = result.rejected.filter(pl.col("reason") == "near_duplicate")
    assert sorted(near_rejects["record_id"]) == sorted(ids[1:3])
    assert set(near_rejects["duplicate_of"]) == {ids[0]}  # transitive: one cluster, one kept record
    assert result.kept.height + result.rejected.height == corpus.height
    assert result.kept["group_id"].to_list() == result.kept["record_id"].to_list()


def test_near_duplicates_can_be_switched_off():
    corpus = _corpus([BASE, BASE.replace("last week", "two weeks ago")])
    assert deduplicate(corpus, Settings.model_validate({"dedup": {"near_duplicates": False}})).kept.height == 2
