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
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import make_record_id
from finetune_pipeline.stored import stored_frame

EMAIL = "maria.lopez@example.org"
# Slots combined by position, never crossed: no two records share a phrase, so none is a near copy of another.
OPENERS = ["Yesterday", "Last week", "This morning", "On Monday", "Twice now", "Since March", "After the storm",
           "Before the holiday", "Around noon", "For days", "Late at night", "Again today", "During the sale",
           "At the depot", "Over the weekend", "In the evening", "Right after payday", "Three times",
           "Early on Friday", "Out of nowhere", "Just before closing", "Some time ago", "While travelling",
           "Without warning", "At the start of June", "On my birthday", "In the middle of the move"]
SHIPPING = ["the courier left my kettle at a neighbour's gate", "a cracked violin case arrived from Oslo",
            "the tent poles came bent and the bag torn", "my sofa cushions were delivered to Lisbon instead",
            "the laptop box showed a crushed corner and water stains", "tracking froze in Kyoto for nine days",
            "a bicycle wheel was missing from the parcel", "the lamp shade reached Quito in pieces",
            "a returned blender never left the Perth warehouse", "the driver marked a desk delivered but nothing came",
            "two of four chairs went astray near Tallinn", "the mirror shattered because nobody wrapped it"]
BILLING = ["my card was charged twice for one subscription", "the invoice lists a printer I never ordered",
           "a refund of forty euros still has not appeared", "the VAT number on my receipt is wrong",
           "an annual plan renewed although I cancelled it", "the coupon discount vanished from the final bill",
           "the statement shows a currency conversion fee", "I paid by transfer yet the account says overdue",
           "a late payment penalty appeared after I paid early", "the credit note does not match the returned items",
           "my company address is missing from every invoice", "the price rose without any notice to customers",
           "an unknown merchant took twelve dollars from my account", "the payment page accepted my card then failed",
           "the quarterly bill doubled with no explanation", "my loyalty points were deducted instead of added",
           "the deposit for the rental was never released", "a gift card balance dropped to zero overnight",
           "the installment plan charged the full amount", "tax was applied twice on the same order",
           "the direct debit went out on the wrong date", "a duplicate invoice number blocks my reimbursement",
           "I was billed for premium support nobody asked for", "my student discount disappeared at renewal"]


def _tickets() -> list[dict]:
    rows = [{"id": f"s{i}", "label": "shipping", "text": f"{OPENERS[i]} {what}, please sort it out."}
            for i, what in enumerate(SHIPPING)]
    rows += [{"id": f"b{i}", "label": "billing", "text": f"{OPENERS[(i + 3) % len(OPENERS)]} {what}; can you fix it?"}
             for i, what in enumerate(BILLING)]  # twice the shipping records: augmentation oversamples
    rows[0]["text"] += f" Write to {EMAIL} please."
    rows.append({"id": "copy", "label": "billing", "text": rows[len(SHIPPING)]["text"]})  # an exact copy of b0
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
    assert "  cleaned_corpus: kept; text changed; redactions by kind: 1 email; quality flags: none" in out
    assert f"  deduplicated_corpus: kept (group {record}); no duplicate of it found" in out
    assert "  labeled_corpus: label 'shipping' from the column" in out
    split = stored_frame(DataRoot(explained_root), "dataset_splits").filter(pl.col("record_id") == record)["split"][0]
    assert f"  dataset_splits: in {split} (group {record})" in out
    assert "please sort it out. Write to <EMAIL> please." in out
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
    corpus = stored_frame(DataRoot(explained_root), "augmented_corpus")
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
