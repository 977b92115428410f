"""The labeling stage runner: every record that goes on to training has a label from the label set.

Where a record's label comes from, first match wins:
1. an expert annotator (`labeling.expert_annotators`) in `annotations/`      -> label_source `human`
2. the other annotators in `annotations/`: the consensus of several (`crowd`), or the one annotator's label
   (`human`). A reviewed label replaces the column/folder label: review exists to correct labels.
3. a column or the parent folder at collection time                          -> `column` / `folder`
4. the model, for records with no label: zero-shot by embedding similarity to the label descriptions, or a
   logistic regression on human labels once there are enough                -> `model` (`label_model` names it)

Records held for review leave this stage as rejects with reason `in_review` (so nothing is lost) and go
to the review queue: model labels under `labeling.review_threshold`, crowd labels with agreement under
`labeling.agreement_threshold`, and records whose experts disagree. A sampled share of the accepted model
labels (`audit_share`) also goes to the queue for audit and stays in training. The queue comes highest
priority first (the expected value of a label: labeling/priority.py), each item with the number of annotators
to ask and who (reliable ones by Dawid-Skene: labeling/routing.py). A label outside the label
set is rejected as `label_not_in_label_set`; a record with no label and no model as `unlabeled`.

What happens is the kind's (`Task.label`): labeled texts as above (`labeling.assign.label_records`); kinds
without labels (instruction: prompt -> response) pass through unchanged (`labeling.assign.keep_unlabeled`):
`label` stays null and an optional `category` column stays as it is (it stratifies the split, see
splits.py). Their review items are conflicting instructions, decided by a person (labeling/conflicts.py).
"""


from __future__ import annotations

import polars as pl

from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.labeling.annotations import empty_annotations
from finetune_pipeline.labeling.assign import Labeler, LabelingResult
from finetune_pipeline.labeling.zero_shot import predict_labels
from finetune_pipeline.settings import Settings
from finetune_pipeline.tasks import task_for


def apply_labels(corpus: pl.DataFrame, settings: Settings, annotations: pl.DataFrame | None = None,
                 annotation_problems: list[dict] | None = None, labeler: Labeler = predict_labels,
                 embedding_cache: EmbeddingCache | None = None) -> LabelingResult:
    """Label every record of `corpus` as its kind does (`Task.label`; precedence in the module docstring);
    `annotations` are the rows of `annotations.load_annotations`, `annotation_problems` the problems it found
    (reported in the stats). `embedding_cache`: the built-in labeler's sentence vectors are looked up there
    first."""
    annotations = annotations if annotations is not None else empty_annotations()
    return task_for(settings).label(corpus, settings, annotations, annotation_problems, labeler, embedding_cache)
