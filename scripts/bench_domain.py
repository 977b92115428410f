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

Then the corpus-calibrated filter (domain.calibration: corpus, the default) and its guard
(domain.max_reject_share) on the sample tickets and on real corpora built at run time from Debian text, each
with an off-domain block of another kind of source mixed in at about 4%, as whole files:
  quotations   fortunes' quotations of 7 categories, 20-300 characters (package `fortunes`; one JSONL), with
               100 chunks of 3 long software documents from /usr/share/doc (a changelog, a text manual, HTML)
  commands     man-db's one-line command descriptions (`apropos -s 1 .`), with 44 long fortunes passages
               (400-1500 characters: poems, literature, anecdotes; one file per fortunes category)
  packages     1,500 `apt-cache dumpavail` synopses of the `python` section, with 60 chunks of 3 other documents
Per corpus and mode (the description alone at the absolute threshold, the old default; the description alone,
calibrated; + 20 held-out in-domain examples; + 20 out-of-domain examples, chunks of 20 other documents):
in-domain records lost, off-domain records caught, and the guard's outcome at domain.max_reject_share.

    .venv/bin/python scripts/bench_domain.py                 # both parts
    .venv/bin/python scripts/bench_domain.py --only real     # the real corpora only (or --only sample)
    .venv/bin/python scripts/bench_domain.py --root ROOT     # a cleaned data root (bench_real_data.py's) instead
Embeddings of the real corpora are cached in --cache (default /tmp/bench_domain_cache): a rerun costs seconds.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import html
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import polars as pl  # noqa: E402

from finetune_pipeline.domain import (DomainFilterRefused, DomainScorer, corpus_relevance, domain_filter,  # noqa: E402
                                      read_examples, record_documents)
from finetune_pipeline.embeddings import EmbeddingCache, embed  # noqa: E402
from finetune_pipeline.layout import DataRoot  # noqa: E402
from finetune_pipeline.records import corpus_frame  # noqa: E402
from finetune_pipeline.settings import DomainSettings  # noqa: E402
from finetune_pipeline.settings import load_settings  # noqa: E402
from finetune_pipeline.sources.files import DOCUMENT_TYPES  # noqa: E402
from finetune_pipeline.sources.tabular import TABULAR_TYPES  # noqa: E402
from finetune_pipeline.stored import stored_frame  # noqa: E402
from finetune_pipeline_tests.domain_texts import OFF_DOMAIN  # noqa: E402

DATA = REPO / "data"
OFF_DOMAIN_TEXTS = [t for texts in OFF_DOMAIN.values() for t in texts]
SIMILARITY_SWEEP = [round(t, 2) for t in np.arange(0.05, 0.36, 0.05)]
CLASSIFIER_SWEEP = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def sample_ticket_rows() -> list[tuple[str, str]]:
    """(text, source file) of every ticket of the sample: CSV rows, JSONL rows, one document per file."""
    raw = DATA / "raw"
    rows = [(row["text"], "raw/exports/tickets.csv")
            for row in csv.DictReader((raw / "exports" / "tickets.csv").open(encoding="utf-8"))]
    for line in (raw / "exports" / "tickets.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append((json.loads(line)["text"], "raw/exports/tickets.jsonl"))
        except (ValueError, KeyError):
            continue  # the sample's planted malformed line
    documents = sorted(p for p in (raw / "tickets").rglob("*") if p.suffix in (".txt", ".md"))
    rows += [(p.read_text(encoding="utf-8"), str(p.relative_to(DATA))) for p in documents]
    return [(t, s) for t, s in rows if t and t.strip()]


def sample_tickets() -> list[str]:
    return [t for t, _ in sample_ticket_rows()]


def ticket_sources() -> list[str]:
    return [s for _, s in sample_ticket_rows()]


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


def sample_part() -> None:
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
    print("\n".join(out))
    calibrated_sample(cfg, tickets, x_in, x_off)


# ---- the corpus-calibrated filter and its guard ------------------------------------------------------------

FORTUNES = Path("/usr/share/games/fortunes")
QUOTE_CATEGORIES = ("love", "work", "education", "politics", "science", "wisdom", "food")
LONG_CATEGORIES = ("songs-poems", "literature", "startrek", "people", "miscellaneous", "humorists")
DOC = Path("/usr/share/doc")
GUARD = DomainSettings().max_reject_share


def squash(text: str) -> str:
    return " ".join(text.split())


def fortunes(categories, low: int, high: int) -> list[tuple[str, str]]:
    """(text, category) of every fortune of those categories whose length is within [low, high]."""
    out = []
    for category in categories:
        for item in (FORTUNES / category).read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            if low <= len(text := squash(item)) <= high:
                out.append((text, category))
    return out


def commands() -> list[str]:
    """man-db's one-line description of every installed command, `name - what it does`, once per name."""
    lines = subprocess.run(["apropos", "-s", "1", "."], capture_output=True, text=True, check=True).stdout
    out, seen = [], set()
    for line in lines.splitlines():
        match = re.match(r"^(\S+) \(1\)\s+- (.+)$", line)
        if match and "unknown subject" not in match.group(2) and match.group(1) not in seen:
            seen.add(match.group(1))
            out.append(f"{match.group(1)} - {match.group(2).strip()}")
    return out


def python_packages() -> list[str]:
    """`package: synopsis` of every package of the archive's python section (apt-cache dumpavail)."""
    listing = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    rows = {}
    for block in listing.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Section|Description): (.*)$", block, flags=re.M))
        if fields.get("Section") == "python" and fields.get("Description"):
            rows.setdefault(fields["Package"], f"{fields['Package']}: {fields['Description'].strip()}")
    return sorted(rows.values())


