"""Duplicate prompts and conflicting instructions: found by deduplication (exact, near and paraphrased
prompts), handled by the `dedup.conflicts` policy, and decided by a person through the review queue."""

import json

import polars as pl
import pytest

from finetune_pipeline.dedup import deduplicate
from finetune_pipeline.labeling import apply_labels
from finetune_pipeline.labeling.annotations import load_annotations
from finetune_pipeline.labeling.review import review_tasks, write_review_export
from finetune_pipeline.records import corpus_frame, sha256_text
from finetune_pipeline.settings import Settings
from finetune_pipeline.sources.conversations import conversation_fields

FILLER = [("How long does delivery to Norway take?", "Parcels to Norway arrive in four to six working days."),
          ("Can I change the colour of my order after paying?", "Yes, write to us within two hours of paying."),
          ("Which payment cards do you accept?", "We take Visa, Mastercard and American Express."),
          ("Is the tent waterproof in heavy rain?", "The flysheet is rated to 3000 mm, enough for a storm.")]


def settings(**dedup) -> Settings:
    return Settings(task="instruction", training={"instruction": {"base_model": "unused"}}, dedup=dedup)


def corpus(pairs: list[tuple[str, str]], system: str | None = None) -> pl.DataFrame:
    """One conversation per (prompt, answer), record ids r000.., first seen first; `system`: a system turn
    opening every conversation."""
    rows, extra = [], []
    opening = [{"role": "system", "content": system}] if system else []
    for i, (prompt, answer) in enumerate(pairs):
        fields = conversation_fields(opening + [{"role": "user", "content": prompt},
                                                {"role": "assistant", "content": answer}])
        rows.append({"record_id": f"r{i:03d}", "text": fields["text"], "source_uri": "raw/chats.jsonl",
                     "source_type": "jsonl", "locator": f"line {i + 1}", "content_sha256": sha256_text(fields["text"]),
                     "ingested_at": f"2026-01-01T00:00:{i:02d}"})
        extra.append(fields)
    return corpus_frame(rows).with_columns(*[pl.Series(c, [f[c] for f in extra]) for c in
                                             ("messages", "prompt", "response")])


def reasons(result) -> dict[str, str]:
    return dict(zip(result.rejected["record_id"], result.rejected["reason"]))


CONFLICT = [("How do I reset my password?", "Click 'Forgot password' on the sign-in page and follow the e-mail."),
            ("How do I reset my password?", "Passwords cannot be reset; open a new account instead."),
            *FILLER]


def test_exact_duplicate_prompts_with_diverging_answers_are_held_for_review():
    dedup = deduplicate(corpus(CONFLICT), settings())
    assert dedup.rejected.is_empty()
    held = dedup.kept.filter(pl.col("conflict_id").is_not_null())
    assert held["record_id"].to_list() == ["r000", "r001"] and held["conflict_id"].n_unique() == 1
    assert held["group_id"].n_unique() == 1  # one prompt cluster: one split
    assert dedup.stats.prompts.conflicts == 1 and dedup.stats.prompts.conflicts_listed[0].record_ids == ["r000", "r001"]

    labeled = apply_labels(dedup.kept, settings())
    assert reasons(labeled) == {"r000": "in_review", "r001": "in_review"}
    assert "conflict_id" not in labeled.kept.columns and labeled.kept.height == len(FILLER)
    [task] = review_tasks(labeled.review_queue)
    assert task["data"]["record_id"] == held["conflict_id"][0]
    assert "Answer 1:\nClick" in task["data"]["text"] and "Answer 2:\nPasswords" in task["data"]["text"]
    assert task["data"]["options"] == [{"value": "Answer 1", "alias": "r000"}, {"value": "Answer 2", "alias": "r001"},
                                       {"value": "Drop all", "alias": "drop_all"}]


def test_review_export_config_takes_the_choices_from_each_task(tmp_path):
    labeled = apply_labels(deduplicate(corpus(CONFLICT), settings()).kept, settings())
    paths = write_review_export(labeled.review_queue, [], tmp_path)
    assert 'value="$options"' in paths["label_config"].read_text()
    assert json.loads(paths["tasks"].read_text())[0]["data"]["options"][2]["alias"] == "drop_all"


