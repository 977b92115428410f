"""Language identification: langid.py's model and algorithm (Lui & Baldwin 2012: byte n-gram naive Bayes
over 97 languages), run on many texts at once in numpy.

Written here for speed: langid.py walks its n-gram automaton byte by byte in Python and multiplies a dense
7,480-feature vector per text (about 1.5 ms per short text, most of the cleaning time without NER). Here the
automaton advances every text of a batch one byte per numpy step, each automaton state carries its summed
per-language log-probabilities, and the scores are one sparse sum per text. The model is langid.py's own
(shipped inside its PyPI package); `finetune_pipeline_tests/test_language_id.py` checks that the language and
probability equal `langid.langid.LanguageIdentifier(norm_probs=True).classify` on a set of texts.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.sparse import csr_matrix

_CHUNK = 128  # texts per numpy walk (sorted by length, so padding stays small)


class BatchLanguageIdentifier:
    """langid.py's classifier over lists of texts: `classify_batch(texts)` -> [(ISO 639-1 code, probability)]."""

    def __init__(self):
        from langid.langid import LanguageIdentifier, model

        reference = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        ptc = np.asarray(reference.nb_ptc, dtype=np.float64)  # features x languages, log P(feature | language)
        self.classes = [str(c) for c in reference.nb_classes]
        self.prior = np.asarray(reference.nb_pc, dtype=np.float64)
        nextmove = np.asarray(reference.tk_nextmove, dtype=np.int32)
        states = len(nextmove) // 256
        self.nextmove = nextmove  # the state after (state << 8) + byte
        # Entering a state emits its features: its row holds the sum of their log-probabilities.
        self.state_scores = np.zeros((states, ptc.shape[1]), dtype=np.float64)
        for state, features in reference.tk_output.items():
            for feature in features:
                self.state_scores[state] += ptc[feature]

    def scores(self, texts: list[str]) -> np.ndarray:
        """Log-probability of each text under each language (texts x languages), as langid's `nb_classprobs`."""
        encoded = [text.encode("utf-8") for text in texts]
        out = np.tile(self.prior, (len(encoded), 1))
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), _CHUNK):
            chunk = order[start:start + _CHUNK]
            out[chunk] += self._chunk_scores([encoded[i] for i in chunk])
        return out

    def _chunk_scores(self, chunk: list[bytes]) -> np.ndarray:
        """Texts sorted longest first: at byte t the texts still running are a prefix of the chunk."""
        lengths = np.array([len(b) for b in chunk])
        width = int(lengths[0])
        data = np.zeros((width, len(chunk)), dtype=np.int32)  # byte t of every text in one row
        for i, raw in enumerate(chunk):
            data[:len(raw), i] = np.frombuffer(raw, dtype=np.uint8)
        visited = np.zeros((width, len(chunk)), dtype=np.int32)
        running = np.searchsorted(-lengths, -np.arange(width), side="left")  # texts longer than t bytes
        state = np.zeros(len(chunk), dtype=np.int32)
        nextmove = self.nextmove
        for t in range(width):
            n = running[t]
            state[:n] = nextmove[(state[:n] << 8) + data[t, :n]]
            visited[t, :n] = state[:n]
        valid = np.arange(width)[:, None] < lengths[None, :]
        # one count per (text, state), then the states' summed log-probabilities: langid's feature dot product
        keys, counts = np.unique(np.nonzero(valid)[1].astype(np.int64) * len(self.state_scores) + visited[valid],
                                 return_counts=True)
        text_of, state_of = np.divmod(keys, len(self.state_scores))
        visits = csr_matrix((counts.astype(np.float64), (text_of, state_of)),
                            shape=(len(chunk), len(self.state_scores)))
        return visits @ self.state_scores

    def classify_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        """The most probable language of each text and its probability (langid's `norm_probs=True`)."""
        if not texts:
            return []
        scores = self.scores(texts)
        best = scores.argmax(1)  # normalising keeps the order, so langid's argmax is this one
        # langid's normalisation 1 / sum_j exp(score_j - score_i), for the best language only
        probs = 1 / np.exp(scores - scores[np.arange(len(texts)), best][:, None]).sum(1)
        return [(self.classes[b], float(p)) for b, p in zip(best, probs)]


@lru_cache(maxsize=1)
def language_identifier() -> BatchLanguageIdentifier:
    """One identifier per process (the model loads in about a second)."""
    return BatchLanguageIdentifier()
