"""Domain relevance filter: precision and recall on the sample's support tickets mixed with unrelated texts.

In-domain: every ticket text of the sample data root's tabular exports and .txt/.md documents (the planted
problems included: they are still tickets). Off-domain: the hand-written texts of
finetune_pipeline_tests/domain_texts.py (recipes, sports, legal boilerplate, encyclopedia, news, science, and
`near_domain` texts that share the shop's words). "Positive" is off-domain: precision = rejected records
that are off-domain / rejected; recall = off-domain records rejected / off-domain records.

Domains compared, each at its threshold sweep:
  description      the sample's domain.description alone
  examples         description + data/domain/in_domain/ (8 tickets written apart from the sample)
  labels           the sample's four label descriptions as examples (no domain settings at all)
  classifier       in-domain examples + out-of-domain examples of the other kinds (leave one kind out: each
                   kind is scored by a classifier that never saw a text of that kind)

    .venv/bin/python scripts/bench_domain.py
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from finetune_pipeline.domain import DomainScorer, read_examples  # noqa: E402
from finetune_pipeline.embeddings import embed  # noqa: E402
from finetune_pipeline.settings import load_settings  # noqa: E402
from finetune_pipeline_tests.domain_texts import OFF_DOMAIN  # noqa: E402

DATA = REPO / "data"
SIMILARITY_SWEEP = [round(t, 2) for t in np.arange(0.05, 0.36, 0.05)]
CLASSIFIER_SWEEP = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def sample_tickets() -> list[str]:
    raw = DATA / "raw"
    texts = [row["text"] for row in csv.DictReader((raw / "exports" / "tickets.csv").open(encoding="utf-8"))]
    for line in (raw / "exports" / "tickets.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            texts.append(json.loads(line)["text"])
        except (ValueError, KeyError):
            continue  # the sample's planted malformed line
    documents = sorted(p for p in (raw / "tickets").rglob("*") if p.suffix in (".txt", ".md"))
    texts += [p.read_text(encoding="utf-8") for p in documents]
    return [t for t in texts if t and t.strip()]


def counts(scores_in: np.ndarray, scores_out: np.ndarray, threshold: float) -> dict:
    rejected_out, rejected_in = int((scores_out < threshold).sum()), int((scores_in < threshold).sum())
    rejected = rejected_out + rejected_in
    precision = rejected_out / rejected if rejected else float("nan")
    recall = rejected_out / len(scores_out)
    f1 = 2 * precision * recall / (precision + recall) if rejected_out else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "in_domain_rejected": rejected_in, "off_domain_rejected": rejected_out}


def table(name: str, scores_in, scores_out, sweep, kinds: list[str], chosen: float) -> list[str]:
    lines = [f"### {name}", "", f"in-domain scores: min {scores_in.min():.3f}, 5th percentile "
             f"{np.percentile(scores_in, 5):.3f}, median {np.median(scores_in):.3f}; off-domain: median "
             f"{np.median(scores_out):.3f}, max {scores_out.max():.3f}", "",
             "| threshold | precision | recall | F1 | in-domain rejected | off-domain rejected |",
             "|---|---|---|---|---|---|"]
    for t in sweep:
        c = counts(scores_in, scores_out, t)
        mark = " **(default)**" if abs(t - chosen) < 1e-9 else ""
        lines.append(f"| {t:.2f}{mark} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
                     f"{c['in_domain_rejected']}/{len(scores_in)} | {c['off_domain_rejected']}/{len(scores_out)} |")
    kinds_arr = np.array(kinds)
    per_kind = [f"{k} {int((scores_out[kinds_arr == k] < chosen).sum())}/{int((kinds_arr == k).sum())}"
                for k in OFF_DOMAIN]
    lines += ["", f"off-domain rejected by kind at {chosen}: " + ", ".join(per_kind), ""]
    return lines


def main() -> None:
    settings = load_settings(DATA)
    cfg = settings.domain
    tickets = sample_tickets()
    kinds = [k for k, texts in OFF_DOMAIN.items() for _ in texts]
    off = [t for texts in OFF_DOMAIN.values() for t in texts]
    examples = read_examples(cfg.examples_dir) if cfg.examples_dir else []
    start = time.perf_counter()
    vec = lambda texts: embed(texts, cfg.model, cfg.batch_size, cfg.max_length)  # noqa: E731
    x_in, x_off = vec(tickets), vec(off)
    x_desc = vec([cfg.description]) if cfg.description else np.zeros((0, x_in.shape[1]), dtype=np.float32)
    x_examples = vec(examples) if examples else np.zeros((0, x_in.shape[1]), dtype=np.float32)
    x_labels = vec(list(settings.labeling.label_descriptions.values()))
    embed_s = time.perf_counter() - start

    out = [f"{len(tickets)} in-domain tickets, {len(off)} off-domain texts ({len(OFF_DOMAIN)} kinds), "
           f"{len(examples)} in-domain examples; embedding {len(tickets) + len(off)} texts took {embed_s:.1f} s", ""]
    scorers = {
        "description only": DomainScorer.from_embeddings(cfg, x_desc),
        "description + in-domain examples (the sample's setting)": DomainScorer.from_embeddings(
            cfg, np.concatenate([x_desc, x_examples])),
        "label descriptions as examples": DomainScorer.from_embeddings(cfg, x_labels),
    }
    for name, scorer in scorers.items():
        if len(scorer.in_domain):
            out += table(name, scorer.score_embeddings(x_in), scorer.score_embeddings(x_off), SIMILARITY_SWEEP,
                         kinds, cfg.threshold)
    # classifier: each kind of off-domain text scored by a classifier trained without any text of that kind
    kinds_arr = np.array(kinds)
    in_domain = np.concatenate([x_desc, x_examples])
    scores_off = np.empty(len(off))
    for kind in OFF_DOMAIN:
        scorer = DomainScorer.from_embeddings(cfg, in_domain, x_off[kinds_arr != kind])
        scores_off[kinds_arr == kind] = scorer.score_embeddings(x_off[kinds_arr == kind])
    # the tickets (never training data) by the classifier trained on every kind
    scores_in = DomainScorer.from_embeddings(cfg, in_domain, x_off).score_embeddings(x_in)
    out += table("classifier (in-domain examples + out-of-domain examples, leave one kind out)", scores_in,
                 scores_off, CLASSIFIER_SWEEP, kinds, cfg.classifier_threshold)
    out += [f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"]
    print("\n".join(out))


if __name__ == "__main__":
    main()
