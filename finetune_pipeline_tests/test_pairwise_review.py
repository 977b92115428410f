"""Pairwise review ("which answer is better?"): pending pairs out as Label Studio tasks, the choices of several
annotators back through annotations/, combined by Dawid-Skene into preference pairs (labeling/pairwise.py)."""

import json
from pathlib import Path
import xml.etree.ElementTree as ET

import polars as pl
import pytest

from finetune_pipeline.labeling.annotations import load_annotations
from finetune_pipeline.labeling.pairwise import (PENDING, conflict_records, label_with_pairwise_review,
                                                 tie_records)
from finetune_pipeline.labeling.review import PAIRWISE_CONFIG, PAIRWISE_TASKS, write_review_export
from finetune_pipeline.settings import Settings
from finetune_pipeline.tasks.preference import PreferencePair, RatedAnswer, pair_records

PROMPT = [{"role": "user", "content": "How do I list the files in a folder?"}]


def conversation(record_id: str, answer: str, conflict: str = "c1") -> dict:
    return {"record_id": record_id, "conflict_id": conflict, "source_uri": "raw/chat.jsonl",
            "locator": f"line {record_id}",
            "messages": json.dumps([*PROMPT, {"role": "assistant", "content": answer}])}


def conflicts(*rows: dict) -> pl.DataFrame:
    return conflict_records(pl.DataFrame(list(rows)))


def settings(**labeling) -> Settings:
    return Settings(task="instruction", training={"instruction": {"base_model": "unused"}}, labeling=labeling)


def export(folder, name: str, votes: dict[str, list[tuple[str, str]]]) -> None:
    """A Label Studio JSON export: per task record id, (annotator e-mail, exported choice) annotations."""
    tasks = [{"id": n, "data": {"record_id": rid},
              "annotations": [{"completed_by": {"email": who}, "was_cancelled": False,
                               "result": [{"from_name": "preference", "to_name": "prompt", "type": "choices",
                                           "value": {"choices": [choice]}}]} for who, choice in annotations]}
             for n, (rid, annotations) in enumerate(votes.items(), start=1)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(tasks), encoding="utf-8")


def run(corpus: pl.DataFrame, tmp_path, votes=None, **labeling):
    folder = tmp_path / "annotations"
    if votes:
        export(folder, "project-1.json", votes)
    annotations, problems = load_annotations(folder)
    return label_with_pairwise_review(corpus, settings(**labeling), annotations, problems)


def answers(frame: pl.DataFrame, record_id: str) -> tuple[str, str]:
    pair = PreferencePair.from_record(frame.filter(pl.col("record_id") == record_id).row(0, named=True))
    return pair.chosen_text, pair.rejected_text


def test_tasks_have_label_studio_shape_in_a_stable_order(tmp_path):
    two = [conversation("r2", "Use ls."), conversation("r1", "Run ls -la in the folder.")]
    three = [conversation("r5", "ls", "c2"), conversation("r3", "dir", "c2"), conversation("r4", "find .", "c2")]
    written = []
    for n, rows in enumerate([two + three, list(reversed(three + two))]):
        result = run(conflicts(*rows), tmp_path / f"run{n}")
        paths = write_review_export(result.review_queue, [], tmp_path / f"review{n}")
        written.append(paths["pairwise_tasks"].read_bytes())
        assert json.loads(paths["tasks"].read_text()) == []  # pending pairs go to their own file only
    assert written[0] == written[1]  # the same pairs in another order give the same file
    tasks = json.loads(written[0])
    assert len(tasks) == 1 + 3  # c1: one pair; c2: three answers, every two of them
    assert [t["data"]["record_id"] for t in tasks] == sorted(t["data"]["record_id"] for t in tasks)
    first = next(t for t in tasks if {t["data"]["answer_a_id"], t["data"]["answer_b_id"]} == {"r1", "r2"})
    assert set(first) == {"data", "meta"}
    assert first["data"]["answer_a_id"] == "r1" and first["data"]["answer_a"] == "Run ls -la in the folder."
    assert first["data"]["answer_b_id"] == "r2" and first["data"]["answer_b"] == "Use ls."
    assert first["data"]["prompt"] == PROMPT[0]["content"] and first["data"]["origin"] == "conflict"
    assert all(t["data"]["answer_a_id"] < t["data"]["answer_b_id"] for t in tasks)
    assert result.rejected["reason"].to_list() == ["in_review"] * 4 and result.kept.is_empty()


