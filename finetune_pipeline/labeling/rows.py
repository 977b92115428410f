"""The built-in labeler on a sharded dataset (the streaming paths, local and Ray): the records the model labels are
named by their row in the dataset, so their texts never come to this process (`assign.RowLabeler`).

1. The label descriptions (zero-shot) or the classifier's training texts (people's labels, a few) embedded, by
   the embedding cache first (`embeddings.embed`); on Ray by a task on a worker, locally on a large corpus by the
   encoder's own process.
2. The records' vectors in a spill folder on disk (`sharded_vectors.embed_rows`, as the domain filter and semantic
   dedup embed: per shard, the cache read by key, the texts no cache had embedded by a Ray task that reads its
   shard's texts itself, or here by the encoder's process).
3. The probabilities `BLOCK` records at a time (`zero_shot.scorer`: the same code as the in-memory labeler's),
   so this process holds per record its label, confidence and the label probabilities, not its text or vector.

The review queue's texts (low confidence, the audit sample: a few) are read afterwards (`ShardedDataset.take`).
"""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from finetune_pipeline.embeddings import EmbeddingCache, embed
from finetune_pipeline.labeling.assign import RowLabeler
from finetune_pipeline.labeling.zero_shot import Predictions, other_texts, predictions, scorer
from finetune_pipeline.settings import ExecutionSettings, LabelingSettings
from finetune_pipeline.sharded_vectors import TEXT, Encoder, embed_rows, encoder_process, remote_encoder
from finetune_pipeline.shards import ShardedDataset
from finetune_pipeline.tasks import Task

BLOCK = 65_536  # records scored at a time


def row_labeler(dataset: ShardedDataset, column: str, task: Task, execution: ExecutionSettings,
                cache: EmbeddingCache | None = None) -> RowLabeler:
    """The built-in labeler for records of `dataset` whose row is in the corpus column `column`."""
    return RowLabeler(column=column,
                      predict=partial(predict_rows, dataset, task=task, execution=execution, cache=cache),
                      texts=lambda rows: dataset.take(rows, ["text"])["text"].to_list())


def predict_rows(dataset: ShardedDataset, rows: np.ndarray, labels: list[str], cfg: LabelingSettings,
                 train_texts: list[str] | None = None, train_labels: list[str] | None = None, *, task: Task,
                 execution: ExecutionSettings, cache: EmbeddingCache | None = None) -> Predictions:
    """`zero_shot.predict_labels` for the texts of the dataset's rows `rows` (module docstring)."""
    train_texts, train_labels = train_texts or [], train_labels or []
    rows = np.asarray(rows, dtype=np.int64)
    encoder = Encoder(cfg.model, cfg.batch_size, cfg.max_length)
    others = other_texts(labels, cfg, train_texts, train_labels)
    folder = Path(tempfile.mkdtemp(prefix="finetune-labeling-"))
    try:
        with encoder_process(encoder, execution, len(rows) + len(others)) as apart:
            other_vectors = embed(others, cfg.model, cfg.batch_size, cfg.max_length, cache=cache,
                                  encode=remote_encoder(encoder, execution, apart))
            vectors = embed_rows(dataset, rows, task, TEXT, encoder, execution, cache, folder,
                                 dim=other_vectors.shape[1], apart=apart)
        score, model = scorer(other_vectors, labels, cfg, train_labels)
        probs = np.empty((len(rows), len(labels)))
        for start in range(0, len(rows), BLOCK):
            probs[start:start + BLOCK] = score(vectors.take(rows[start:start + BLOCK]))
        return predictions(probs, labels, model)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