def read_doc(path: Path) -> str:
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", errors="replace")
    if ".htm" in path.name:
        text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
        text = html.unescape(re.sub(r"(?s)<[^>]+>", "\n", text))
    return text


def doc_chunks(path: Path, low: int = 300, high: int = 1000) -> list[str]:
    """A document as the pipeline chunks it, roughly: paragraphs joined up to `low` characters, cut at `high`."""
    out, current = [], ""
    for paragraph in re.split(r"\n\s*\n", read_doc(path)):
        current = f"{current} {squash(paragraph)}".strip()
        if len(current) >= low:
            out.append(current[:high])
            current = ""
    return out


def long_documents(rng: random.Random) -> dict[str, list[Path]]:
    """Documents of /usr/share/doc with at least 25 chunks, by kind (html, text, changelog), shuffled."""
    kinds = {"html": [], "text": [], "changelog": []}
    patterns = {"html": ("*.html",), "text": ("*.txt", "*.txt.gz"), "changelog": ("changelog*.gz", "NEWS*.gz")}
    for kind, globs in patterns.items():
        paths = sorted({p for g in globs for p in DOC.rglob(g) if p.is_file() and p.stat().st_size > 20000})
        rng.shuffle(paths)
        kinds[kind] = paths
    return kinds


def take_chunks(paths: list[Path], n: int) -> list[tuple[str, str]]:
    """`n` chunks spread evenly over the documents given, (text, the document's path)."""
    per = -(-n // len(paths))
    out = []
    for path in paths:
        chunks = doc_chunks(path)
        out += [(c, str(path)) for c in chunks[::max(1, len(chunks) // per)][:per]]
    return out[:n]


def real_corpora() -> list[dict]:
    """The three real corpora (module docstring); each: in-domain (text, source), off-domain (text, source),
    20 held-out in-domain examples, 20 out-of-domain examples (chunks of other documents), a description."""
    rng = random.Random(0)
    docs = long_documents(rng)
    big = {kind: [p for p in paths if len(doc_chunks(p)) >= 25][:3] for kind, paths in docs.items()}
    others = [p for paths in docs.values() for p in paths if not any(p in b for b in big.values())]
    out_examples = [doc_chunks(p)[0] for p in others if doc_chunks(p)][:20]
    corpora = []
    if FORTUNES.exists():
        quotes = fortunes(QUOTE_CATEGORIES, 20, 300)
        rng.shuffle(quotes)
        corpora.append({"name": "quotations", "description": "Famous quotations, sayings and witticisms.",
                        "in": [(t, "raw/quotations.jsonl") for t, _ in quotes[20:]],
                        "examples": [t for t, _ in quotes[:20]],
                        "off": take_chunks([big["changelog"][0], big["text"][0], big["html"][0]], 100)})
    else:
        print("quotations, commands: skipped (no /usr/share/games/fortunes: apt-get install fortunes)")
    if FORTUNES.exists():
        lines = commands()
        rng.shuffle(lines)
        passages = fortunes(LONG_CATEGORIES, 400, 1500)
        rng.shuffle(passages)
        corpora.append({"name": "commands", "description": "One-line descriptions of what command-line programs do.",
                        "in": [(t, "raw/whatis.jsonl") for t in lines[20:]], "examples": lines[:20],
                        "off": [(t, f"raw/fortunes/{c}.txt") for t, c in passages[:44]]})
    synopses = python_packages()
    rng.shuffle(synopses)
    corpora.append({"name": "packages", "description": "Debian packages of Python modules and tools, each with its "
                    "one-line synopsis.", "in": [(t, "raw/packages.jsonl") for t in synopses[20:1520]],
                    "examples": synopses[:20],
                    "off": take_chunks([big["changelog"][1], big["text"][1], big["html"][1]], 60)})
    for corpus in corpora:
        corpus["out_examples"] = out_examples
    return corpora


def frame(rows: list[tuple[str, str]], prefix: str) -> pl.DataFrame:
    return corpus_frame([{"record_id": f"{prefix}{i}", "text": t, "source_uri": s, "source_type": source_type(s),
                          "locator": f"chunk {i}", "ingested_at": "2026-01-01T00:00:00"}
                         for i, (t, s) in enumerate(rows)])


def source_type(uri: str) -> str:
    """What collection would call the file: a table's type, else a document's (a .gz text counted as txt)."""
    suffix = Path(uri).suffix.lower()
    return TABULAR_TYPES.get(suffix) or DOCUMENT_TYPES.get(suffix, "txt")


def outcome(cfg: DomainSettings, scorer: DomainScorer, records: pl.DataFrame, x: np.ndarray, n_in: int) -> dict:
    """What the filter would reject (the guard lifted), and what the guard at its default does with it."""
    result = domain_filter(records, cfg.model_copy(update={"max_reject_share": 1.0}), scorer, embeddings=x)
    rejected = set(result.rejected["record_id"])
    lost = sum(1 for r in records["record_id"][:n_in] if r in rejected)
    caught = len(rejected) - lost
    share = len(rejected) / records.height
    try:
        domain_filter(records, cfg, scorer, embeddings=x)
        guard = f"passes ({share:.1%} <= {GUARD:g})"
    except DomainFilterRefused:
        guard = f"**fails** the stage ({share:.1%} > {GUARD:g})"
    return {"lost": lost, "caught": caught, "share": share, "guard": guard, "calibration": result.stats.calibration}


def mode_table(title: str, records: pl.DataFrame, x: np.ndarray, n_in: int, modes: dict) -> list[str]:
    n_off = records.height - n_in
    lines = [f"### {title}", "", "| mode | in-domain lost | off-domain caught | guard (max_reject_share) |",
             "|---|---|---|---|"]
    for name, (cfg, scorer) in modes.items():
        o = outcome(cfg, scorer, records, x, n_in)
        caught = f"{o['caught']}/{n_off} ({o['caught'] / n_off:.3f})" if n_off else "–"
        lines.append(f"| {name} | {o['lost']}/{n_in} ({o['lost'] / n_in:.3f}) | {caught} | {o['guard']} |")
    cfg, scorer = modes["description alone, calibrated (the default)"]
    if records.height >= cfg.min_records:  # each file's median relevance (what domain.source_cut judges)
        z = corpus_relevance(x, scorer.score_embeddings(x), cfg.neighbours, record_documents(records))
        medians = pl.DataFrame({"source": records["source_uri"], "z": z}).group_by("source").agg(
            pl.len(), pl.col("z").median()).filter(pl.col("len") >= cfg.source_min_records).sort("z")
        lines += ["", "median relevance per file of at least 3 records (description alone, calibrated): " + ", ".join(
            f"{Path(source).name} {median:.2f}" for source, _, median in medians.iter_rows())]
    return lines + [""]


def modes_for(description: str, vec, examples: list[str], out_examples: list[str] | None) -> dict:
    base = DomainSettings(description=description)
    x_desc = vec([description])
    modes = {"description alone, absolute 0.15 (the old default)": (
                 base.model_copy(update={"calibration": "absolute"}), DomainScorer.from_embeddings(base, x_desc)),
             "description alone, calibrated (the default)": (base, DomainScorer.from_embeddings(base, x_desc))}
    if examples:
        x_in = np.concatenate([x_desc, vec(examples)])
        modes[f"+ {len(examples)} in-domain examples"] = (base, DomainScorer.from_embeddings(base, x_in))
        if out_examples:
            modes[f"+ {len(examples)} in-domain and {len(out_examples)} out-of-domain examples"] = (
                base, DomainScorer.from_embeddings(base, x_in, vec(out_examples)))
    return modes


def calibrated_sample(cfg, tickets: list[str], x_in, x_off) -> None:
    """The sample tickets under the calibrated filter: alone, with one unrelated file, with the 42 texts."""
    sources = ticket_sources()
    desc = cfg.description
    vec = lambda texts: embed(texts, cfg.model, cfg.batch_size, cfg.max_length)  # noqa: E731
    examples = read_examples(cfg.examples_dir) if cfg.examples_dir else []
    modes = modes_for(desc, vec, examples, None)
    kinds = [k for k, texts in OFF_DOMAIN.items() for _ in texts]
    out = ["## Calibrated filter on the sample tickets", ""]
    recipes = [i for i, k in enumerate(kinds) if k == "recipe"]
    mixes = {"the 104 tickets alone": ([], []),
             "the 104 tickets + 6 recipe paragraphs as one file (5.5%)": (recipes, ["raw/cookbook.pdf"] * 6),
             "the 104 tickets + the 42 unrelated texts, one file per kind (29%)": (
                 list(range(len(kinds))), [f"raw/unrelated/{k}.pdf" for k in kinds])}
    for title, (chosen, off_sources) in mixes.items():
        rows = list(zip(tickets, sources)) + [(OFF_DOMAIN_TEXTS[i], s) for i, s in zip(chosen, off_sources)]
        x = np.concatenate([x_in, x_off[chosen]]) if chosen else x_in
        out += mode_table(title, frame(rows, "r"), x, len(tickets), modes)
    print("\n".join(out))


def real_part(cache_dir: Path) -> None:
    start = time.perf_counter()
    corpora = real_corpora()
    cache = EmbeddingCache(cache_dir, "bench_domain")
    vec = lambda texts: embed(texts, None, 32, 256, cache=cache)  # noqa: E731
    out = [f"## Real corpora (built in {time.perf_counter() - start:.1f} s)", ""]
    for corpus in corpora:
        rows = corpus["in"] + corpus["off"]
        records = frame(rows, "r")
        x = vec([t for t, _ in rows])
        n_in, n_off = len(corpus["in"]), len(corpus["off"])
        files = sorted({s for _, s in corpus["off"]})
        out += [f"{corpus['name']}: {n_in} in-domain records (one file), {n_off} off-domain ({n_off / len(rows):.1%}) "
                f"from {len(files)} files: {', '.join(files)}; description: \"{corpus['description']}\"", ""]
        modes = modes_for(corpus["description"], vec, corpus["examples"], corpus["out_examples"])
        out += mode_table(f"{corpus['name']}, with the off-domain files", records, x, n_in, modes)
        clean = {k: v for k, v in modes.items() if "out-of-domain" not in k}
        out += mode_table(f"{corpus['name']}, in-domain records alone", records.head(n_in), x[:n_in], n_in, clean)
    cache.save()
    out += [f"embedding and scoring took {time.perf_counter() - start:.1f} s (cached vectors: {cache.reused}, "
            f"computed: {cache.computed})"]
    print("\n".join(out))


def root_part(root: Path, cache_dir: Path) -> None:
    """A data root the pipeline has cleaned (`finetune-pipeline run --select +key:cleaned_corpus`): its domain
    settings on its cleaned corpus, per source file: records, rejected, and whether the gauntlet's truth
    (ROOT.truth.json, `off_domain_files`, from scripts/bench_real_data.py) calls the file off-domain."""
    cfg = load_settings(root).domain
    corpus = stored_frame(DataRoot(root), "cleaned_corpus")
    truth_path = root.parent / f"{root.name.removesuffix('-copy')}.truth.json"
    off_files = set(json.loads(truth_path.read_text())["off_domain_files"]) if truth_path.exists() else set()
    cache = EmbeddingCache(cache_dir, "bench_domain")
    result = domain_filter(corpus, cfg.model_copy(update={"max_reject_share": 1.0}), cache=cache)
    rejected = set(result.rejected["record_id"])
    print(f"## Data root {root}\n\ndomain.description: {cfg.description!r}\n")
    print("| source | records | rejected | truth |\n|---|---|---|---|")
    lost = caught = n_off = n_in = 0
    for (source,), part in corpus.group_by("source_uri", maintain_order=True):
        off = source.removeprefix("raw/") in off_files
        r = len(rejected & set(part["record_id"]))
        n_off, caught = n_off + off * part.height, caught + off * r
        n_in, lost = n_in + (not off) * part.height, lost + (not off) * r
        print(f"| {source} | {part.height} | {r} | {'off-domain' if off else 'in-domain'} |")
    print(f"\nin-domain lost {lost}/{n_in}, off-domain caught {caught}/{n_off}, share {result.stats.reject_share:.1%} "
          f"(guard at domain.max_reject_share {cfg.max_reject_share:g}: "
          f"{'passes' if result.stats.reject_share <= cfg.max_reject_share else 'fails'}), "
          f"sources judged off-domain {result.stats.off_domain_sources}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("sample", "real"))
    parser.add_argument("--root", type=Path, help="instead: a cleaned data root (root_part's docstring)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_domain_cache"))
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.root:
        root_part(args.root, args.cache)
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
        return
    if args.only in (None, "sample"):
        sample_part()
    if args.only in (None, "real"):
        real_part(args.cache)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
