"""The labeling assets in Dagster: labeled_corpus and review_queue from a stored deduplicated corpus and an
annotations/ folder, with their metadata, the Label Studio export and the blocking checks; and either
of them, with what follows, materialized without the other."""

import json

import dagster as dg
import polars as pl

from finetune_pipeline.definitions import ALL_ASSETS, definitions_for, resources_for
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.records import corpus_frame
from finetune_pipeline.stored import stored_frame

TICKETS = {
    "billing": "I was charged twice for order {n} and would like a refund of the second payment, please.",
    "shipping": "My parcel for order {n} has not arrived, the tracking number has not changed for a week.",
}


def _deduplicated_root(tmp_path):
    """A data root with a stored deduplicated corpus (24 tickets of two labels and one unlabeled note), the
    label set, and crowd annotations (one record split 2:2) plus a broken annotation file."""
    root = tmp_path / "data"
    rows = [{"record_id": f"{label[:4]}{n}", "text": text.format(n=n), "label": label, "label_source": "folder",
             "source_uri": f"raw/{label}/{n}.txt", "source_type": "txt", "locator": "element 0",
             "content_sha256": f"{n:064d}", "group_id": f"{label}{n}"} for label, text in TICKETS.items() for n in range(12)]
    rows.append({"record_id": "unlabeled", "text": "Where is my package? The courier tracking page shows nothing.",
                 "source_uri": "raw/notes.txt", "source_type": "txt", "locator": "element 0",
                 "content_sha256": "f" * 64,
                 "group_id": "notes"})
    (root / ".pipeline" / "assets").mkdir(parents=True)
    corpus_frame(rows).write_parquet(root / ".pipeline" / "assets" / "deduplicated_corpus.parquet")
    (root / "finetune.yaml").write_text("labels: [billing, shipping]\nchecks: {min_records: 5}\n"
                                        "labeling: {expert_annotators: [lead@example.com]}\n")
    (root / "annotations").mkdir()
    (root / "annotations" / "crowd.csv").write_text("record_id,annotator,label\n" + "".join(
        f"{r},{a},{lab}\n" for r, lab in [("bill0", "billing"), ("bill1", "billing"), ("ship0", "shipping"),
                                          ("ship1", "shipping")] for a in ("ann1", "ann2", "ann3"))
        + "bill2,ann1,billing\nbill2,ann2,shipping\nbill2,ann3,shipping\nbill2,ann4,billing\n"  # a 2:2 split
        + "ship3,ann1,shipping\n")
    (root / "annotations" / "broken.json").write_text("{")
    return root


def test_labeling_assets_materialize_with_agreement_metadata_and_review_export(tmp_path):
    root = _deduplicated_root(tmp_path)
    pipeline = PipelineResource(data_dir=str(root))
    result = dg.materialize(ALL_ASSETS, resources=resources_for(pipeline),
        selection=["labeled_corpus", "review_queue"], raise_on_error=False)
    assert result.success

    meta = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("labeling")}
    labeled, review = meta["labeled_corpus"], meta["review_queue"]
    assert labeled["rows_in"].value == 25 and labeled["rows_out"].value + labeled["rows_rejected"].value == 25
    assert labeled["in_review"].value == 1  # bill2: annotators split 2:2
    assert "crowd" in labeled["by_label_source"].value and "model" in labeled["by_label_source"].value
    assert "zero-shot all-MiniLM-L6-v2" in labeled["label_model"].value
    assert "Krippendorff" in labeled["annotation_agreement"].value
    assert "data:image/png;base64," in labeled["annotator_confusion"].value
    assert "ann1" in labeled["agreement_per_annotator"].value
    assert "ann4" in labeled["annotator_reliability"].value and "shipping" in labeled["annotator_reliability"].value
    assert "bill2" in review["highest_priority"].value  # the 2:2 split: most doubtful, asked first
    assert "broken.json" in labeled["annotation_problems"].value and "not valid JSON" in labeled["annotation_problems"].value
    for value in list(labeled.values()) + list(review.values()):
        assert "charged twice" not in str(getattr(value, "value", value))  # no record text in metadata

    tasks = json.loads((root / "exports" / "review" / "tasks.json").read_text())
    assert "bill2" in {t["data"]["record_id"] for t in tasks} and review["rows"].value == len(tasks)
    assert (root / "exports" / "review" / "label_config.xml").exists()
    evaluations = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
                   for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert evaluations == {"labeled_corpus_expectations": True, "labeled_corpus_accounting": True,
                           "labeled_corpus_reject_share": True}
    kept = stored_frame(DataRoot(root), "labeled_corpus")
    assert kept.filter(pl.col("record_id") == "unlabeled")["label"].to_list() == ["shipping"]


def test_labeled_corpus_and_what_follows_materialize_without_the_review_queue(tmp_path):
    """What `dagster asset materialize --select '*dataset_splits'` asks of the labeling step: only
    labeled_corpus (the review queue is not in the selection), through the Definitions and their job."""
    root = _deduplicated_root(tmp_path)
    # The fixture's tickets are one template per label (near copies): only exact copies share a split group here.
    (root / "finetune.yaml").write_text((root / "finetune.yaml").read_text() + "augmentation: {oversample: false}\n"
                                        "splits: {contamination_threshold: 1.0}\n")
    defs = definitions_for(DataRoot(root))
    upstream = {k.to_user_string() for k in dg.AssetSelection.assets("dataset_splits").upstream().resolve(
        defs.get_repository_def().asset_graph)}
    assert "labeled_corpus" in upstream and "review_queue" not in upstream
    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, raise_on_error=False,
            asset_selection=[dg.AssetKey(k) for k in ("labeled_corpus", "split_assignment", "augmented_corpus",
                                                      "dataset_splits")])
        assert result.success
        stored = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
        assert stored == {"labeled_corpus", "split_assignment", "augmented_corpus", "dataset_splits"}
    assert not (root / "exports" / "review").exists()  # the review queue's export belongs to review_queue
    staged = DataRoot(root).staged(DataRoot(root).splits_export)
    assert (staged / "train.jsonl").exists()  # the candidate; published_splits (not selected) publishes it
    assert not (root / "exports" / "splits").exists()

    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("review_queue")])
        stored = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
        assert stored == {"review_queue"}
    assert (root / "exports" / "review" / "tasks.json").exists()
