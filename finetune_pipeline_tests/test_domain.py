"""Domain relevance filter (domain.py): the real MiniLM model on the sample's tickets and on real one-line
command descriptions, mixed with unrelated texts; calibration against the corpus (a description alone on short
texts) and the absolute threshold; the max_reject_share guard (fail or flag); the flag policy; the classifier
variant; conversations; the stage's accounting; settings errors."""

import csv
from pathlib import Path
import json

import polars as pl
import pytest

from finetune_pipeline.dedup import DedupStats, deduplicate
from finetune_pipeline.domain import DomainFilterRefused, DomainScorer, domain_filter, read_examples, record_texts
from finetune_pipeline.records import corpus_frame
from finetune_pipeline.settings import DomainSettings, SettingsError, load_settings, parse_settings
from finetune_pipeline.tasks import task_named
from finetune_pipeline_tests.conftest import SAMPLE_DATA
from finetune_pipeline_tests.domain_texts import COMMAND_SYNOPSES, IN_DOMAIN_EXAMPLES, OFF_DOMAIN

DESCRIPTION = "Customer support tickets of an online shop: orders, payments, accounts, the website, deliveries."
# One text of each unrelated kind (the benchmark's near_domain texts are the hard cases, measured there).
OFF = {kind: texts[0] for kind, texts in OFF_DOMAIN.items() if kind != "near_domain"}
# The small mixes below are a third off-domain: past the guard, and too small to calibrate on (min_records).
ABSOLUTE = {"calibration": "absolute", "max_reject_share": 1.0}


def _tickets(n: int = 12) -> list[str]:
    with (SAMPLE_DATA / "raw" / "exports" / "tickets.csv").open(encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)][:n]


def _corpus(texts: list[str], prefix: str) -> pl.DataFrame:
    return corpus_frame([{"record_id": f"{prefix}{i}", "text": t, "source_uri": f"raw/{prefix}{i}.txt",
                          "locator": "element 1", "ingested_at": "2026-01-01T00:00:00"} for i, t in enumerate(texts)])


@pytest.fixture(scope="module")
def mix() -> pl.DataFrame:
    return pl.concat([_corpus(_tickets(), "ticket"), _corpus(list(OFF.values()), "off")])


@pytest.fixture(scope="module")
def scorer() -> DomainScorer:
    return DomainScorer.from_settings(DomainSettings(description=DESCRIPTION, **ABSOLUTE), in_texts=IN_DOMAIN_EXAMPLES)


def test_off_domain_texts_are_rejected_with_their_score_and_tickets_kept(mix, scorer):
    result = domain_filter(mix, scorer.cfg, scorer)
    assert set(result.kept["record_id"]) == {f"ticket{i}" for i in range(12)}
    assert set(result.rejected["record_id"]) == {f"off{i}" for i in range(len(OFF))}
    assert set(result.rejected["reason"]) == {"off_domain"} and set(result.rejected["stage"]) == {"deduplicated_corpus"}
    assert all("relevance score" in d and "domain.threshold 0.15" in d for d in result.rejected["detail"])
    assert not any(text[:30] in d for d in result.rejected["detail"] for text in OFF.values())  # never the text
    stats = result.stats
    assert (stats.method, stats.scored, stats.off_domain, stats.in_domain_examples) == ("similarity", 18, len(OFF), 11)
    assert sum(stats.score_histogram.values()) == 18


def test_flag_policy_keeps_every_record_and_flags_the_off_domain_ones(mix, scorer):
    cfg = scorer.cfg.model_copy(update={"policy": "flag"})
    flagged = mix.with_columns(pl.Series("quality_flags", [["unknown_words"]] + [[]] * (mix.height - 1),
                                         dtype=pl.List(pl.String)))
    result = domain_filter(flagged, cfg, DomainScorer(cfg, scorer.in_domain))
    assert result.rejected.is_empty() and result.kept.height == mix.height
    flags = dict(zip(result.kept["record_id"], result.kept["quality_flags"].to_list()))
    assert {r for r, f in flags.items() if "off_domain" in f} == {f"off{i}" for i in range(len(OFF))}
    assert flags["ticket0"] == ["unknown_words"]  # existing flags stay
    assert result.stats.off_domain == len(OFF) and result.stats.policy == "flag"


