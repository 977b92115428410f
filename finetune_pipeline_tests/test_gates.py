"""Gates that hold: exports and models are published only after the blocking checks of the asset that made
them passed; a failed check leaves the published files byte-identical and says where the candidate is; a
later run of a downstream asset refuses to start; each new check fails on real bad data."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from finetune_pipeline.cleaning.privacy import personal_data_left
from finetune_pipeline.definitions import ALL_ASSETS, resources_for
from finetune_pipeline.defs import cli
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import corpus_frame, sha256_text
from finetune_pipeline.settings import DedupSettings, PrivacySettings, Settings, SplitSettings
from finetune_pipeline.splits import assign_splits, cross_split_near_duplicates, join_similar_groups
from finetune_pipeline.stored import store_frame, store_rejects, stored_frame, stored_rejects
from finetune_pipeline.tasks import task_named

CITIES = ["Oslo", "Lisbon", "Kyoto", "Quito", "Perth", "Tallinn", "Accra", "Lima", "Hanoi", "Dakar"]
THINGS = ["a bicycle", "a kettle", "a tent", "a violin", "a laptop", "a sofa"]


def _pairs() -> list[tuple[str, str]]:
    out = []
    for i, city in enumerate(CITIES):
        for j, thing in enumerate(THINGS[:4]):
            out.append((f"How do I ship {thing} to {city} without damage, order {100 + 4 * i + j}?",
                        f"Pack {thing} in a double box and book the {city} courier; it takes {2 + j} days."))
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(root: Path, instance, *assets: str):
    job = dg.define_asset_job("gated", selection=dg.AssetSelection.assets(*assets)) if assets else None
    defs = dg.Definitions(assets=ALL_ASSETS, jobs=[job] if job else [],
                          resources=resources_for(PipelineResource(data_dir=str(root))))
    name = "gated" if assets else "__ASSET_JOB"
    return defs.resolve_job_def(name).execute_in_process(instance=instance, raise_on_error=False)


def _checks(result) -> dict[str, bool]:
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    from finetune_pipeline_tests.test_instruction import tiny_llama_folder

    base = tmp_path_factory.mktemp("gates")
    pairs = _pairs()
    model = tiny_llama_folder(base / "model", [f"{p} {r}" for p, r in pairs])
    root = base / "data"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "pairs.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs))
    settings = {"task": "instruction", "privacy": {"detector": "patterns"}, "checks": {"min_records": 10},
                "training": {"instruction": {"base_model": model, "max_length": 64}, "epochs": 1, "batch_size": 8,
                             "compare": ["instruction"]}}
    (root / "finetune.yaml").write_text(json.dumps(settings))
    instance = dg.DagsterInstance.ephemeral()
    result = _run(root, instance)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    return root, instance, settings


def test_a_failed_adapter_gate_leaves_the_published_adapter_and_registry(good_run):
    root, instance, settings = good_run
    layout = DataRoot(root)
    before = {"adapter": _digests(layout.adapter("lora_adapter")), "registry": layout.registry.read_bytes()}
    (root / "finetune.yaml").write_text(json.dumps({**settings, "checks": {"min_records": 10, "adapter_floor": 1.0}}))
    try:
        result = _run(root, instance, "lora_adapter", "published_adapter")
    finally:
        (root / "finetune.yaml").write_text(json.dumps(settings))
    assert _checks(result) == {"lora_adapter_beats_baseline": False}  # perplexity 1.0 or better: impossible
    [evaluation] = [e.asset_check_evaluation_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluation.metadata["cause"].value.startswith("the trained adapter failed its quality gate: ")
    assert "lower the floor" in evaluation.metadata["remedies"].value
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
                and e.asset_key == dg.AssetKey("published_adapter")]
    assert _digests(layout.adapter("lora_adapter")) == before["adapter"]
    assert layout.registry.read_bytes() == before["registry"]
    assert (layout.staged(layout.adapter("lora_adapter")) / "metrics.json").exists()  # the candidate, for inspection


def test_personal_data_in_the_split_export_fails_the_gate_and_nothing_is_published(good_run, capsys):
    root, instance, _ = good_run
    layout = DataRoot(root)
    published = _digests(layout.splits_export)
    # An upstream stage that let an e-mail address through: the stored augmented corpus, tampered with.
    corpus = stored_frame(layout, "augmented_corpus")
    leak = corpus["response"][0] + " Write to lena.berg@example.org."
    messages = json.loads(corpus["messages"][0])
    messages[-1]["content"] = leak
    corpus = corpus.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(leak)).otherwise(pl.col("response")).alias("response"),
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(json.dumps(messages))).otherwise(pl.col("messages"))
        .alias("messages"))
    store_frame(layout, "augmented_corpus", corpus)

    result = _run(root, instance, "dataset_splits", "published_splits")
    checks = _checks(result)
    assert checks["dataset_splits_no_personal_data"] is False and checks["dataset_splits_no_leakage"] is True
    evaluation = next(e.asset_check_evaluation_data for e in result.all_events
                      if e.event_type_value == "ASSET_CHECK_EVALUATION"
                      and e.asset_check_evaluation_data.check_name == "dataset_splits_no_personal_data")
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["found_by_kind"] == "email: 3"  # the answer, as `response`, a turn of `messages`, and `completion`
    assert meta["records_with_personal_data"] == corpus["record_id"][0]
    assert "example.org" not in json.dumps(meta, default=str)
    # why and what to do, with the record's source and locator (never the address)
    assert meta["cause"].startswith("the detector (privacy.detector: patterns) found email in the exported text of "
                                    "1 record(s)")
    assert "add the phrase to privacy.allow" in meta["remedies"] and "finetune-pipeline explain" in meta["remedies"]
    assert meta["records"].splitlines()[2] == f"| {corpus['record_id'][0]} | {corpus['source_uri'][0]} | " \
                                              f"{corpus['locator'][0]} |"
    assert "lena.berg@example.org" in "".join(p.read_text() for p in Path(meta["candidate"]).glob("*.jsonl"))
    assert _digests(layout.splits_export) == published

    # The CLI refuses a later run of the downstream asset before it starts: no run, so no step.
    runs = {r.run_id for r in instance.get_runs()}
    assert cli.run(str(root), select="published_splits", instance=instance) == 1
    assert (f"run refused before it started: blocked: check 'dataset_splits_no_personal_data' on dataset_splits "
            f"failed in run {result.run_id}") in capsys.readouterr().err
    assert {r.run_id for r in instance.get_runs()} == runs
    # A run that bypasses the gate (execute_in_process) stops at the step's first line.
    later = _run(root, instance, "published_splits")
    [failure] = [e.step_failure_data.user_failure_data.description for e in later.all_events if e.is_step_failure]
    assert "blocked: check 'dataset_splits_no_personal_data' on dataset_splits failed in run" in failure
    assert _digests(layout.splits_export) == published


def test_the_pii_detector_over_exported_text_finds_what_the_policy_removes():
    policy = PrivacySettings(detector="patterns", ip_address="keep")
    found = personal_data_left(["Card 4111 1111 1111 1111, host 10.0.0.1", "no personal data here <EMAIL>"], policy)
    assert found[0] == {"credit_card": 1} and not found[1]  # an address the policy keeps is no leak


def _quotes() -> pl.DataFrame:
    """30 texts of 24 distinct words each, plus copies of three of them with two words changed (word 3-gram
    Jaccard about 0.57: under dedup's 0.7, over the contamination threshold 0.5)."""
    import numpy as np

    rng = np.random.default_rng(5)
    vocabulary = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "vo", "re", "di", "fu")
                  for b in ("ber", "dan", "gol", "hix", "jun", "mor", "pel", "sat", "tov", "wix", "zen", "yar")]
    base = [rng.choice(vocabulary, size=24, replace=False).tolist() for _ in range(30)]
    edits = []
    for k in (0, 7, 20):
        words = list(base[k])
        words[6], words[17] = "changed", "edited"
        edits.append(words)
    texts = [" ".join(w) for w in base + edits]
    rows = [{"record_id": f"q{i:03d}", "text": t, "source_uri": "raw/q.csv", "source_type": "csv",
             "locator": f"row {i}", "content_sha256": sha256_text(t), "label": ["a", "b", "c"][i % 3],
             "label_source": "column", "label_confidence": 1.0} for i, t in enumerate(texts)]
    return corpus_frame(rows).with_columns(pl.col("record_id").alias("group_id"),
                                           pl.lit(None, pl.String).alias("augmented_from"))


