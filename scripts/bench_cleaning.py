r"""Cleaning speed per detector, per core: `clean_corpus` on a few thousand short, real-looking texts.

Run from the repository root (the same script against another checkout: PYTHONPATH=/path/to/it):

  .venv/bin/python scripts/bench_cleaning.py [--records 4000] [--detector presidio patterns] [--dump out.jsonl]

Inputs (seeded, the same for every checkout): sentences of the sample data's tickets (data/raw: the CSV,
JSONL and SQLite texts and notes.txt) recombined into texts of one to three sentences, with names placed
as people write them (sign-offs, attributions such as "- Ada Lovelace", "note from ...", mid-sentence),
5 % with an e-mail and a phone number, 3 % in German, French or Spanish (Faker's word lists), 2 % too short.

One process, one thread for numpy/BLAS: the figure is per core. `--cold` skips the warm-up, so the figure
includes what a fresh cleaning process (a Dagster step, a worker) pays before its first record. Prints
records/s over wall time and over this process's CPU time (the fairer figure on a shared machine), the
records kept and rejected by reason, and a digest of every outcome (record id, reason, cleaned text): equal
digests mean the same decisions and the same redactions. `--dump` writes each outcome as a JSON line, to
diff two checkouts.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "data"
NAME_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "en_IN", "pl_PL", "nl_NL", "pt_BR"]
NAME_PLACES = [  # how a name appears in a short text; {} is the name
    "{s} - {}", "{s}\n- {}", "{s}\nThanks, {}", "Note from {}: {s}", "{s} {} said so on the phone.",
    "Yesterday {} told me the same thing. {s}", "{s} I asked {} twice.", "{} here. {s}", "{s}\n{}",
    "According to {}, {s}",
]
FOREIGN = ["de_DE", "fr_FR", "es_ES"]


def sample_sentences() -> list[str]:
    """Every sentence of the sample data's plain texts (real-looking English, a shop's support tickets)."""
    raw = SAMPLE / "raw"
    texts = [json.loads(line)["text"] for line in (raw / "exports" / "tickets.jsonl").read_text().splitlines() if line]
    with (raw / "exports" / "tickets.csv").open(newline="") as handle:
        texts += [row["text"] for row in csv.DictReader(handle)]
    texts += [t for (t,) in sqlite3.connect(raw / "db" / "helpdesk.sqlite").execute("select text from tickets")]
    texts.append((raw / "notes.txt").read_text())
    sentences = {s.strip() for text in texts for s in re.split(r"(?<=[.!?])\s+|\n+", text)}
    return sorted(s for s in sentences if len(s.split()) >= 4)


def make_texts(records: int, seed: int = 21) -> list[str]:
    from faker import Faker

    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in sorted({*NAME_LOCALES, *FOREIGN})}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed * 100 + i)
    pool = sample_sentences()
    texts = []
    for _ in range(records):
        kind = rng.random()
        if kind < 0.02:
            texts.append(rng.choice(["Thanks!", "Any news?", "Still waiting.", "Please help"]))
            continue
        if kind < 0.05:
            texts.append(fakers[rng.choice(FOREIGN)].paragraph(nb_sentences=rng.randint(2, 4)))
            continue
        body = " ".join(rng.sample(pool, rng.randint(1, 3)))
        if rng.random() < 0.4:
            fake = fakers[rng.choice(NAME_LOCALES)]
            body = rng.choice(NAME_PLACES).replace("{s}", body).format(f"{fake.first_name()} {fake.last_name()}")
        if rng.random() < 0.05:
            body += f" You can reach me at {fakers['en_US'].email()} or {fakers['en_US'].phone_number()}."
        texts.append(body)
    return texts


def soak_tickets(records: int) -> list[str]:
    """The first `records` tickets of bench_soak's generator (seed 7), as bench_incremental.py adds them."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_soak import generate

    with tempfile.TemporaryDirectory() as folder:
        generate(Path(folder), records)
        parts = sorted((Path(folder) / "raw" / "exports").glob("part-*.jsonl"))
        return [json.loads(line)["text"] for part in parts for line in part.read_text().splitlines() if line]


def corpus(texts: list[str]):
    from finetune_pipeline.records import corpus_frame, make_record_id, sha256_text

    rows = []
    for i, text in enumerate(texts):
        uri = f"bench://quotes/{i // 500:03d}.jsonl"
        rows.append({"record_id": make_record_id(uri, f"line {i}"), "text": text, "source_uri": uri,
                     "source_type": "jsonl", "locator": f"line {i}", "content_sha256": sha256_text(text)})
    return corpus_frame(rows)


def run(frame, detector: str, dump: Path | None, cold: bool = False) -> None:
    wall, cpu = time.perf_counter(), time.process_time()  # cold: imports and model loads are timed too
    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.settings import load_settings

    settings = load_settings(SAMPLE, overrides={"privacy": {"detector": detector}})
    if not cold:
        clean_corpus(frame.head(50), settings)  # warm-up: models and word lists load outside the timing
        from finetune_pipeline.cleaning import privacy

        getattr(privacy, "first_names", lambda: None)()  # the name gazetteer (absent in older checkouts)
        wall, cpu = time.perf_counter(), time.process_time()
    result = clean_corpus(frame, settings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    outcomes = sorted([(r["record_id"], "kept", r["text"]) for r in result.kept.iter_rows(named=True)]
                      + [(r["record_id"], r["reason"], "") for r in result.rejected.iter_rows(named=True)])
    digest = hashlib.sha256(json.dumps(outcomes).encode()).hexdigest()[:16]
    reasons = Counter(r for _, r, _ in outcomes)
    print(f"{'cold, ' if cold else ''}detector={detector:<9} {frame.height} records  wall {wall:7.2f} s {frame.height / wall:8.0f} records/s  "
          f"cpu {cpu:7.2f} s {frame.height / cpu:8.0f} records/s (per core)")
    print(f"  outcomes {dict(sorted(reasons.items()))}  pii {dict(sorted(result.stats.pii_by_type.items()))}  "
          f"digest {digest}")
    if hasattr(result.stats, "pii_passes"):  # redaction to a fixed point (issue 33; absent in older checkouts)
        print(f"  records needing a 2nd/3rd detector pass {result.stats.pii_passes or 'none'}, "
              f"still holding personal data after the last {result.stats.pii_unresolved}")
    if dump:
        path = dump.with_name(f"{dump.stem}-{detector}{dump.suffix}")
        path.write_text("".join(json.dumps(o) + "\n" for o in outcomes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--detector", nargs="+", choices=["presidio", "patterns"], default=["presidio", "patterns"])
    parser.add_argument("--dump", type=Path, default=None, help="write outcomes to DUMP-<detector>.jsonl")
    parser.add_argument("--tickets", action="store_true",
                        help="instead of the short texts: bench_soak's support tickets (seed 7, the texts that "
                             "bench_incremental.py --records adds), the first --records of them")
    parser.add_argument("--cold", action="store_true",
                        help="no warm-up: time what a fresh cleaning process pays (imports, models), one detector")
    args = parser.parse_args()
    sys.path.insert(0, os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or str(SAMPLE.parent))
    import finetune_pipeline

    print(f"code: {Path(finetune_pipeline.__file__).parent}")
    frame = corpus(soak_tickets(args.records) if args.tickets else make_texts(args.records, args.seed))
    if args.cold and len(args.detector) > 1:
        parser.error("--cold times one fresh process: give one --detector")
    for detector in args.detector:
        run(frame, detector, args.dump, args.cold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
