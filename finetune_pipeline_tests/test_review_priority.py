"""The review queue asks the right questions of the right people: items ordered by the expected value of a
label, more annotators for doubtful items, annotator reliability from Dawid-Skene used to route, the scores
in the Label Studio tasks, and the sample data root's review loop."""

import json

import numpy as np
import polars as pl
import pytest

from finetune_pipeline.labeling import apply_labels
from finetune_pipeline.labeling import priority as pr
from finetune_pipeline.labeling.annotations import load_annotations
from finetune_pipeline.labeling.review import write_review_export
from finetune_pipeline.labeling.routing import annotator_reliability
from finetune_pipeline.labeling.zero_shot import Predictions
from finetune_pipeline.records import corpus_frame
from finetune_pipeline.settings import Settings, load_settings
from finetune_pipeline_tests.conftest import SAMPLE_DATA

LABELS = ["billing", "technical_issue", "account_access", "shipping"]


def _corpus(rows: list[tuple]) -> pl.DataFrame:
    """rows: (record_id, text, label)"""
    return corpus_frame([{"record_id": r, "text": t, "label": lab, "label_source": "column" if lab else None,
                          "source_uri": f"raw/{r}.txt", "locator": "element 0", "content_sha256": "0" * 64}
                         for r, t, lab in rows])


def _vector_labeler(texts, labels, cfg, train_texts, train_labels):
    """A stand-in model: the text holds the label probabilities ("probs 0.5 0.45 0.05 0")."""
    probs = [[float(x) for x in t.split("probs ", 1)[1].split()] for t in texts]
    best = [int(np.argmax(p)) for p in probs]
    return Predictions(labels=[labels[i] for i in best], confidences=[p[i] for p, i in zip(probs, best)],
                       model="vector", probabilities=probs)


def _given(n_billing: int, n_shipping: int, n_other: int = 0) -> list[tuple]:
    return ([(f"b{i}", "a billing ticket", "billing") for i in range(n_billing)]
            + [(f"s{i}", "a shipping ticket", "shipping") for i in range(n_shipping)]
            + [(f"t{i}", "a technical ticket", "technical_issue") for i in range(n_other)]
            + [(f"a{i}", "an account ticket", "account_access") for i in range(n_other)])


def test_an_uncertain_item_of_a_needed_class_goes_before_a_confident_one_and_margin_counts():
    # billing is full (20 records), shipping short (4 of 20): class need 0 and 0.8.
    corpus = _corpus(_given(20, 4, 20) + [
        ("ship_unsure", "probs 0.3 0.0 0.05 0.65", None),    # uncertain, needed class
        ("bill_unsure", "probs 0.65 0.0 0.05 0.3", None),    # as uncertain, full class
        ("bill_sure", "probs 0.69 0.1 0.1 0.11", None),      # top score as high as it gets under 0.7 ...
        ("ship_tossup", "probs 0.0 0.0 0.34 0.66", None),    # ... this one has a wider margin than ship_unsure
    ])
    result = apply_labels(corpus, Settings(labels=LABELS, labeling={"audit_share": 0.0}), labeler=_vector_labeler)
    queue = result.review_queue
    order = queue["record_id"].to_list()
    assert set(order) == {"ship_unsure", "bill_unsure", "bill_sure", "ship_tossup"}
    rows = {r["record_id"]: r for r in queue.iter_rows(named=True)}
    assert order.index("ship_unsure") < order.index("bill_unsure")  # same doubt, needed class first
    assert rows["ship_unsure"]["class_need"] == pytest.approx(0.8) and rows["bill_unsure"]["class_need"] == 0.0
    assert rows["ship_unsure"]["uncertainty"] == pytest.approx(rows["bill_unsure"]["uncertainty"])
    # bill_sure: a top score near the others, but the rest spread evenly: high entropy, wide margin
    assert rows["bill_sure"]["margin"] > rows["bill_unsure"]["margin"]
    assert rows["bill_sure"]["entropy"] > rows["bill_unsure"]["entropy"]
    assert queue["priority"].is_sorted(descending=True)
    # a model that is sure (0.95) on an item of the needed class: it is accepted, and audited last if sampled
    sure = pr.priority(pr.doubt(pr.uncertainty(np.array([0.02, 0.01, 0.02, 0.95])), 0.0), 0.8, 1.0)
    assert sure < rows["bill_unsure"]["priority"] < rows["ship_unsure"]["priority"]


def test_margin_and_entropy_each_change_uncertainty():
    two_way = np.array([0.5, 0.45, 0.05, 0.0])  # a coin toss between two labels: small margin, low entropy
    spread = np.array([0.5, 0.1666, 0.1667, 0.1667])  # same top score, the rest spread: larger margin, more entropy
    assert pr.margin_and_entropy(two_way)[0] < pr.margin_and_entropy(spread)[0]
    assert pr.margin_and_entropy(two_way)[1] < pr.margin_and_entropy(spread)[1]
    assert pr.uncertainty(np.array([1.0, 0, 0, 0])) == pytest.approx(0.0)
    assert pr.uncertainty(np.full(4, 0.25)) == pytest.approx(1.0)
    assert pr.disagreement(["a", "b"], 4) == pytest.approx(2 / 3) and pr.disagreement(["a"], 4) == 0.0