def test_light_edits_are_kept_in_one_split_and_the_check_finds_them_when_they_are_not():
    corpus, splits_cfg, dedup = _quotes(), SplitSettings(), DedupSettings()
    # A split made without the groups: two of the edited copies on the test side of their originals.
    careless = corpus.with_columns(pl.when(pl.col("record_id").is_in(["q030", "q031"])).then(pl.lit("test"))
                                   .otherwise(pl.lit("train")).alias("split"))
    crossing = cross_split_near_duplicates(careless, splits_cfg.contamination_threshold, dedup)
    assert sorted(crossing["record_ids"].to_list()) == [["q000", "q030"], ["q007", "q031"]]
    assert crossing["splits"].to_list() == [["test", "train"], ["test", "train"]]
    joined = join_similar_groups(corpus, splits_cfg, dedup)
    group = dict(zip(joined["record_id"], joined["group_id"]))
    assert [group[a] == group[b] for a, b in (("q000", "q030"), ("q007", "q031"), ("q020", "q032"))] == [True] * 3
    assert joined["group_id"].n_unique() == 30
    grouped = assign_splits(joined, splits_cfg, task_named("classification"))
    assert cross_split_near_duplicates(grouped, splits_cfg.contamination_threshold, dedup).is_empty()
    assert Settings().splits.contamination_threshold < Settings().dedup.threshold


