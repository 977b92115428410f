"""Domain relevance (seed 1.1): score each record against the task's domain and reject (or flag) the ones
that do not belong, e.g. a recipe or a software manual that landed among support tickets or quotations.

What the domain is: a description and/or in-domain examples (and, optionally, out-of-domain examples), all
embedded with the MiniLM sentence embeddings of `embeddings.embed`. The reference score of a record is
- similarity: the mean cosine similarity of the record to its `top_k` most similar in-domain examples (the
  description is one more example), or
- classifier (when out-of-domain examples exist too): a logistic regression on the embeddings of both kinds,
  the score being the probability of in-domain.

calibration `corpus` (the default): an absolute cosine does not carry from one corpus to another (a short
quotation scores about 0.15 against a one-sentence description, a ticket 0.3), so the corpus itself is the
in-domain evidence and the reference score only says which part of it is the domain:
1. the core: the half of the records with the highest reference score;
2. each record's similarity to the core's centroid, and its mean similarity to its `neighbours` nearest core
   records (itself excluded);
3. each of the two as a robust z-score (median and MAD of the corpus), their sum as a robust z-score again:
   the record's relevance, in robust deviations from the corpus median;
4. off-domain: a record more than `record_cut` deviations below the median, or, in a source (file) of at
   least `source_min_records` records whose median relevance is more than `source_cut` deviations below,
   a record below the corpus median. Off-domain text arrives as whole files (a manual dropped into raw/);
   a file is judged on all its records, far steadier than one short record's score. The other chunks of a
   record's own document are not its neighbours (a document is one text; it would vouch for itself);
5. a corpus mostly of table rows with a few document files: each document is judged as a whole against the
   rows (one-sided sign test of its chunks below the rows' median relevance, p < `document_p`).
Below `min_records` records there is no distribution to calibrate against: the absolute `threshold`
(`classifier_threshold`) applies, as with calibration `absolute`.

The guard: when the filter would reject more than `max_reject_share` of its input, it raises
`DomainFilterRefused` (nothing is written; the message has the share, a histogram of the scores and what to
do), or, with `on_excess: flag`, flags those records instead of rejecting them.

A conversation is scored on its prompt (every turn before the final answer), which says what it is about.
Runs at the start of `deduplicated_corpus` (dedup/__init__.py), so a duplicate never names an off-domain
record as the one kept. Rejects carry the score, never the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from finetune_pipeline.embeddings import EmbeddingCache
from finetune_pipeline.records import StageResult, StageStats, empty_rejects, reject_rows
from finetune_pipeline.settings import DomainSettings
from finetune_pipeline.sources.files import DOCUMENT_TYPES
from finetune_pipeline.tasks import Task, task_named

STAGE = "deduplicated_corpus"
REASON = "off_domain"
EXAMPLE_SUFFIXES = (".txt", ".md")
BIN_WIDTH = 0.1
MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
MAX_CORE_SAMPLE = 5000  # nearest-neighbour similarities are taken against at most this many core records
Z_EDGES = (-8.0, -6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0)


class DomainFilterRefused(Exception):
    """The domain filter would reject more than `domain.max_reject_share` of its input (with
    `on_excess: fail`): the stage stops before it writes anything. `str(err)` is the whole explanation."""

    def __init__(self, message: str, share: float, histogram: dict[str, int]):
        super().__init__(message)
        self.share, self.histogram = share, histogram


@dataclass
class DomainStats(StageStats):
    method: str = ""  # similarity | classifier (the reference score)
    calibration: str = ""  # corpus | absolute
    policy: str = ""  # reject | flag
    threshold: float = 0.0  # the record cut in the score's unit: relevance z (corpus), cosine or probability
    source_cut: float | None = None  # corpus: a source's median relevance below -source_cut marks the source
    scored: int = 0
    off_domain: int = 0  # rejected or flagged
    off_domain_sources: int = 0  # corpus: sources judged off-domain as a whole
    reject_share: float = 0.0  # off_domain / scored
    guard: str = ""  # what the max_reject_share guard did: "" (not needed) or "flagged instead of rejecting"
    in_domain_examples: int = 0  # the description counts as one
    out_of_domain_examples: int = 0
    score_histogram: dict[str, int] = field(default_factory=dict)  # records by score bin ("0.3-0.4": n)


def read_examples(folder: str | Path) -> list[str]:
    """Every .txt/.md file under `folder` (sorted by path) as one example text; empty files are skipped."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES)
    texts = [p.read_text(encoding="utf-8", errors="replace").strip() for p in paths]
    return [t for t in texts if t]