def test_classifier_scores_when_out_of_domain_examples_exist(tmp_path):
    # trained on four kinds of unrelated text; judged on two kinds it never saw
    trained_on = ("recipe", "sports", "legal", "science")
    (tmp_path / "in").mkdir(), (tmp_path / "out").mkdir()
    for i, text in enumerate(IN_DOMAIN_EXAMPLES):
        (tmp_path / "in" / f"{i}.txt").write_text(text)
    for kind in trained_on:
        for i, text in enumerate(OFF_DOMAIN[kind]):
            (tmp_path / "out" / f"{kind}_{i}.md").write_text(text)
    cfg = DomainSettings(examples_dir=str(tmp_path / "in"), out_of_domain_dir=str(tmp_path / "out"), **ABSOLUTE)
    unseen = [texts[1] for kind, texts in OFF_DOMAIN.items() if kind not in (*trained_on, "near_domain")]
    result = domain_filter(pl.concat([_corpus(_tickets(8), "ticket"), _corpus(unseen, "off")]), cfg)
    assert result.stats.method == "classifier" and result.stats.out_of_domain_examples == 24
    assert set(result.rejected["record_id"]) == {f"off{i}" for i in range(len(unseen))}
    assert all("probability of in-domain" in d and "domain.classifier_threshold 0.4" in d
               for d in result.rejected["detail"])


def test_conversations_are_scored_on_their_prompt(scorer):
    conversations = corpus_frame([
        {"record_id": "c0", "text": "", "prompt": "My parcel never arrived, can you check the tracking number?",
         "response": "Sure, let me look up the courier's status for your order."},
        {"record_id": "c1", "text": "", "prompt": OFF["recipe"], "response": "Sounds delicious."},
    ]).with_columns(pl.lit("raw/chats.jsonl").alias("source_uri"), pl.lit("row").alias("locator"))
    instruction = task_named("instruction")
    assert record_texts(conversations, instruction)[1] == OFF["recipe"]
    result = domain_filter(conversations, scorer.cfg, scorer, task=instruction)
    assert result.kept["record_id"].to_list() == ["c0"] and result.rejected["record_id"].to_list() == ["c1"]


def test_deduplicated_corpus_stage_filters_first_and_accounts_for_every_row(tmp_path, mix):
    (tmp_path / "examples").mkdir()
    for i, text in enumerate(IN_DOMAIN_EXAMPLES):
        (tmp_path / "examples" / f"{i}.txt").write_text(text)
    (tmp_path / "finetune.yaml").write_text(f"domain:\n  description: {json.dumps(DESCRIPTION)}\n"
                                            "  examples_dir: examples\n  max_reject_share: 0.5\n")
    settings = load_settings(tmp_path)
    assert settings.domain.examples_dir == str(tmp_path / "examples")
    copy = mix.filter(pl.col("record_id") == "off0").with_columns(pl.lit("off0-copy").alias("record_id"),
                                                                   pl.lit("raw/zz.txt").alias("source_uri"))
    corpus = pl.concat([mix, copy])  # an off-domain text twice: both off_domain, never "duplicate of" a reject
    result = deduplicate(corpus, settings)
    assert corpus.height == result.kept.height + result.rejected.height
    assert result.rejected.filter(pl.col("reason") == "off_domain").height == len(OFF) + 1
    assert set(result.rejected["duplicate_of"].drop_nulls()) <= set(result.kept["record_id"])
    stats = DedupStats.from_dict(json.loads(json.dumps(result.stats.to_dict())))
    assert stats.domain is not None and stats.domain.off_domain == len(OFF) + 1
    # without a domain the stage does not score at all
    assert deduplicate(corpus, parse_settings({})).stats.domain is None


def test_settings_errors_name_the_field(tmp_path):
    (tmp_path / "finetune.yaml").write_text("domain:\n  examples_dir: nowhere\n")
    with pytest.raises(SettingsError, match=r"domain\.examples_dir: folder .*nowhere not found"):
        load_settings(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "finetune.yaml").write_text("domain:\n  examples_dir: empty\n")
    with pytest.raises(SettingsError, match=r"domain\.examples_dir: .*holds no \.txt or \.md example"):
        load_settings(tmp_path)
    with pytest.raises(SettingsError, match=r"domain.*out_of_domain_dir needs domain\.examples_dir"):
        parse_settings({"domain": {"description": "shop tickets", "out_of_domain_dir": "out"}})
    with pytest.raises(SettingsError, match=r"domain\.threshold"):
        parse_settings({"domain": {"threshold": 2}})
    with pytest.raises(SettingsError, match=r"domain\.policy"):
        parse_settings({"domain": {"policy": "drop"}})
    assert not parse_settings({}).domain.enabled