def test_a_frame_with_a_wrong_schema_fails_at_the_boundary_with_the_column_named():
    from finetune_pipeline.defs.types import CorpusFrame, ReviewFrame, SplitsFrame
    from finetune_pipeline.labeling.review import empty_review

    corpus = _quotes()
    assert dg.check_dagster_type(CorpusFrame, corpus).success
    missing = dg.check_dagster_type(CorpusFrame, corpus.drop("record_id"))
    assert not missing.success and "record_id" in missing.description
    null_text = corpus.with_columns(pl.when(pl.col("record_id") == "q001").then(None).otherwise(pl.col("text"))
                                    .alias("text"))
    assert 'column "text"' in dg.check_dagster_type(CorpusFrame, null_text).description
    bad = dg.check_dagster_type(CorpusFrame, corpus.with_columns(pl.lit(1.5).alias("label_confidence")))
    assert not bad.success and 'column "label_confidence"' in bad.description
    assert corpus["text"][0][:20] not in bad.description  # the constraint and the column, never row values
    splits = corpus.with_columns(pl.lit("holdout").alias("split"))
    assert "split" in dg.check_dagster_type(SplitsFrame, splits).description
    assert dg.check_dagster_type(ReviewFrame, empty_review()).success


def test_a_sharded_dataset_with_a_wrong_schema_fails_at_the_boundary_shard_by_shard(tmp_path):
    from finetune_pipeline import shards
    from finetune_pipeline.defs.types import CorpusFrame

    corpus = _quotes()

    def stored(frame: pl.DataFrame, name: str):
        shards.write_dataset(frame, tmp_path / name, shard_rows=max(1, frame.height // 3))
        return shards.open_dataset(tmp_path / name)

    assert dg.check_dagster_type(CorpusFrame, stored(corpus, "good")).success
    last = corpus["record_id"][-1]  # in the last shard
    null_text = corpus.with_columns(pl.when(pl.col("record_id") == last).then(None).otherwise(pl.col("text"))
                                    .alias("text"))
    assert 'column "text"' in dg.check_dagster_type(CorpusFrame, stored(null_text, "null")).description
    twice = corpus.with_columns(pl.when(pl.col("record_id") == last).then(pl.lit(corpus["record_id"][0]))
                                .otherwise(pl.col("record_id")).alias("record_id"))  # in two shards
    assert "record_id is not unique" in dg.check_dagster_type(CorpusFrame, stored(twice, "twice")).description
    missing = dg.check_dagster_type(CorpusFrame, stored(corpus.drop("source_uri"), "missing"))
    assert not missing.success and "source_uri" in missing.description


def test_the_dataset_card_is_one_hugging_face_reads(good_run, tmp_path):
    import datasets
    import yaml

    root, _, _ = good_run
    folder = DataRoot(root).splits_export
    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["task_categories"] == ["text-generation"] and header["license"] == "other"
    assert header["language"] == ["en"] and header["size_categories"] == ["n<1K"]
    for section in ("## Sources", "## Personal data", "## Splits", "## Bias report", "## Known limitations"):
        assert section in card
    # reads the card's configs: the JSONL of each split. A cache of its own: datasets keys its cache by the
    # folder's name ("splits") and the file list, not their content, so another run's export would be read
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    on_disk = datasets.load_from_disk(str(folder))
    assert {s: loaded[s].num_rows for s in loaded} == {s: on_disk[s].num_rows for s in on_disk}
    assert sum(loaded[s].num_rows for s in loaded) == len(_pairs())
    sizes = {s: loaded[s].num_rows for s in loaded}
    assert sizes["train"] > sizes["validation"] and sizes["train"] > sizes["test"], sizes


def test_the_share_drift_and_test_support_warnings_fire_on_real_shifts():
    from finetune_pipeline import validation as v

    before = pl.DataFrame({"label": ["a"] * 50 + ["b"] * 50, "split": ["train"] * 90 + ["test"] * 10})
    after = pl.DataFrame({"label": ["a"] * 80 + ["b"] * 20, "split": ["train"] * 90 + ["test"] * 10})
    drift = v.share_drift_frame(after, before, "label", 0.1)
    assert dict(zip(drift["value"], drift["within"])) == {"a": False, "b": False}  # 0.5 -> 0.8 and 0.2
    assert v.share_drift_frame(before, before, "label", 0.1)["within"].all()
    assert v.share_drift_frame(after, pl.DataFrame(), "label", 0.1).is_empty()  # nothing published yet
    support = v.test_support_frame(after, "label")
    assert dict(support.rows()) == {"a": 0, "b": 10}  # every test row is 'b': 'a' has none to be measured on


def test_with_no_label_set_configured_a_label_only_the_model_gave_fails_the_label_check(tmp_path):
    from finetune_pipeline import validation as v
    from finetune_pipeline.defs.gates import labels_and_records

    words = "please look at my order from last week"
    rows = [{"record_id": f"r{i}", "text": f"{words} {i}", "label": label, "label_source": source,
             "label_confidence": 0.9, "source_uri": "raw/t.csv", "source_type": "csv", "locator": f"row {i}",
             "content_sha256": sha256_text(f"{words} {i}"), "ingested_at": "2026-01-01"} for i, (label, source) in
            enumerate([("billing", "column"), ("shipping", "folder"), ("billing", "human"),
                       ("shipping", "model"), ("refund", "model")])]  # "refund": in no column, folder or annotation
    frame = corpus_frame(rows)
    settings = Settings(labels=[], checks={"min_records": 1})
    root = DataRoot(tmp_path)

    def result(settings: Settings):
        labels, records = labels_and_records(settings, frame, root)
        return v.validate(frame, "labeled", v.labeled_expectations(1, labels, records))

    def passed(settings: Settings) -> bool:
        return result(settings).passed

    failed = result(settings)
    assert not failed.passed and [f["column"] for f in failed.failures] == ["label"]
    assert passed(Settings(labels=["billing", "shipping", "refund"], checks={"min_records": 1}))  # configured
    root.splits_export.mkdir(parents=True)  # ... or in the last published split
    (root.splits_export / "train.jsonl").write_text(json.dumps({"record_id": "p1", "label": "refund"}) + "\n")
    assert passed(settings)
    # an export as dataset_splits writes it: the label read from its Arrow files (not its texts)
    import shutil

    from finetune_pipeline import exports

    shutil.rmtree(root.splits_export)
    exports.export_splits(frame.with_columns(pl.lit("train").alias("split")), root.splits_export)
    (root.splits_export / "train.jsonl").write_text("")  # not what is read
    assert passed(settings)
    exports.export_splits(frame.filter(pl.col("label") != "refund").with_columns(pl.lit("train").alias("split")),
                          root.splits_export)
    assert not passed(settings)


def test_the_accounting_checks_fail_on_a_lost_reject_and_on_a_file_nobody_read(tmp_path):
    from finetune_pipeline import validation as v
    from finetune_pipeline.defs.cleaning import cleaned_corpus
    from finetune_pipeline.defs.collection import raw_corpus
    from finetune_pipeline.defs.gates import GATES

    # by id, not by count: one record lost and one kept twice balance the counts, not the ids
    frame = v.reconciliation_frame(["a", "b", "c"], ["a", "a"], ["c", "x"])
    assert frame.rows() == [("a", "out_twice"), ("b", "lost"), ("x", "not_read")]  # c: read once, rejected once
    # the first status that applies: read twice wins over everything after it
    assert v.reconciliation_frame(["a", "a", "b", "c"], ["b", "b", "z"], ["d"]).rows() == \
        [("a", "read_twice"), ("b", "out_twice"), ("c", "lost"), ("d", "not_read"), ("z", "not_read")]
    assert v.reconciliation_frame(pl.Series(["a", "b"]), pl.Series(["b"]), ["a"]).is_empty()

    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    tickets = [f"My order {100 + i} arrived late and the box was damaged, please send a replacement." for i in range(6)]
    (root / "raw" / "tickets.csv").write_text("text,label\n" + "".join(f'"{t}",shipping\n' for t in tickets))
    (root / "raw" / "short.txt").write_text("hi")  # a document too short: rejected by cleaning (a table row is kept)
    (root / "raw" / "header_only.csv").write_text("text,label\n")  # no rows: rejected, never gone silently
    (root / "raw" / ".hidden.txt").write_text("skipped by design")
    (root / "finetune.yaml").write_text(json.dumps({"labels": ["shipping"], "checks": {"min_records": 1},
                                                    "privacy": {"detector": "patterns"}}))
    pipeline = PipelineResource(data_dir=str(root))
    result = dg.materialize([raw_corpus, cleaned_corpus], resources=resources_for(pipeline),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
              and not e.asset_check_evaluation_data.check_name.endswith("_reject_share")}  # warnings, tested apart
    assert set(checks) == {"raw_corpus_expectations", "raw_corpus_every_file_accounted",
                           "cleaned_corpus_expectations", "cleaned_corpus_accounting"}
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    rejects = stored_rejects(DataRoot(root), "raw_corpus")
    assert ("raw/header_only.csv", "empty_file") in set(rejects.select("source_uri", "reason").iter_rows())

    # A cleaning reject gone from disk (overwritten, deleted): the record is neither kept nor rejected.
    lost = stored_rejects(DataRoot(root), "cleaned_corpus")
    assert lost.height == 1
    store_rejects(DataRoot(root), "cleaned_corpus", lost.head(0))
    # A file added to raw/ after raw_corpus was built: on disk, in no record and no reject.
    (root / "raw" / "late.txt").write_text("A ticket that arrived after the collection ran, about a late parcel.")
    # The checks run in their asset's step, on its stored value: here on what is on disk now.
    def evaluate(asset: str, name: str):
        check = next(g for g in GATES[asset] if g.name == name)
        stored = {n: stored_frame(DataRoot(root), n) for n in (asset, *check.upstream)}
        return check.evaluate(pipeline, stored[asset], **{n: stored[n] for n in check.upstream})

    accounting = evaluate("cleaned_corpus", "cleaned_corpus_accounting")
    files = evaluate("raw_corpus", "raw_corpus_every_file_accounted")
    assert not accounting.passed and accounting.metadata["records_lost"].value == lost["record_id"][0]
    assert not files.passed and files.metadata["unaccounted"].value == "raw/late.txt"
    assert files.metadata["cause"].value.startswith("1 file(s) under raw/ gave neither a record nor a reject")
    assert files.metadata["records"].value.splitlines()[2:] == ["|  | raw/late.txt |  |"]


def test_a_failed_run_on_a_table_it_cannot_read_prints_the_cause_and_the_fix(tmp_path, capsys):
    quotes = ["The only thing we have to fear is fear itself, and nameless terror.",
              "Imagination is more important than knowledge, for knowledge is limited.",
              "Be yourself; everyone else is already taken, as the saying goes."]
    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    (root / "finetune.yaml").write_text(json.dumps({"labels": ["courage", "science", "life"],
                                                    "checks": {"min_records": 1}}))
    # two text columns of one length: which one is the text is not clear, so the table is rejected
    (root / "raw" / "quotes.csv").write_text("quote,context,category\n" + "".join(
        f'"{q}","{q[::-1]}",{c}\n' for q, c in zip(quotes, ["courage", "science", "life"])))
    instance = dg.DagsterInstance.ephemeral()
    assert cli.run(str(root), select="raw_corpus", instance=instance) == 1
    err = capsys.readouterr().err
    assert "FAILED CHECK raw_corpus_expectations on raw_corpus" in err
    assert "  cause: raw_corpus holds 0 record(s), fewer than checks.min_records (1); 1 input(s) were rejected" in err
    assert ("    - missing_column (1 input): raw/quotes.csv: no column 'text' and no column clearly the text (string "
            "columns: ") in err
    assert "set sources.tabular.text_column in finetune.yaml" in err
    [evaluation] = [r.evaluation for r in [instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey("raw_corpus"), "raw_corpus_expectations"))]]
    assert evaluation.metadata["cause"].value.startswith("raw_corpus holds 0 record(s)")  # the same in the UI
    assert "sources.tabular.text_column" in evaluation.metadata["remedies"].value

    # the same quotations with one clear text column: read, and the summary says which columns it took
    (root / "raw" / "quotes.csv").write_text("quote,category\n" + "".join(
        f'"{q}",{c}\n' for q, c in zip(quotes, ["courage", "science", "life"])))
    assert cli.run(str(root), select="raw_corpus", instance=instance) == 0
    out = capsys.readouterr().out
    assert ("columns recognised (not configured):\n  raw/quotes.csv: text column 'quote', label column 'category' "
            "(recognised; set sources.tabular.text_column / label_column to choose)") in out