def test_more_annotators_for_more_uncertain_items():
    corpus = _corpus(_given(10, 10, 10) + [
        ("sure", "probs 0.68 0.3 0.01 0.01", None), ("unsure", "probs 0.4 0.35 0.25 0.0", None),
        ("lost", "probs 0.26 0.25 0.25 0.24", None)])
    result = apply_labels(corpus, Settings(labels=LABELS, labeling={"audit_share": 0.0}), labeler=_vector_labeler)
    needed = dict(result.review_queue.select("record_id", "annotators_needed").iter_rows())
    assert needed["sure"] < needed["unsure"] <= needed["lost"] == 3
    assert [pr.annotators_needed(d, 1, 3) for d in (0.0, 0.32, 0.34, 0.65, 0.67, 1.0)] == [1, 1, 2, 2, 3, 3]
    assert pr.annotators_needed(0.99, 2, 5) == 5 and pr.annotators_needed(0.0, 2, 5) == 2


def _crowd_with_a_confused_annotator(seed: int = 0, n: int = 160):
    """Three good annotators (accuracy 0.9, errors uniform) and `confused`, who is right on everything but
    shipping, which they always call billing. Every annotator labels every record."""
    rng = np.random.default_rng(seed)
    truth = {f"r{i}": LABELS[i % 4] for i in range(n)}
    rows = []
    for record, true in truth.items():
        for worker in ("good1", "good2", "good3"):
            label = true if rng.random() < 0.9 else rng.choice([x for x in LABELS if x != true])
            rows.append((record, worker, label))
        rows.append((record, "confused", "billing" if true == "shipping" else true))
    return pl.DataFrame(rows, schema=["record_id", "annotator", "label"], orient="row"), truth


def test_dawid_skene_finds_the_confused_annotator_and_their_items_go_to_others():
    crowd, truth = _crowd_with_a_confused_annotator()
    reliability = annotator_reliability(crowd, LABELS)
    confused = reliability.per_label["confused"]
    assert confused["shipping"] < 0.2 and confused["billing"] > 0.8 and confused["account_access"] > 0.9
    for good in ("good1", "good2", "good3"):
        assert min(reliability.per_label[good].values()) > 0.75
    assert reliability.accuracy["confused"] < min(reliability.accuracy[g] for g in ("good1", "good2", "good3"))

    # Through the stage: the annotated records are labeled by the crowd; new items wait for review.
    corpus = _corpus([(r, "an annotated ticket", None) for r in truth] + [
        ("new_ship", "probs 0.05 0.0 0.0 0.95", None), ("new_ship2", "probs 0.1 0.0 0.0 0.9", None),
        ("new_bill", "probs 0.95 0.0 0.05 0.0", None), ("new_acct", "probs 0.0 0.05 0.9 0.05", None)])
    settings = Settings(labels=LABELS, labeling={"audit_share": 1.0, "review": {"annotators": ["newcomer"]}})
    result = apply_labels(corpus, settings, crowd.with_columns(pl.lit("crowd.csv").alias("source_file")),
                          labeler=_vector_labeler)
    report = {r["annotator"]: r for r in result.stats.agreement["reliability"]}
    assert report["confused"]["per_label"]["shipping"] < 0.2
    queue = {r["record_id"]: r for r in result.review_queue.iter_rows(named=True)}
    for item in ("new_ship", "new_ship2"):  # shipping items: never the confused annotator
        assert "confused" in json.loads(queue[item]["not_routed_to"])
        asked = json.loads(queue[item]["suggested_annotators"])
        assert asked and "confused" not in asked
    # billing and account items: the confused annotator is reliable there and takes a share of the work
    others = [json.loads(queue[r]["suggested_annotators"]) for r in ("new_bill", "new_acct")]
    assert any("confused" in asked for asked in others)
    assert all(json.loads(queue[r]["not_routed_to"]) == [] for r in ("new_bill", "new_acct"))