def test_the_sample_root_uses_the_domain_filter_with_its_examples():
    domain = load_settings(SAMPLE_DATA).domain
    assert domain.enabled and domain.policy == "reject"
    assert read_examples(domain.examples_dir) == IN_DOMAIN_EXAMPLES  # what make_sample_data.py writes


# Calibration against the corpus: a one-sentence description on short real texts, an off-domain file mixed in.
COMMANDS = "One-line descriptions of what command-line programs do."


def _sources(texts: list[str], source: str, prefix: str) -> pl.DataFrame:
    """Rows of one source (a JSONL export, a PDF's chunks), as the collection stage would make them."""
    return _corpus(texts, prefix).with_columns(pl.lit(source).alias("source_uri"),
                                               pl.format("row {}", pl.int_range(pl.len())).alias("locator"))


@pytest.fixture(scope="module")
def commands() -> pl.DataFrame:
    return _sources(COMMAND_SYNOPSES, "raw/whatis.jsonl", "cmd")


@pytest.fixture(scope="module")
def cookbook() -> pl.DataFrame:  # six recipe paragraphs: the chunks of one unrelated PDF
    return _sources(OFF_DOMAIN["recipe"], "raw/cookbook.pdf", "recipe")


def test_a_description_alone_keeps_short_in_domain_texts_and_catches_an_unrelated_file(commands, cookbook):
    # The absolute threshold on the same texts drops most of them (the bug: 40-60% of short real texts).
    cfg = DomainSettings(description=COMMANDS)
    absolute = domain_filter(commands, cfg.model_copy(update=ABSOLUTE))
    assert absolute.rejected.height > 0.3 * commands.height
    result = domain_filter(pl.concat([commands, cookbook]), cfg)
    lost = set(result.rejected["record_id"]) - set(cookbook["record_id"])
    assert len(lost) <= 0.02 * commands.height  # at most 3 of 150 real command descriptions
    assert set(cookbook["record_id"]) <= set(result.rejected["record_id"])  # the whole unrelated file
    stats = result.stats
    assert (stats.calibration, stats.scored, stats.off_domain_sources) == ("corpus", 156, 1)
    assert stats.threshold == -4.0 and sum(stats.score_histogram.values()) == 156
    assert all("robust deviations from the corpus median" in d for d in result.rejected["detail"])
    assert not any(text[:30] in d for d in result.rejected["detail"] for text in OFF_DOMAIN["recipe"])


def test_a_description_alone_keeps_the_sample_tickets_the_absolute_threshold_lost(cookbook):
    # docs/benchmarks.md: the absolute 0.15 lost 24 of the 104 sample tickets with the description alone
    exports = SAMPLE_DATA / "raw" / "exports"
    rows = [json.loads(line) for line in (exports / "tickets.jsonl").read_text().splitlines() if line.startswith("{")]
    documents = sorted(p for p in (SAMPLE_DATA / "raw" / "tickets").rglob("*") if p.suffix in (".txt", ".md"))
    tickets = pl.concat([_sources(_tickets(200), "raw/exports/tickets.csv", "csv"),
                         _sources([r["text"] for r in rows if r.get("text")], "raw/exports/tickets.jsonl", "jsonl"),
                         *[_sources([p.read_text()], f"raw/tickets/{p.name}", f"doc{i}")
                           for i, p in enumerate(documents)]])
    assert tickets.height == 104
    result = domain_filter(pl.concat([tickets, cookbook]), DomainSettings(description=DESCRIPTION))
    assert set(result.rejected["record_id"]) - set(cookbook["record_id"]) <= set()  # no ticket lost
    assert set(cookbook["record_id"]) <= set(result.rejected["record_id"])


def test_the_guard_fails_the_stage_before_anything_is_written_with_share_histogram_and_remedies(tmp_path, commands):
    # the run: a one-sentence description at the absolute threshold rejects most of a real corpus
    settings = parse_settings({"domain": {"description": COMMANDS, "calibration": "absolute"}})
    with pytest.raises(DomainFilterRefused) as refused:
        deduplicate(commands, settings)
    message, share = str(refused.value), refused.value.share
    assert share > 0.1 and f"({share:.1%})" in message and "domain.max_reject_share 0.1" in message
    assert "wrote nothing" in message and "raw/whatis.jsonl" in message
    assert "0.1-0.2" in message and "#" in message  # the histogram of the scores, as text
    for remedy in ("domain.examples_dir", "domain.threshold", "domain.policy: flag", "domain.on_excess: flag"):
        assert remedy in message
    assert sum(refused.value.histogram.values()) == commands.height