def test_a_failed_accounting_check_names_the_records_their_source_and_the_remedy(tmp_path):
    from finetune_pipeline.defs.collection import raw_corpus
    from finetune_pipeline.defs.gates import GATES

    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "t.jsonl").write_text("".join(json.dumps(
        {"id": f"r{i}", "text": f"Parcel {i} to Oslo arrived with a broken lid, please replace it soon.",
         "label": "shipping"}) + "\n" for i in range(3)))
    (root / "finetune.yaml").write_text(json.dumps({"labels": ["shipping"], "checks": {"min_records": 1}}))
    pipeline = PipelineResource(data_dir=str(root))
    assert dg.materialize([raw_corpus], resources=resources_for(pipeline), instance=dg.DagsterInstance.ephemeral(),
                          selection=["raw_corpus"]).success
    read = stored_frame(DataRoot(root), "raw_corpus")
    check = next(g for g in GATES["cleaned_corpus"] if g.name == "cleaned_corpus_accounting")
    DataRoot(root).stage_rejects("cleaned_corpus").parent.mkdir(parents=True, exist_ok=True)
    result = check.evaluate(pipeline, read.slice(1), raw_corpus=read)  # the first record lost on the way
    meta = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert not result.passed
    assert meta["cause"] == "records of raw_corpus not kept or rejected exactly once at cleaned_corpus: " \
                            "1 neither kept nor rejected (lost)"
    assert meta["records"].splitlines()[2] == f"| {read['record_id'][0]} | raw/t.jsonl | id=r0 |"
    assert "execution.incremental: false" in meta["remedies"]
    assert "Parcel 0" not in json.dumps(meta)  # ids and where they came from, never the text
    assert cli.refusal_text(result.metadata).splitlines()[:3] == [
        "  cause: " + meta["cause"], "  records (1 in all; record_id, source file, locator):",
        f"    {read['record_id'][0]}  raw/t.jsonl  id=r0"]