def test_label_config_parses_and_names_the_task_fields(tmp_path):
    result = run(conflicts(conversation("r1", "a"), conversation("r2", "b")), tmp_path)
    paths = write_review_export(result.review_queue, [], tmp_path / "review")
    root = ET.fromstring(paths["pairwise_label_config"].read_text())
    assert paths["pairwise_label_config"].name == PAIRWISE_CONFIG
    texts = {t.get("name"): t.get("value") for t in root.iter("Text")}
    data = json.loads((tmp_path / "review" / PAIRWISE_TASKS).read_text())[0]["data"]
    assert all(value.startswith("$") and value[1:] in data for value in texts.values())
    (choices,) = list(root.iter("Choices"))
    assert choices.get("toName") in texts and choices.get("choice") == "single"
    assert sorted(c.get("alias") for c in choices.iter("Choice")) == ["A", "B", "tie"]


def test_label_review_exports_write_no_pairwise_files(tmp_path):
    pair = PreferencePair(PROMPT, [{"role": "assistant", "content": "ls"}], [{"role": "assistant", "content": "no"}])
    corpus = pair_records([{**pair.fields(), "locator": "line 1"}], "raw/pairs.jsonl", "jsonl")
    result = run(corpus, tmp_path)
    assert result.kept.select(corpus.columns).equals(corpus) and result.review_queue.is_empty()
    paths = write_review_export(result.review_queue, ["x"], tmp_path / "review")
    assert set(paths) == {"tasks", "label_config"} and not (tmp_path / "review" / PAIRWISE_TASKS).exists()