def test_label_studio_tasks_carry_the_scores_and_the_annotators(tmp_path):
    crowd, truth = _crowd_with_a_confused_annotator(n=40)
    corpus = _corpus([(r, "an annotated ticket", None) for r in truth] + [
        ("new_ship", "probs 0.3 0.0 0.0 0.7", None), ("unsure", "probs 0.4 0.35 0.25 0.0", None)])
    result = apply_labels(corpus, Settings(labels=LABELS, labeling={"audit_share": 0.0, "review_threshold": 0.8}),
                          crowd.with_columns(pl.lit("crowd.csv").alias("source_file")), labeler=_vector_labeler)
    tasks = json.loads(write_review_export(result.review_queue, LABELS, tmp_path)["tasks"].read_text())
    assert [t["data"]["record_id"] for t in tasks] == result.review_queue["record_id"].to_list()
    priorities = [t["data"]["priority"] for t in tasks]
    assert priorities == sorted(priorities, reverse=True) and priorities[0] > 0
    by_id = {t["data"]["record_id"]: t for t in tasks}
    ship = by_id["new_ship"]
    assert ship["predictions"][0]["score"] == 0.7  # the prediction's confidence, as Label Studio reads it
    for key in ("priority", "uncertainty", "margin", "entropy", "disagreement", "class_need", "annotators_needed"):
        assert key in ship["data"] and ship["meta"]["scores"].get(key, ship["meta"].get(key)) is not None
    assert ship["data"]["margin"] == pytest.approx(0.4) and ship["meta"]["scores"] == {
        k: ship["data"][k] for k in ("priority", "uncertainty", "margin", "entropy", "disagreement", "class_need")}
    assert ship["meta"]["suggested_annotators"] and "confused" not in ship["meta"]["suggested_annotators"]
    assert "confused" in ship["meta"]["not_routed_to"]
    assert ship["data"]["suggested_annotators"] == ", ".join(ship["meta"]["suggested_annotators"])
    assert len(by_id["unsure"]["meta"]["suggested_annotators"]) == by_id["unsure"]["meta"]["annotators_needed"] == 3


def test_the_sample_roots_inbox_lands_in_the_queue_and_the_shipped_annotations_settle_some():
    """The sample's ambiguous inbox tickets (read as the pipeline reads a one-paragraph text file: one record,
    `element 0`) and its reviewers' export, labeled by the real zero-shot model. The end-to-end run
    (test_pipeline.py) checks the same on the whole root."""
    from finetune_pipeline.records import make_record_id

    inbox = sorted((SAMPLE_DATA / "raw" / "inbox").glob("*.txt"))
    corpus = corpus_frame([{"record_id": make_record_id(f"raw/inbox/{p.name}", "element 0"),
                            "text": p.read_text(encoding="utf-8").strip(), "source_uri": f"raw/inbox/{p.name}",
                            "locator": "element 0", "content_sha256": "0" * 64} for p in inbox])
    settings = load_settings(SAMPLE_DATA)
    annotations, problems = load_annotations(SAMPLE_DATA / "annotations")
    assert len(inbox) == 6 and problems == [] and set(annotations["record_id"]) <= set(corpus["record_id"])

    before = apply_labels(corpus, settings)  # no annotations yet: every inbox ticket waits for a person
    assert before.review_queue.filter(pl.col("reason") == "low_confidence").height == 6
    after = apply_labels(corpus, settings, annotations, problems)
    settled = after.kept.filter(pl.col("label_source") == "crowd")
    assert sorted(settled["source_uri"].str.split("/").list.last().to_list()) == [
        "app_crash_verification_code.txt", "checkout_error_charged.txt", "confirmation_blank_screen.txt"]
    assert settled.filter(pl.col("source_uri").str.ends_with("checkout_error_charged.txt"))["label"][0] == "billing"
    queue = after.review_queue.join(corpus.select("record_id", "source_uri"), on="record_id")
    reasons = dict(zip(queue["source_uri"].str.split("/").list.last(), queue["reason"]))
    assert reasons == {"invoice_behind_login.txt": "disagreement", "account_used_saved_card.txt": "low_confidence",
                       "express_delivery_late.txt": "low_confidence"}
    split = queue.filter(pl.col("reason") == "disagreement").row(0, named=True)
    assert json.loads(split["suggested_annotators"]) == ["reviewer_3"]  # the one reviewer who has not seen it
    assert {r["annotator"] for r in after.stats.agreement["reliability"]} == {"reviewer_1", "reviewer_2", "reviewer_3"}


def test_the_cards_show_reliability_per_label_without_naming_annotators():
    from finetune_pipeline import reporting
    from finetune_pipeline.records import empty_rejects

    crowd, _ = _crowd_with_a_confused_annotator(n=40)
    crowd = crowd.with_columns(pl.col("annotator").replace({"confused": "pat@example.com"}))
    agreement = {"reliability": annotator_reliability(crowd, LABELS).report(), "confusion": {"labels": LABELS}}
    card = reporting.data_card([], empty_rejects(), None, {}, None, agreement=agreement)
    section = card.split("## Annotator reliability (Dawid-Skene, per label)")[1]
    assert "| annotator | annotations | expected accuracy | billing | technical_issue | account_access | shipping |" in section
    assert "| A4 | 40 |" in section and "pat@" not in card and "good1" not in card  # pseudonyms in name order