def test_near_duplicate_prompts_conflict_and_differing_prompts_do_not():
    pairs = [("Write a haiku about the autumn leaves falling in the park.", "Red leaves drift and turn / ..."),
             ("write a haiku about the autumn leaves faling in the park!", "I cannot write poems about parks."),
             ("My tent arrived with a cracked pole. What should I do before I send it back to you?", "Glue it."),
             ("My road bike arrived with a cracked pole. What should I do before I send it back to you?", "Weld it."),
             ("What is the capital of France?", "Paris."), ("What is the capital of Spain?", "Madrid."), *FILLER]
    dedup = deduplicate(corpus(pairs), settings())
    conflicts = dedup.kept.filter(pl.col("conflict_id").is_not_null())
    assert conflicts["record_id"].to_list() == ["r000", "r001"]


def test_paraphrased_prompts_conflict_when_semantic_dedup_is_on():
    pairs = [("What's the best way to get a refund on an order?", "Use the refund form on your order page."),
             ("How do I get a refund for my order?", "Refunds are never given."),
             ("How do I reset my password?", "Use the link on the sign-in page."),
             ("How do I change my password?", "Open Settings, then Security."),  # another question (0.87)
             ("What is the capital of France?", "Paris."), ("What is the capital of Spain?", "Madrid."), *FILLER]
    off = deduplicate(corpus(pairs), settings()).kept
    assert off["conflict_id"].null_count() == off.height  # lexically too far apart for MinHash
    on = deduplicate(corpus(pairs), settings(semantic=True)).kept
    assert on.filter(pl.col("conflict_id").is_not_null())["record_id"].to_list() == ["r000", "r001"]


def test_same_prompt_with_an_agreeing_answer_is_a_duplicate_prompt():
    pairs = [("Where is my parcel?", "Track it with the link in your confirmation e-mail; it updates every hour "
                                     "and shows the courier."),
             ("where is my parcel", "Track it with the link in your confirmation e-mail; it updates every hour "
                                    "and shows the courier too."),
             *FILLER]
    dedup = deduplicate(corpus(pairs), settings())
    assert reasons(dedup) == {"r001": "duplicate_prompt"}
    assert dedup.rejected["duplicate_of"].to_list() == ["r000"]
    assert dedup.kept["conflict_id"].null_count() == dedup.kept.height


def test_keep_first_and_drop_all_policies():
    first = deduplicate(corpus(CONFLICT), settings(conflicts="keep_first"))
    assert reasons(first) == {"r001": "conflicting_instruction"} and first.rejected["duplicate_of"][0] == "r000"
    assert "r000" in first.kept["record_id"].to_list()
    dropped = deduplicate(corpus(CONFLICT), settings(conflicts="drop_all"))
    assert reasons(dropped) == {"r000": "conflicting_instruction", "r001": "conflicting_instruction"}
    assert dropped.kept.height == len(FILLER)


def _export(tmp_path, conflict: str, choices: list[tuple[str, str]]):
    """A Label Studio JSON export of one conflict task, one annotation per (annotator, chosen alias)."""
    folder = tmp_path / "annotations"
    folder.mkdir(exist_ok=True)
    task = {"data": {"record_id": conflict}, "annotations": [
        {"completed_by": who, "result": [{"type": "choices", "value": {"choices": [choice]}}]} for who, choice in choices]}
    (folder / "export.json").write_text(json.dumps([task]))
    return load_annotations(folder)


@pytest.mark.parametrize("choices, kept, reason", [
    ([("ann", "r001")], "r001", "conflicting_instruction"),
    ([("a", "Answer 2"), ("b", "r001"), ("c", "r000")], "r001", "conflicting_instruction"),
    ([("a", "drop_all")], None, "conflicting_instruction"),
    ([("a", "r000"), ("b", "r001")], None, "in_review"),  # a tie stays open
])
def test_the_reviewers_choice_comes_back(tmp_path, choices, kept, reason):
    dedup = deduplicate(corpus(CONFLICT), settings())
    cid = dedup.kept.filter(pl.col("conflict_id").is_not_null())["conflict_id"][0]
    annotations, problems = _export(tmp_path, cid, choices)
    labeled = apply_labels(dedup.kept, settings(), annotations, problems)
    ids = labeled.kept["record_id"].to_list()
    assert (kept in ids) if kept else not {"r000", "r001"} & set(ids)
    assert set(reasons(labeled).values()) == {reason}
    assert labeled.review_queue.height == (1 if reason == "in_review" else 0)
    assert labeled.stats.annotations.problems_total == 0


