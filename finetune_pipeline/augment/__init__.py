"""Augmentation: balance the training data without touching validation or test. The stage runner is
augment/stage.py; what a kind makes, its augmenters: augment/generate.py (labeled texts: paraphrases,
synthetic examples; oversample.py: copies) and augment/instructions.py (conversations)."""

from finetune_pipeline.augment.generate import Augmented, label_gaps
from finetune_pipeline.augment.stage import AUGMENT_COLUMNS, STAGE, AugmentStats, augment_corpus

__all__ = ["AUGMENT_COLUMNS", "STAGE", "AugmentStats", "Augmented", "augment_corpus", "label_gaps"]