def test_three_annotators_one_dissent_give_the_majority(tmp_path):
    corpus = conflicts(conversation("r1", "Run ls -la."), conversation("r2", "Use ls."))
    rid = corpus["record_id"][0]
    votes = {rid: [("ann1@x.org", "B"), ("ann2@x.org", "B"), ("ann3@x.org", "A")]}
    result = run(corpus, tmp_path, votes, agreement_threshold=0.6)
    assert answers(result.kept, rid) == ("Use ls.", "Run ls -la.")  # B (r2) chosen, A rejected
    row = result.kept.row(0, named=True)
    assert (row["chosen_record_id"], row["rejected_record_id"]) == ("r2", "r1")
    assert row["review_annotators"] == 3 and row["label_agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["label_source"] == "crowd" and PENDING not in result.kept.columns
    assert row["content_sha256"] != corpus["content_sha256"][0]  # text rebuilt for the new order
    assert result.review_queue.is_empty() and result.rejected.is_empty()
    assert result.stats.pairwise.decided == 1 and result.stats.agreement["records"] == 1
    # Under the default threshold (0.7) two of three is a split: the pair stays in review, naming the setting.
    held = run(corpus, tmp_path / "default", votes)
    assert held.kept.is_empty() and held.stats.pairwise.no_consensus == 1
    assert "labeling.agreement_threshold=0.7" in held.rejected["detail"][0]
    assert held.review_queue["reason"].to_list() == ["pairwise"]


def test_dawid_skene_down_weights_a_consistently_wrong_annotator(tmp_path):
    """Three good annotators and two who always pick the worse answer, on twelve pairs the good ones outvote
    them; on the last pair one good annotator is outvoted by the two bad ones. Dawid-Skene has learned that
    their choice means the other answer and follows the good one; majority vote follows the two."""
    rows = [r for k in range(13) for r in (conversation(f"p{k:02d}a", f"good {k}", f"c{k:02d}"),
                                           conversation(f"p{k:02d}b", f"bad {k}", f"c{k:02d}"))]
    corpus = conflicts(*rows)
    ids = {r["answer_a_id"][:3]: r["record_id"] for r in corpus.iter_rows(named=True)}
    votes = {ids[f"p{k:02d}"]: [*((g, "A") for g in ("g1", "g2", "g3")), *((b, "B") for b in ("b1", "b2"))]
             for k in range(12)}
    votes[ids["p12"]] = [("g1", "A"), ("b1", "B"), ("b2", "B")]
    ds = run(corpus, tmp_path / "ds", votes, consensus="dawid_skene", agreement_threshold=0.0)
    mv = run(corpus, tmp_path / "mv", votes, consensus="majority", agreement_threshold=0.0)
    assert answers(ds.kept, ids["p12"]) == ("good 12", "bad 12")
    assert answers(mv.kept, ids["p12"]) == ("bad 12", "good 12")
    assert ds.stats.pairwise.decided == 13 and ds.stats.pairwise.annotators == 5


def test_annotation_for_an_erased_pair_is_ignored_and_counted(tmp_path):
    corpus = conflicts(conversation("r1", "Run ls -la."), conversation("r2", "Use ls."))
    rid = corpus["record_id"][0]
    votes = {rid: [("ann1", "A")], "0123456789abcdef0123": [("ann1", "B"), ("ann2", "B")]}
    result = run(corpus, tmp_path, votes)
    assert answers(result.kept, rid) == ("Run ls -la.", "Use ls.")
    assert result.stats.pairwise.ignored_gone == 2 and result.stats.pairwise.annotations == 1
    problems = result.stats.annotations.problems
    assert [p["reason"].split(";")[0] for p in problems] == [
        "pairwise choice for a pair no longer in the corpus (its source erased or changed)"]
    assert problems[0]["where"] == "2 row(s)"


def test_ties_are_kept_out_with_a_reason(tmp_path):
    corpus = conflicts(conversation("r1", "Run ls -la."), conversation("r2", "Use ls."))
    rid = corpus["record_id"][0]
    result = run(corpus, tmp_path, {rid: [("ann1", "tie"), ("ann2", "Tie"), ("ann3", "tie")]})
    assert result.kept.is_empty() and result.review_queue.is_empty()
    assert result.rejected["reason"].to_list() == ["pairwise_tie"]
    assert "judged the two answers equal" in result.rejected["detail"][0]
    assert result.stats.pairwise.ties == 1 and result.stats.pairwise.decided == 0


def test_rated_ties_become_pending_pairs_beside_ordinary_pairs(tmp_path):
    rated = [RatedAnswer("Second best.", 4.0, 2), RatedAnswer("Best.", 5.0, 1), RatedAnswer("Also best.", 5.0, 3)]
    pending = tie_records(PROMPT, rated, "line 7")
    assert [(r["answer_a_id"], r["answer_b_id"], r["pairwise_origin"]) for r in pending] == [
        ("answer 01", "answer 03", "rated_tie")]
    assert tie_records(PROMPT, [RatedAnswer("x", 5.0, 1), RatedAnswer("x", 5.0, 2)], "line 8") == []
    ordinary = PreferencePair(PROMPT, [{"role": "assistant", "content": "Best."}],
                              [{"role": "assistant", "content": "Second best."}]).fields()
    corpus = pl.concat([pair_records([{**ordinary, "locator": "line 7; answer 1 over 2"}], "raw/uf.jsonl", "jsonl"),
                        pair_records(pending, "raw/uf.jsonl", "jsonl")], how="diagonal_relaxed")
    rid = corpus.filter(pl.col(PENDING).fill_null(False))["record_id"][0]
    result = run(corpus, tmp_path, {rid: [("ann1", "B")]})
    assert sorted(answers(result.kept, r) for r in result.kept["record_id"]) == [
        ("Also best.", "Best."), ("Best.", "Second best.")]
    assert result.kept.filter(pl.col("record_id") == rid)["label_source"].to_list() == ["human"]
    assert PENDING not in result.kept.columns


def test_a_pending_pair_is_cleaned_redacted_held_then_decided(tmp_path):
    """Through the stages as the preference kind runs them: the pending pair's turns are PII-redacted like any
    pair's, it waits in review (its task names no planted value), and one annotator's choice makes it a pair."""
    from finetune_pipeline.cleaning.stage import clean_corpus
    from finetune_pipeline.dedup.stage import deduplicate
    from finetune_pipeline.labeling.stage import apply_labels

    cfg = Settings(task="preference", training={"preference": {"base_model": "unused"}})
    prompt = [{"role": "user", "content": "How do I give a Debian server a static network address?"}]
    rated = [RatedAnswer("Edit /etc/network/interfaces: set address, netmask and gateway, then restart networking. "
                         "Mail jane.planted@example.com for help.", 5.0, 1),
             RatedAnswer("Use nmcli to set the connection's IPv4 method to manual with the address and gateway, "
                         "then bring the connection up again.", 5.0, 2)]
    corpus = pair_records(tie_records(prompt, rated, "line 1"), "raw/uf.jsonl", "jsonl")
    deduplicated = deduplicate(clean_corpus(corpus, cfg).kept, cfg).kept
    held = apply_labels(deduplicated, cfg)
    assert held.kept.is_empty() and held.rejected["reason"].to_list() == ["in_review"]
    paths = write_review_export(held.review_queue, [], tmp_path / "review")
    written = paths["pairwise_tasks"].read_text()
    assert "jane.planted" not in written and "<EMAIL>" in written
    rid = deduplicated["record_id"][0]
    export(tmp_path / "annotations", "project-1.json", {rid: [("ann1@x.org", "B")]})
    annotations, problems = load_annotations(tmp_path / "annotations")
    decided = apply_labels(deduplicated, cfg, annotations, problems)
    chosen, rejected = answers(decided.kept, rid)
    assert chosen.startswith("Use nmcli") and "<EMAIL>" in rejected and decided.review_queue.is_empty()


def test_reading_with_review_ties_keeps_tied_answers_as_pending_pairs(tmp_path):
    from finetune_pipeline.tasks.preference import read_preference_source

    rows = [{"instruction": "Explain it.", "completions": [
                {"response": "Okay answer.", "overall_score": 3}, {"response": "Best answer.", "overall_score": 5},
                {"response": "Also best.", "overall_score": 5}]},
            {"instruction": "Name it.", "completions": [
                {"response": "Left.", "overall_score": 4}, {"response": "Right.", "overall_score": 4}]}]
    path = tmp_path / "uf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dropped = read_preference_source(path, Settings())
    assert dropped.stats.ties_dropped == 2 and [r["reason"] for r in dropped.rejects] == ["tied_ratings"]
    assert not any(r.get(PENDING) for r in dropped.pairs)

    kept = read_preference_source(path, Settings(preference={"review_ties": True}))
    assert kept.stats.ties_dropped == 0 and kept.rejects == []
    pending = [r for r in kept.pairs if r.get(PENDING)]
    assert [(r["locator"], r["answer_a_id"], r["answer_b_id"]) for r in pending] == [
        ("line 1; answers 2 and 3 tied", "answer 02", "answer 03"), ("line 2; answers 1 and 2 tied", "answer 01",
                                                                      "answer 02")]
    assert len(kept.pairs) == 1 + 2  # the ordinary pair (answer 2 over 1) stays


def test_a_conflict_marked_for_review_by_dedup_gives_one_pending_pair_per_two_answers():
    from finetune_pipeline.dedup.conflicts import prompt_dedup
    from finetune_pipeline.labeling.pairwise import conflict_pending
    from finetune_pipeline.records import corpus_frame, make_record_id
    from finetune_pipeline.settings import DedupSettings

    sky = {"role": "user", "content": "What color is the sky?"}
    answers = ["It is blue.", "It is green.", "Purple, mostly at noon."]
    rows = [{"record_id": make_record_id("raw/chats.jsonl", f"line {n}"), "source_uri": "raw/chats.jsonl",
             "locator": f"line {n}", "messages": json.dumps([sky, {"role": "assistant", "content": a}]),
             "text": a, "prompt": sky["content"], "response": a} for n, a in enumerate(answers, start=1)]
    marked = prompt_dedup(corpus_frame(rows), DedupSettings(conflicts="review", near_duplicates=False)).kept
    pending = conflict_pending(marked)
    assert len(pending) == 3 and all(r["pairwise_origin"] == "conflict" and r[PENDING] for r in pending)
    ids = sorted(r["record_id"] for r in rows)
    assert sorted((r["answer_a_id"], r["answer_b_id"]) for r in pending) == [
        (ids[0], ids[1]), (ids[0], ids[2]), (ids[1], ids[2])]
    assert {r["prompt"] for r in pending} == {sky["content"]}


def test_a_conflict_file_under_review_becomes_pending_pairs_at_reading():
    """dedup.conflicts: review in a preference root: the conflicts of an instruction file wait for people's
    choice as pending pairs (every two differing answers of a conflict), instead of being rejected; every
    conversation still ends in a pair or a reject."""
    from finetune_pipeline.settings import DedupSettings, Settings
    from finetune_pipeline.tasks import preference as P

    example = Path(__file__).resolve().parents[1] / "examples" / "preference" / "raw" / "conflicts.jsonl"
    read = P.read_preference_source(example, Settings())
    records, rejects = P.pairs_from_conversations(read.conversations, DedupSettings(conflicts="review"))
    pending = [r for r in records if r.get(PENDING)]
    assert pending and len(pending) == len(records)  # nothing decided while reading
    by_conflict = {}
    for r in pending:
        by_conflict.setdefault(r["locator"].split(":")[0], []).append(r)
        assert r["answer_a_id"] < r["answer_b_id"] and json.loads(r["chosen"]) != json.loads(r["rejected"])
    answered = {r[side] for r in pending for side in ("answer_a_id", "answer_b_id")}
    every = {c["locator"] for c in read.conversations}
    assert answered | {r["locator"] for r in rejects} == every  # nothing lost
    assert not any(r["reason"] == P.UNRESOLVED_CONFLICT for r in rejects)
    keep_first, _ = P.pairs_from_conversations(read.conversations, DedupSettings(conflicts="keep_first"))
    assert len(keep_first) == len(answered) - len(by_conflict)  # one pair per wrong answer when decided
