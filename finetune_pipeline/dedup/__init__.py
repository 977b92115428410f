"""Deduplication: exact (exact.py), near (minhash.py, MinHash + LSH) and semantic (semantic.py) duplicates,
prompt duplicates and conflicting answers of conversations (conflicts.py). The stage runner is dedup/stage.py."""

from finetune_pipeline.dedup.exact import KEEP_ORDER, keep_order
from finetune_pipeline.dedup.stage import STAGE, ClusterSummary, DedupStats, deduplicate

__all__ = ["KEEP_ORDER", "STAGE", "ClusterSummary", "DedupStats", "deduplicate", "keep_order"]
