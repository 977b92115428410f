"""`finetune-pipeline explain RECORD_ID`: what every stage did to one record and why, from the stored stage values
and rejects of a real run, never printing the text before redaction."""

import json

import dagster as dg
import polars as pl
import pytest

from finetune_pipeline.definitions import ALL_ASSETS, resources_for
from finetune_pipeline.defs import cli
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.explain import ExplainError, explain
from finetune_pipeline.records import make_record_id

CITIES = ["Oslo", "Lisbon", "Kyoto", "Quito", "Perth", "Tallinn", "Accra", "Lima", "Hanoi", "Dakar", "Bergen", "Cusco"]
EMAIL = "maria.lopez@example.org"


def _tickets() -> list[dict]:
    rows = []
    for i, city in enumerate(CITIES):
        rows.append({"id": f"s{i}", "label": "shipping",
                     "text": f"The parcel sent to {city} on day {i + 3} came with a cracked lid; ship a new one."})
        rows.append({"id": f"b{i}", "label": "billing",
                     "text": f"Invoice {700 + 13 * i} for the {city} office lists a fee of {20 + i} euros twice."})
        rows.append({"id": f"c{i}", "label": "billing",  # twice the shipping records: augmentation oversamples
                     "text": f"My {city} card statement shows payment {31 * i + 5} although I cancelled it."})
    rows[0]["text"] += f" Write to {EMAIL} please."
    rows.append({"id": "copy", "label": "billing", "text": rows[1]["text"]})  # an exact copy of b0
    return rows


@pytest.fixture(scope="module")
def explained_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain") / "data"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _tickets()))
    (root / "finetune.yaml").write_text(json.dumps({"labels": ["shipping", "billing"], "checks": {"min_records": 5},
                                                    "privacy": {"detector": "patterns"}}))
    job = dg.define_asset_job("to_splits", selection=dg.AssetSelection.assets("dataset_splits").upstream())
    defs = dg.Definitions(assets=ALL_ASSETS, jobs=[job], resources=resources_for(PipelineResource(data_dir=str(root))))
    result = defs.resolve_job_def("to_splits").execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                                                   raise_on_error=False)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    return root


def _id(locator: str) -> str:
    return make_record_id("raw/tickets.jsonl", locator)


def test_explain_tells_every_stage_of_a_kept_record_without_its_personal_data(explained_root, capsys):
    record = _id("id=s0")
    assert cli.main(["explain", record[:8], "--data-dir", str(explained_root)]) == 0  # a unique prefix will do
    out = capsys.readouterr().out
    assert out.startswith(f"record {record}\n")
    assert "  raw_corpus: collected from raw/tickets.jsonl (id=s0, jsonl)" in out and "label 'shipping'" in out
    assert "  cleaned_corpus: kept; text changed; redactions by kind: 1 EMAIL; quality flags: none" in out
    assert f"  deduplicated_corpus: kept (group {record}); no duplicate of it found" in out
    assert "  labeled_corpus: label 'shipping' from the column" in out
    split = pl.read_parquet(explained_root / ".pipeline" / "assets" / "dataset_splits.parquet") \
        .filter(pl.col("record_id") == record)["split"][0]
    assert f"  dataset_splits: in {split} (group {record})" in out
    assert "Write to <EMAIL> please." in out
    assert EMAIL not in out and "lopez" not in out.lower()


def test_explain_names_the_duplicate_and_the_record_it_duplicates(explained_root):
    kept, copy = _id("id=b0"), _id("id=copy")
    lines = explain(explained_root, copy)
    assert lines[1].startswith("  raw_corpus: collected from raw/tickets.jsonl (id=copy, jsonl)")
    assert lines[3] == (f"  deduplicated_corpus: rejected, exact_duplicate: exact duplicate (same text after case "
                        f"and whitespace folding) of {kept}")
    assert not any(line.startswith("  labeled_corpus") for line in lines)  # it went no further
    assert f"1 duplicate(s) of it removed: {copy} (exact_duplicate)" in "\n".join(explain(explained_root, kept))


def test_explain_an_augmented_copy_and_ids_it_cannot_resolve(explained_root, capsys):
    corpus = pl.read_parquet(explained_root / ".pipeline" / "assets" / "augmented_corpus.parquet")
    copies = corpus.filter(pl.col("augmented_from").is_not_null())
    copy_id, source = copies.select("record_id", "augmented_from").row(0)
    lines = explain(explained_root, copy_id)
    assert lines[1].startswith("  augmented_corpus: an augmented copy (oversample) of " + source)
    assert any("augmented copies (" in line for line in explain(explained_root, source))
    assert cli.main(["explain", "zz-not-an-id", "--data-dir", str(explained_root)]) == 1
    assert "no record id starts with 'zz-not-an-id'" in capsys.readouterr().err
    with pytest.raises(ExplainError, match="record ids start with ''|give a record id"):
        explain(explained_root, "")
    first = corpus["record_id"].str.slice(0, 1).mode().sort()[0]  # one character that several ids start with
    with pytest.raises(ExplainError, match=rf"record ids start with '{first}'.*give more characters"):
        explain(explained_root, first)