def test_a_choice_naming_no_answer_is_a_problem_and_the_conflict_stays_open(tmp_path):
    dedup = deduplicate(corpus(CONFLICT), settings())
    cid = dedup.kept.filter(pl.col("conflict_id").is_not_null())["conflict_id"][0]
    annotations, problems = _export(tmp_path, cid, [("a", "Answer 7")])
    labeled = apply_labels(dedup.kept, settings(), annotations, problems)
    assert labeled.review_queue.height == 1
    assert "names no answer" in labeled.stats.annotations.problems[0]["reason"]


def test_the_data_card_lists_conflicts_by_id_never_text(tmp_path):
    from finetune_pipeline.reporting import data_card

    dedup = deduplicate(corpus(CONFLICT), settings())
    labeled = apply_labels(dedup.kept, settings())
    card = data_card([], pl.concat([dedup.rejected, labeled.rejected]), None, {}, None)
    cid = labeled.review_queue["record_id"][0]
    assert f"| {cid} | waiting for review | r000, r001 |" in card
    assert "password" not in card


def test_a_long_prompt_with_a_short_diverging_answer_is_a_conflict_not_a_duplicate():
    prompt = ("Hi, the pair of noise cancelling headphones I ordered last week arrived with a cracked lid and a "
              "scratched band. Can you help, please?")
    pairs = [(prompt, "Send us a photo and we post a new lid."), (prompt.replace(", please", ""), "Wait a few weeks."),
             *FILLER]
    for semantic in (False, True):
        dedup = deduplicate(corpus(pairs), settings(semantic=semantic))
        assert dedup.rejected.is_empty()  # the whole texts are near duplicates; the answers are not
        assert dedup.kept.filter(pl.col("conflict_id").is_not_null())["record_id"].to_list() == ["r000", "r001"]


SYSTEM = "You are a helpful assistant for Debian system administration. Answer in one sentence, please."


def system_corpus(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    """Conversations with one long shared system turn (what makes templated prompts look alike)."""
    return corpus(pairs, system=SYSTEM)


COMMANDS = [("dpkg", "package manager for Debian"), ("dpkg-name", "rename Debian packages to full package names"),
            ("ucf", "Update Configuration File(s): preserve user changes in configuration files"),
            ("ucfr", "Update Configuration File Registry: associate packages with configuration files"),
            ("git-merge-file", "Run a three-way file merge"),
            ("git-merge-one-file", "The standard helper program to use with git-merge-index"),
            ("less", "opposite of more"), ("make", "GNU make utility to maintain groups of programs")]


def test_prompts_that_name_different_commands_are_different_prompts():
    pairs = [(f"What does the `{name}` command do?", f"{name}: {what}.") for name, what in COMMANDS]
    pairs += [(f"What is {name} used for?", f"{name}: {what}.") for name, what in COMMANDS]
    dedup = deduplicate(system_corpus(pairs), settings())
    assert dedup.rejected.is_empty()
    assert dedup.kept["conflict_id"].null_count() == dedup.kept.height
    assert dedup.kept["group_id"].n_unique() == len(pairs)  # and none shares a split group
    assert dedup.stats.prompts.prompts_kept_apart > 0


def test_answers_that_agree_in_substance_are_duplicates_and_a_different_answer_is_a_conflict():
    prompt = "What does the `dpkg-name` command do?"
    pairs = [(prompt, "dpkg-name: rename Debian packages to full package names."),
             (prompt.lower().rstrip("?"), "The dpkg-name command: rename Debian packages to full package names."),
             (prompt, "`dpkg-name` - Rename Debian packages to full package names"),
             (prompt, "dpkg-name: package manager for Debian."),  # another command's description
             ("What does the `dpkg` command do?", "dpkg: package manager for Debian.")]
    dedup = deduplicate(system_corpus(pairs), settings())
    assert reasons(dedup) == {"r001": "duplicate_prompt", "r002": "duplicate_prompt"}
    held = dedup.kept.filter(pl.col("conflict_id").is_not_null())
    assert held["record_id"].to_list() == ["r000", "r003"] and held["conflict_id"].n_unique() == 1
