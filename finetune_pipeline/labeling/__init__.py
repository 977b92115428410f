"""Labeling: a label from the label set for every labeled text (zero-shot or a classifier on people's labels,
Label Studio review, consensus and agreement), or the conflicts people decide for kinds without labels. The
stage runner is labeling/stage.py; what it does per kind, labeling/assign.py."""

from finetune_pipeline.labeling.assign import (AnnotationStats, Labeler, LabelingResult, LabelingStats,
                                               ModelLabelStats, audit_sample, keep_unlabeled, label_records)
from finetune_pipeline.labeling.labels import label_set
from finetune_pipeline.labeling.stage import apply_labels

__all__ = ["AnnotationStats", "Labeler", "LabelingResult", "LabelingStats", "ModelLabelStats", "apply_labels",
           "audit_sample", "keep_unlabeled", "label_records", "label_set"]