def test_on_excess_flag_keeps_every_record_with_a_flag(commands):
    cfg = DomainSettings(description=COMMANDS, calibration="absolute", on_excess="flag")
    result = domain_filter(commands, cfg)
    assert result.rejected.is_empty() and result.kept.height == commands.height
    flagged = result.kept.filter(pl.col("quality_flags").list.contains("off_domain")).height
    assert flagged == result.stats.off_domain > 0.1 * commands.height
    assert result.stats.policy == "flag" and "domain.max_reject_share 0.1" in result.stats.guard


def test_the_deduplicated_corpus_asset_fails_with_the_guard_s_message(tmp_path, commands):
    import dagster as dg

    from finetune_pipeline.defs.cleaning import deduplicated_corpus
    from finetune_pipeline.defs.resources import PipelineResource, RayCluster

    (tmp_path / "finetune.yaml").write_text(f"domain:\n  description: {json.dumps(COMMANDS)}\n"
                                            "  calibration: absolute\n")
    pipeline = PipelineResource(data_dir=str(tmp_path))
    context = dg.build_asset_context(instance=dg.DagsterInstance.ephemeral())
    from finetune_pipeline import shards

    shards.write_dataset(commands, tmp_path / "cleaned")  # as the IO manager stores the stage's input
    stored = shards.open_dataset(tmp_path / "cleaned")
    with pytest.raises(dg.Failure, match=r"would be rejected as off_domain, more than domain\.max_reject_share"):
        list(deduplicated_corpus(context, pipeline, RayCluster(pipeline=pipeline), stored))
    assert not (tmp_path / ".pipeline" / "assets").exists() or not any((tmp_path / ".pipeline" / "assets").iterdir())


def test_the_guard_also_stops_a_calibrated_filter_and_names_its_cuts(commands):
    # 42 unrelated texts in 7 files among 150 command descriptions: 22% off-domain, past max_reject_share 0.1
    unrelated = pl.concat([_sources(texts, f"raw/unrelated/{kind}.pdf", kind) for kind, texts in OFF_DOMAIN.items()])
    corpus = pl.concat([commands, unrelated])
    with pytest.raises(DomainFilterRefused) as refused:
        domain_filter(corpus, DomainSettings(description=COMMANDS))
    message = str(refused.value)
    assert "robust deviations from the corpus median" in message and "domain.record_cut" in message
    assert "-2 to -1" in message and "raw/unrelated/" in message  # the histogram of relevance, the files
    allowed = domain_filter(corpus, DomainSettings(description=COMMANDS, max_reject_share=0.5))
    assert allowed.stats.off_domain == round(refused.value.share * corpus.height) > 0.1 * corpus.height
    assert set(allowed.rejected["record_id"]) - set(unrelated["record_id"]) <= set()  # only unrelated texts


GPL_3 = Path("/usr/share/common-licenses/GPL-3")  # base-files: on every Debian machine


@pytest.mark.skipif(not GPL_3.exists(), reason="needs /usr/share/common-licenses/GPL-3 (Debian base-files)")
def test_a_document_of_another_subject_among_table_rows_is_caught_and_no_row_lost(commands):
    # Real shape (the gauntlet's pkg_domain): short labeled rows of a table, and a long software text dropped
    # into raw/ whose chunks are alike. Each chunk's nearest neighbours used to be the other chunks of the same
    # licence, so the file scored at the corpus median and none of it was caught.
    text = GPL_3.read_text(encoding="utf-8")
    chunks = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    rows = commands.with_columns(pl.lit("jsonl").alias("source_type"))
    licence = _sources(chunks, "raw/docs/GPL-3.txt", "gpl").with_columns(pl.lit("txt").alias("source_type"))
    cfg = DomainSettings(description=COMMANDS, max_reject_share=0.2)  # the licence is 18 of 168 records
    result = domain_filter(pl.concat([rows, licence]), cfg)
    rejected = set(result.rejected["record_id"])
    assert rejected & set(rows["record_id"]) == set()  # no command description lost
    assert set(licence["record_id"]) <= rejected  # the whole licence: a document is one text
    assert result.stats.off_domain_sources == 1
    assert any("sign test" in d and "domain.document_p" in d for d in result.rejected["detail"])
    # documents_p 0 turns the rule off: the licence is judged like any other source again
    off = domain_filter(pl.concat([rows, licence]), cfg.model_copy(update={"document_p": 0.0}))
    assert not any("sign test" in d for d in off.rejected["detail"])
