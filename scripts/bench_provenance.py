r"""What scanning file names and locators for personal data costs cleaning, per core.

  .venv/bin/python scripts/bench_provenance.py [--records 2000] [--detector presidio]

The texts of `bench_cleaning.py` (seeded), cleaned twice with `clean_corpus` in one process: once as rows
of one JSONL file (one source path, locators "line N": the path is scanned once, the locators are of a
shape the collectors write and are skipped), once as one file each with a path of its own (the worst case:
every record has a path never seen, with a planted name or address in 2 % of them). Prints records/s over
this process's CPU time for both, the share of time spent on provenance (`redact_provenance` timed alone on
the same unique paths), how many planted paths were redacted, and how many of this machine's real file names
(manual pages, /usr/share/doc: no person in them) redaction changed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_cleaning import make_texts  # noqa: E402

from finetune_pipeline.cleaning import clean_corpus  # noqa: E402
from finetune_pipeline.cleaning.provenance import _CACHE, redact_provenance  # noqa: E402
from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text  # noqa: E402
from finetune_pipeline.settings import Settings  # noqa: E402

FOLDERS = ["tickets/billing", "tickets/shipping", "exports/2024-05", "mail/inbox", "docs/manuals"]
PLANTED = ["maria_lopez_cv", "from_jane.doe@example.com", "Ahmed Khan notes", "ticket-for-Li-Wei"]


def paths(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        stem = rng.choice(PLANTED) if rng.random() < 0.02 else f"ticket_{i:05d}"
        out.append(f"raw/{rng.choice(FOLDERS)}/{stem}_{i}.txt")
    return out


def real_file_names() -> list[str]:
    """Paths as a data root of this machine's manuals would have them: raw/man1/<page>.txt, raw/doc/<pkg>.html."""
    names = []
    for folder in ("/usr/share/man/man1", "/usr/share/man/man5", "/usr/share/man/man8"):
        if os.path.isdir(folder):
            names += [f"raw/{os.path.basename(folder)}/{f.split('.')[0]}.txt" for f in sorted(os.listdir(folder))]
    if os.path.isdir("/usr/share/doc"):
        names += [f"raw/doc/{package}.html" for package in sorted(os.listdir("/usr/share/doc"))]
    return sorted(set(names))


def frame(texts: list[str], uris: list[str], locators: list[str]):
    return corpus_frame([{"record_id": make_record_id(u, loc), "text": t, "source_uri": u, "source_type": "jsonl",
                          "locator": loc, "content_sha256": sha256_text(t)}
                         for t, u, loc in zip(texts, uris, locators)])


def cpu_rate(corpus, settings) -> tuple[float, object]:
    start = time.process_time()
    result = clean_corpus(corpus, settings)
    return corpus.height / (time.process_time() - start), result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--detector", choices=["presidio", "patterns"], default="presidio")
    args = parser.parse_args()
    settings = Settings(privacy={"detector": args.detector})
    texts = make_texts(args.records)
    clean_corpus(frame(texts[:50], ["raw/warm.jsonl"] * 50, [f"line {i}" for i in range(50)]), settings)  # warm-up
    one_file = frame(texts, ["raw/exports/tickets.jsonl"] * len(texts), [f"line {i + 1}" for i in range(len(texts))])
    unique = paths(len(texts))
    many_files = frame(texts, unique, ["element 0"] * len(texts))
    rate_one, _ = cpu_rate(one_file, settings)
    _CACHE.clear()
    rate_many, result = cpu_rate(many_files, settings)
    _CACHE.clear()
    start = time.process_time()
    redact_provenance(unique, settings.privacy)
    alone = time.process_time() - start
    planted = sum(any(p in u for p in PLANTED) for u in unique)
    left = sum(any(p in u for p in PLANTED) for u in result.kept["source_uri"])
    print(f"detector {args.detector}, {len(texts)} records, CPU time, one process")
    print(f"one JSONL file (one path, locators 'line N'): {rate_one:.0f} records/s")
    print(f"one file per record (unique paths):           {rate_many:.0f} records/s")
    print(f"redact_provenance alone on the unique paths:  {alone / len(unique) * 1000:.2f} ms per path, "
          f"{alone / (len(unique) / rate_many):.1%} of that cleaning run")
    print(f"planted names/addresses in paths: {planted}; left unredacted among kept records: {left}; "
          f"provenance_redacted={result.stats.provenance_redacted}")
    real = real_file_names()
    changed = [v for v, r in redact_provenance(real, settings.privacy).items() if r.value != v]
    print(f"real file names (Debian manual pages and /usr/share/doc, no person in them): {len(real)}; "
          f"changed by redaction: {len(changed)}" + (f", e.g. {changed[:5]}" if changed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