def test_a_failed_leakage_check_names_the_copies_outside_train_and_the_labels_a_split_lacks(tmp_path):
    from finetune_pipeline.defs.gates import GATES

    (tmp_path / "finetune.yaml").write_text(json.dumps({"labels": ["billing", "shipping", "refund"],
                                                        "checks": {"min_records": 1},
                                                        "splits": {"proportion_tolerance": 1.0}}))
    rows = []
    placed = [("train", label) for label in ["billing", "shipping", "refund"] * 4] \
        + [(split, label) for split in ("validation", "test") for label in ("billing", "shipping")]
    for i, (split, label) in enumerate(placed):  # refund only in train
        rows.append({"record_id": f"r{i:02d}", "split": split, "group_id": f"r{i:02d}", "label": label,
                     "augmented_from": None, "source_uri": "raw/t.csv", "locator": f"row {i + 1}",
                     "source_type": "csv", "text": f"ticket {i}"})
    # an oversampled copy of a train record placed in validation
    rows.append({**rows[0], "record_id": "c00", "split": "validation", "augmented_from": "r00", "locator": "row 1"})
    check = next(g for g in GATES["dataset_splits"] if g.name == "dataset_splits_no_leakage")
    result = check.evaluate(PipelineResource(data_dir=str(tmp_path)), pl.DataFrame(rows))
    meta = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert not result.passed
    assert meta["cause"] == ("1 group(s) of near copies have records in two splits; 1 augmented row(s) outside train "
                             "or outside their source's split; labels with no record in a split (validation: refund; "
                             "test: refund)")
    assert meta["records"].splitlines()[2:] == ["| c00 | raw/t.csv | row 1 |", "| r00 | raw/t.csv | row 1 |"]
    assert "defect of the pipeline" in meta["remedies"] and "take the label out of `labels`" in meta["remedies"]


def test_a_stage_that_fails_itself_is_reported_by_its_own_words_not_dagsters_wrapping(tmp_path):
    """The domain filter's guard raises dg.Failure with the histogram and the remedies: the CLI prints that
    description, and any other error by its innermost message (not 'Error occurred while executing op')."""
    @dg.asset
    def guarded():
        raise dg.Failure(description="domain filter: would reject 40% of 100 records; give examples")

    @dg.asset
    def crashing():
        raise ValueError("raw/x.csv: something specific")

    result = dg.materialize([guarded, crashing], raise_on_error=False)
    texts = {e.step_key: cli._failure_text(e.step_failure_data) for e in result.all_events if e.is_step_failure}
    assert texts["guarded"] == "domain filter: would reject 40% of 100 records; give examples"
    assert texts["crashing"] == "ValueError: raw/x.csv: something specific"