def _embed(texts: list[str], cfg: DomainSettings, cache: EmbeddingCache | None = None, encode=None) -> np.ndarray:
    from finetune_pipeline.embeddings import embed  # torch on first use only

    return embed(texts, cfg.model, cfg.batch_size, cfg.max_length, cache=cache, encode=encode)


@dataclass
class DomainScorer:
    """Scores texts against a domain (the reference score); `threshold` in the score's unit."""

    cfg: DomainSettings
    in_domain: np.ndarray  # (n, dim) embeddings of the in-domain examples (and the description)
    classifier: object | None = None  # LogisticRegression when out-of-domain examples exist
    out_of_domain_examples: int = 0

    @classmethod
    def from_settings(cls, cfg: DomainSettings, in_texts: list[str] | None = None,
                      out_texts: list[str] | None = None, cache: EmbeddingCache | None = None,
                      encode=None) -> "DomainScorer":
        """From the settings' description and example folders, or from the texts given (benchmarks, tests);
        `cache`: where the example vectors are looked up first (embeddings.EmbeddingCache); `encode`: what
        embeds the texts the cache lacks (`embeddings.embed`'s; None: the model, in this process)."""
        if in_texts is None:
            in_texts = read_examples(cfg.examples_dir) if cfg.examples_dir else []
        if out_texts is None:
            out_texts = read_examples(cfg.out_of_domain_dir) if cfg.out_of_domain_dir else []
        in_texts = [*([cfg.description] if cfg.description else []), *in_texts]
        if not in_texts:
            raise ValueError("domain: no description and no in-domain example; set domain.description or "
                             "domain.examples_dir")
        return cls.from_embeddings(cfg, _embed(in_texts, cfg, cache, encode),
                                   _embed(out_texts, cfg, cache, encode) if out_texts else None)

    @classmethod
    def from_embeddings(cls, cfg: DomainSettings, in_domain: np.ndarray,
                        out_domain: np.ndarray | None = None) -> "DomainScorer":
        """From example embeddings (rows of unit length); a classifier when out-of-domain ones are given."""
        classifier = None
        if out_domain is not None and len(out_domain):
            from sklearn.linear_model import LogisticRegression

            x = np.concatenate([in_domain, out_domain])
            y = np.r_[np.ones(len(in_domain)), np.zeros(len(out_domain))]
            # balanced: a few in-domain examples beside many out-of-domain ones still put P = 0.5 at the border
            classifier = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=0).fit(x, y)
        return cls(cfg, in_domain, classifier, 0 if out_domain is None else len(out_domain))

    @property
    def method(self) -> str:
        return "classifier" if self.classifier is not None else "similarity"

    @property
    def threshold(self) -> float:
        """The absolute threshold (calibration absolute, or a corpus below domain.min_records)."""
        return self.cfg.classifier_threshold if self.classifier is not None else self.cfg.threshold

    def score(self, texts: list[str], cache: EmbeddingCache | None = None) -> np.ndarray:
        """(len(texts),) reference scores: mean top-k cosine similarity, or probability of in-domain."""
        if not texts:
            return np.zeros(0)
        return self.score_embeddings(_embed(texts, self.cfg, cache))

    def score_embeddings(self, x: np.ndarray) -> np.ndarray:
        """Reference scores of texts already embedded with the same model."""
        if self.classifier is not None:
            return self.classifier.predict_proba(x)[:, 1]
        similarity = x @ self.in_domain.T
        k = min(self.cfg.top_k, similarity.shape[1])
        return np.sort(similarity, axis=1)[:, -k:].mean(axis=1)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 * MAD): deviations from the median, robust to a minority of outliers."""
    median = np.median(values)
    scale = MAD_SCALE * np.median(np.abs(values - median))
    return (values - median) / max(scale, 1e-9)


BLOCK = 2048  # records scored at once (memory of BLOCK x core, never n x n); the same blocks on every path


def reference_scores(scorer: "DomainScorer", rows, n: int) -> np.ndarray:
    """`scorer.score_embeddings` of `n` records' vectors read `BLOCK` at a time through `rows(start, stop)` (an
    array's slices in memory, a spill folder's rows on the sharded path: the same blocks either way)."""
    if not n:
        return np.zeros(0)
    return np.concatenate([scorer.score_embeddings(rows(start, min(start + BLOCK, n))) for start in range(0, n, BLOCK)])


def core_records(reference: np.ndarray) -> np.ndarray:
    """The core (module docstring, step 1): the records with a reference score at or above the median, at most
    `MAX_CORE_SAMPLE` of them taken evenly over the core by reference score (deterministic, bounded cost)."""
    core = np.flatnonzero(reference >= np.median(reference))
    if len(core) > MAX_CORE_SAMPLE:
        evenly = np.linspace(0, len(core) - 1, MAX_CORE_SAMPLE).astype(int)
        core = core[np.argsort(reference[core], kind="stable")][evenly]
    return core


def document_ids(documents: list[str | None] | None) -> np.ndarray | None:
    """Per record, a number for the document it is a chunk of (-1: a row of a table); None when no record is
    a chunk."""
    if documents is None or all(d is None for d in documents):
        return None
    ids = {d: i for i, d in enumerate(sorted({d for d in documents if d is not None}))}
    return np.array([-1 if d is None else ids[d] for d in documents])


class CoreSimilarity:
    """Steps 2 of the module docstring for a block of records: each one's similarity to the core's centroid and
    its mean similarity to its `neighbours` nearest core records (itself and the other chunks of its document
    excluded). `core`: the core's record numbers, `vectors` their embeddings, `n` the records in all."""

    def __init__(self, core: np.ndarray, vectors: np.ndarray, n: int, neighbours: int,
                 documents: np.ndarray | None = None):
        centroid = vectors.mean(axis=0)
        self.vectors, self.centroid = vectors, centroid / max(np.linalg.norm(centroid), 1e-12)
        self.k = max(1, min(neighbours, len(core) - 1))
        self.position = np.full(n, -1)
        self.position[core] = np.arange(len(core))
        self.documents = documents
        self.core_documents = None if documents is None else documents[core]

    def block(self, start: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(to the centroid, to the nearest core records) of records `start .. start + len(x)`."""
        stop = start + len(x)
        block = x @ self.vectors.T
        rows = np.flatnonzero(self.position[start:stop] >= 0)
        block[rows, self.position[start:stop][rows]] = -np.inf  # a core record is not its own neighbour
        if self.documents is not None:  # nor are the other chunks of its document
            mine = self.documents[start:stop]
            block[(mine[:, None] >= 0) & (mine[:, None] == self.core_documents[None, :])] = -np.inf
        top = np.sort(block, axis=1)[:, -self.k:]
        top[np.isinf(top)] = np.nan  # fewer than k others (a tiny corpus): the mean of those there are
        with np.errstate(all="ignore"):
            nearest = np.nan_to_num(np.nanmean(top, axis=1), nan=0.0)
        return x @ self.centroid, nearest


def relevance_z(to_centroid: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Step 3: the two similarities as robust z-scores, their sum as a robust z-score again."""
    return robust_z(robust_z(to_centroid) + robust_z(nearest))


def corpus_relevance(x: np.ndarray, reference: np.ndarray, neighbours: int = 10,
                     documents: list[str | None] | None = None) -> np.ndarray:
    """Each record's relevance in robust deviations from the corpus median (module docstring, steps 1-3):
    `x` the records' unit embeddings, `reference` their reference scores, `documents` per record the document
    it is a chunk of (None: a row of a table, a record of its own). The chunks of one document are one text:
    they are not each other's nearest-neighbour evidence (a 45-chunk manual would otherwise vouch for itself)."""
    return relevance_of(lambda start, stop: x[start:stop], lambda rows: x[rows], len(x), reference, neighbours,
                        documents)


def relevance_of(rows, take, n: int, reference: np.ndarray, neighbours: int,
                 documents: list[str | None] | None) -> np.ndarray:
    """`corpus_relevance` of `n` records' vectors read through `rows(start, stop)` (`BLOCK` at a time) and
    `take(record numbers)` (the core's)."""
    core = core_records(reference)
    similarity = CoreSimilarity(core, take(core), n, neighbours, document_ids(documents))
    parts = [similarity.block(start, rows(start, min(start + BLOCK, n))) for start in range(0, n, BLOCK)]
    return relevance_z(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def score_histogram(scores: np.ndarray, low: float = 0.0) -> dict[str, int]:
    """Records per 0.1-wide score bin from `low` to 1.0, every bin listed (and one below `low` when any)."""
    edges = np.round(np.arange(low, 1.0 + 1e-9, BIN_WIDTH), 2)
    counts = {f"< {low:.1f}": int((scores < low).sum())} if (scores < low).any() else {}
    for start, end in zip(edges[:-1], edges[1:]):
        inside = (scores >= start) & ((scores < end) if end < 1.0 else (scores <= end))
        counts[f"{start:.1f}-{end:.1f}"] = int(inside.sum())
    return counts


def z_histogram(z: np.ndarray) -> dict[str, int]:
    """Records per relevance bin (robust deviations from the corpus median), every bin listed."""
    edges = [-np.inf, *Z_EDGES, np.inf]
    counts = {}
    for start, end in zip(edges[:-1], edges[1:]):
        label = f"< {end:g}" if start == -np.inf else f">= {start:g}" if end == np.inf else f"{start:g} to {end:g}"
        counts[label] = int(((z >= start) & (z < end)).sum())
    return counts


def record_texts(corpus: pl.DataFrame, task: Task | None = None) -> list[str]:
    """What is scored: the kind's `Task.domain_texts` (a conversation's prompt, any other record's text).
    Without a task, the default kind's (which scores a record's prompt where the corpus has prompts)."""
    return (task or task_named(None)).domain_texts(corpus)


def record_documents(corpus: pl.DataFrame) -> list[str | None] | None:
    """Per record, the document it is a chunk of (its source_uri), or None for a row of a table."""
    if not {"source_uri", "source_type"} <= set(corpus.columns):
        return None
    return [uri if kind in DOCUMENT_TYPES.values() else None
            for uri, kind in corpus.select("source_uri", "source_type").iter_rows()]


@dataclass
class _Verdict:
    below: np.ndarray  # bool per record: off-domain
    score: np.ndarray  # the score shown per record (relevance z, cosine or probability)
    detail: list[str]  # per record: why it is off-domain ("" for the others)
    histogram: dict[str, int]
    calibration: str
    cut: float
    sources_off: int = 0
    unit: str = ""


def _absolute(scores: np.ndarray, scorer: DomainScorer, why: str = "") -> _Verdict:
    unit = "probability of in-domain" if scorer.method == "classifier" else \
        "mean cosine similarity to the domain's nearest examples"
    setting = "domain.classifier_threshold" if scorer.method == "classifier" else "domain.threshold"
    below = scores < scorer.threshold
    detail = [""] * len(scores)
    for i in np.flatnonzero(below):
        detail[i] = (f"relevance score {scores[i]:.3f} ({unit}) below {setting} {scorer.threshold}{why}; if such "
                     f"records belong, add examples like them to domain.examples_dir or lower {setting}")
    return _Verdict(below, scores, detail, score_histogram(scores), "absolute",
                    scorer.threshold, unit=f"{unit}; cut {setting} {scorer.threshold}")


def _calibrated(z: np.ndarray, sources: pl.Series | None, cfg: DomainSettings,
                documents: list[str | None] | None = None) -> _Verdict:
    """The verdict from each record's relevance `z` (`corpus_relevance`), its source and its document."""
    below = z < -cfg.record_cut
    source_median = np.full(len(z), np.nan)
    sources_off = 0
    if sources is not None:
        frame = pl.DataFrame({"source": sources, "z": z}).with_row_index("i")
        per_source = frame.group_by("source").agg(pl.len().alias("n"), pl.col("z").median().alias("median"))
        off = per_source.filter((pl.col("n") >= cfg.source_min_records) & (pl.col("median") < -cfg.source_cut))
        sources_off = off.height
        marked = frame.join(off.select("source", "median"), on="source", how="left").sort("i")
        source_median = marked["median"].fill_null(np.nan).to_numpy()
        below |= ~np.isnan(source_median) & (z < 0)
    sign = _documents_among_rows(z, documents, cfg) if documents is not None else {}
    below[list(sign)] = True  # a document is one text: judged as a whole, all its chunks go
    sources_off += len({documents[i] for i in sign})
    unit = "relevance z: robust deviations from the corpus median"
    detail = [""] * len(z)
    for i in np.flatnonzero(below):
        value, median = z[i], source_median[i]
        if value < -cfg.record_cut:
            why = f"below -domain.record_cut {-cfg.record_cut:g}"
        elif i in sign and np.isnan(median):
            rows_median, (lower, n), p = sign[i]
            why = (f"a chunk of a document whose chunks fall below the table rows' median relevance "
                   f"{rows_median:.2f} {lower} times of {n} (sign test p {p:.2g}, below domain.document_p "
                   f"{cfg.document_p:g})")
        else:
            why = (f"below the corpus median, in a source whose median relevance {median:.2f} is below "
                   f"-domain.source_cut {-cfg.source_cut:g}")
        loosen = "lower domain.document_p (0: off)" if "document_p" in why else \
            "raise domain.record_cut / domain.source_cut"
        detail[i] = (f"relevance {value:.2f} ({unit}) {why}; if such records belong, add examples like them "
                     f"to domain.examples_dir or {loosen}")
    return _Verdict(below, z, detail, z_histogram(z), "corpus", -cfg.record_cut, sources_off,
                    unit=f"{unit}; cut -domain.record_cut {-cfg.record_cut:g}, or a source's median below "
                         f"-domain.source_cut {-cfg.source_cut:g}, or a document among table rows below their "
                         f"median more often than domain.document_p {cfg.document_p:g} allows")


def _documents_among_rows(z: np.ndarray, documents: list[str | None],
                          cfg: DomainSettings) -> dict[int, tuple[float, tuple[int, int], float]]:
    """A corpus mostly of table rows (the user's labeled records) with a few document files: rows and chunks
    are different evidence (a manual's chunks are alike, a table's rows are not), so a document is judged as a
    whole against the rows: off-domain, all its chunks, when they fall below the rows' median relevance more
    often than chance allows (one-sided sign test, p < domain.document_p). Per chunk of such a document: (the
    rows' median, (chunks below, chunks), p)."""
    rows = np.array([d is None for d in documents])
    if cfg.document_p <= 0 or rows.sum() * 2 < len(z):
        return {}
    from scipy.stats import binom

    rows_median = float(np.median(z[rows]))
    by_document: dict[str, list[int]] = {}
    for i, d in enumerate(documents):
        if d is not None:
            by_document.setdefault(d, []).append(i)
    marked = {}
    for chunks in by_document.values():
        if len(chunks) < cfg.source_min_records:
            continue
        lower = int((z[chunks] < rows_median).sum())
        p = float(binom.sf(lower - 1, len(chunks), 0.5))  # P(at least `lower` of n below) under no difference
        if p < cfg.document_p:
            marked.update({i: (rows_median, (lower, len(chunks)), p) for i in chunks})
    return marked


def refusal_message(corpus: pl.DataFrame, verdict: _Verdict, cfg: DomainSettings) -> str:
    """Why the stage stopped and what to do: the share, the histogram, the sources most affected."""
    n, off = len(verdict.below), int(verdict.below.sum())
    top = max(verdict.histogram.values()) or 1
    bars = [f"  {label:>10} {count:>7} {'#' * round(30 * count / top)}" for label, count in verdict.histogram.items()]
    lines = [f"domain filter: {off} of {n} records ({off / n:.1%}) would be rejected as off_domain, more than "
             f"domain.max_reject_share {cfg.max_reject_share:g}; the stage stopped and wrote nothing.",
             f"Scores ({verdict.unit}):", *bars]
    if "source_uri" in corpus.columns:
        counts = pl.DataFrame({"source": corpus["source_uri"], "off": verdict.below}).filter(pl.col("off")) \
            .group_by("source").len().sort(["len", "source"], descending=[True, False])
        listed = ", ".join(f"{s} ({c})" for s, c in counts.head(3).iter_rows())
        more = f" and {counts.height - 3} more" if counts.height > 3 else ""
        lines.append(f"Would-be rejects by source: {listed}{more}.")
    cut = ("domain.record_cut / domain.source_cut (larger: fewer rejects)" if verdict.calibration == "corpus"
           else "domain.threshold (or domain.classifier_threshold): lower")
    lines += ["What to do:",
              "- if these records belong to the domain: put a few of them (10-20, every topic) as .txt files in "
              "domain.examples_dir, or loosen the cut: " + cut + ";",
              "- to keep them and decide later: set domain.policy: flag (kept, with off_domain in quality_flags), "
              "or domain.on_excess: flag (flag only when the share is exceeded);",
              f"- if they really are off-domain: remove those files from raw/, or raise domain.max_reject_share "
              f"above {off / n:.2f}."]
    return "\n".join(lines)


def judge(n: int, reference: np.ndarray, scorer: DomainScorer, cfg: DomainSettings, relevance,
          sources: pl.Series | None, documents: list[str | None] | None) -> _Verdict:
    """The verdict on `n` records from their reference scores: calibrated on the corpus (`relevance()`: each
    record's `corpus_relevance`, asked for only then) when the settings say so and there are records enough,
    else against the absolute threshold. `sources`: each record's source_uri; `documents`: `record_documents`."""
    if cfg.calibration == "corpus" and n >= cfg.min_records:
        return _calibrated(relevance(), sources.fill_null("") if sources is not None else None, cfg, documents)
    why = "" if cfg.calibration == "absolute" else \
        f" (absolute: {n} records, fewer than domain.min_records {cfg.min_records} to calibrate on)"
    return _absolute(reference, scorer, why)


def decide(verdict: _Verdict, scorer: DomainScorer, cfg: DomainSettings, sources) -> tuple[str, DomainStats]:
    """(the policy applied, the statistics); raises `DomainFilterRefused` when more than
    domain.max_reject_share would be rejected and domain.on_excess is fail (`sources()`: the records'
    `source_uri` as a frame, for the refusal's list of sources)."""
    n = len(verdict.below)
    off = int(verdict.below.sum())
    share = off / n if n else 0.0
    policy, guard = cfg.policy, ""
    if policy == "reject" and share > cfg.max_reject_share:
        if cfg.on_excess == "fail":
            raise DomainFilterRefused(refusal_message(sources(), verdict, cfg), share, verdict.histogram)
        policy, guard = "flag", (f"flagged instead of rejecting: {share:.1%} off-domain, more than "
                                 f"domain.max_reject_share {cfg.max_reject_share:g} (domain.on_excess: flag)")
    return policy, DomainStats(
        method=scorer.method, calibration=verdict.calibration, policy=policy, threshold=verdict.cut,
        source_cut=-cfg.source_cut if verdict.calibration == "corpus" else None, scored=n, off_domain=off,
        off_domain_sources=verdict.sources_off, reject_share=round(share, 4), guard=guard,
        in_domain_examples=len(scorer.in_domain), out_of_domain_examples=scorer.out_of_domain_examples,
        score_histogram=verdict.histogram)


def domain_filter(corpus: pl.DataFrame, cfg: DomainSettings, scorer: DomainScorer | None = None,
                  cache: EmbeddingCache | None = None, embeddings: np.ndarray | None = None,
                  task: Task | None = None) -> StageResult:
    """Score every record; off-domain ones are rejected as off_domain (detail: the score), or flagged.
    Raises DomainFilterRefused, before returning anything, when more than domain.max_reject_share would be
    rejected and domain.on_excess is fail. `cache`: vectors of texts embedded before are reused;
    `embeddings`: the records' vectors when the caller has them (benchmarks); `task`: the kind whose
    `domain_texts` are scored (`record_texts`)."""
    scorer = scorer or DomainScorer.from_settings(cfg, cache=cache)
    x = embeddings if embeddings is not None else _embed(record_texts(corpus, task), cfg, cache) if corpus.height \
        else np.zeros((0, scorer.in_domain.shape[1]), dtype=np.float32)
    reference = reference_scores(scorer, lambda start, stop: x[start:stop], len(x))
    documents = record_documents(corpus)
    verdict = judge(corpus.height, reference, scorer, cfg,
                    lambda: corpus_relevance(x, reference, cfg.neighbours, documents),
                    corpus["source_uri"] if "source_uri" in corpus.columns else None, documents)
    policy, stats = decide(verdict, scorer, cfg, lambda: corpus.select("source_uri") if "source_uri" in corpus.columns
                           else pl.DataFrame())
    marked = corpus.with_columns(pl.Series("_below", verdict.below, dtype=pl.Boolean),
                                 pl.Series("_detail", verdict.detail, dtype=pl.String))
    if policy == "flag":
        flags = pl.col("quality_flags") if "quality_flags" in corpus.columns else pl.lit([], dtype=pl.List(pl.String))
        kept = marked.with_columns(pl.when(pl.col("_below")).then(flags.list.concat(pl.lit([REASON])))
                                   .otherwise(flags).alias("quality_flags"))
        return StageResult(kept=kept.drop("_below", "_detail"), rejected=empty_rejects(), stats=stats)
    rejected = reject_rows(marked.filter(pl.col("_below")), STAGE, REASON, pl.col("_detail"))
    return StageResult(kept=marked.filter(~pl.col("_below")).drop("_below", "_detail"), rejected=rejected, stats=stats)
