r"""Soak run: the data-preparation stages on a large generated data root, with time and peak memory per stage.

Run from the repository root:

  .venv/bin/python scripts/bench_soak.py --records 100000 --out /tmp/soak
  .venv/bin/python scripts/bench_soak.py --records 100000 --out /tmp/soak --detector patterns

It writes a data root under --out: raw/exports/part-NN.jsonl support tickets generated with Faker
(seeded; four labels with their own vocabulary; names, emails, phones and card numbers in a share of
them; 4 % exact copies, 4 % edited near copies, 1 % without a label for the zero-shot model), plus the
sample data's documents. Then it runs the library stages the assets call, in order, in this process:
collect -> clean (normalise, filters, PII) -> dedup -> label -> augment -> splits -> exports. For each
it prints wall time, records in/out, records per second, and the peak resident memory of the process
during that stage (sampled every 20 ms). Training is not part of it: see the fine-tuning benchmarks.
At the end it checks the accounting identity (in = out + rejected) at every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from finetune_pipeline.layout import DataRoot  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB = {
    "billing": ["invoice", "refund", "charged twice", "payment", "receipt", "VAT", "subscription fee", "credit note"],
    "shipping": ["parcel", "tracking number", "courier", "delivery", "depot", "late package", "lost shipment"],
    "account_access": ["password", "login", "verification code", "locked account", "two-factor", "reset link"],
    "technical_issue": ["error message", "app crashes", "page does not load", "timeout", "blank screen", "bug"],
}


def generate(root: Path, records: int, seed: int = 7) -> None:
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(seed)
    rng = random.Random(seed)
    raw = DataRoot(root).raw / "exports"
    raw.mkdir(parents=True, exist_ok=True)
    labels = list(VOCAB)
    rows: list[dict] = []
    while len(rows) < records:
        kind = rng.random()
        if rows and kind < 0.04:  # exact copy of an earlier ticket
            rows.append(dict(rng.choice(rows)))
            continue
        if rows and kind < 0.08:  # near copy: one sentence changed
            base = rng.choice(rows)
            rows.append({**base, "text": base["text"] + " " + fake.sentence(nb_words=8)})
            continue
        label = rng.choice(labels)
        terms = rng.sample(VOCAB[label], 3)
        parts = [f"Hello, I have a problem with the {terms[0]}.", fake.paragraph(nb_sentences=3),
                 f"The {terms[1]} is still not sorted and I need help with the {terms[2]}.",
                 fake.sentence(nb_words=12)]
        if rng.random() < 0.3:
            parts.append(f"You can reach me at {fake.email()} or {fake.phone_number()}.")
        if rng.random() < 0.05:
            parts.append(f"My card is {fake.credit_card_number(card_type='visa16')}.")
        parts.append(f"Thanks, {fake.name()}")
        row = {"text": " ".join(parts), "label": label if rng.random() > 0.01 else None}
        rows.append(row)
    per_file = 10_000
    for i in range(0, len(rows), per_file):
        with (raw / f"part-{i // per_file:02d}.jsonl").open("w") as handle:
            for row in rows[i:i + per_file]:
                handle.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    sample, target = DataRoot(ROOT / "data"), DataRoot(root)
    shutil.copytree(sample.raw / "tickets", target.raw / "tickets", dirs_exist_ok=True)
    target.settings_file.write_text(sample.settings_file.read_text())


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms), in MiB."""

    def __enter__(self):
        self._proc, self._stop, self.peak = psutil.Process(), threading.Event(), 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", default="/tmp/soak")
    parser.add_argument("--detector", choices=["presidio", "patterns"], default=None,
                        help="privacy.detector for this run (default: the settings' default)")
    args = parser.parse_args()

    from finetune_pipeline import exports
    from finetune_pipeline.augment import augment_corpus
    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.cleaning.erasure import load_erasure_requests
    from finetune_pipeline.dedup import deduplicate
    from finetune_pipeline.labeling import apply_labels
    from finetune_pipeline.labeling.annotations import load_annotations
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.settings import load_settings
    from finetune_pipeline.tasks import task_for
    from finetune_pipeline.sources import collect_raw_corpus
    from finetune_pipeline.splits import assign_splits

    root = Path(args.out) / "data"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    generate(root, args.records)
    print(f"generated {args.records:,} records in {time.perf_counter() - started:.0f} s under {root}")
    overrides = f"privacy: {{detector: {args.detector}}}" if args.detector else None
    settings = load_settings(root, overrides=overrides)
    layout = DataRoot(root)

    def collect():
        return collect_raw_corpus(root, settings, cache_dir=layout.parse_cache)

    def clean(corpus):
        return clean_corpus(corpus, settings, load_erasure_requests(root))

    def label(corpus):
        annotations, problems = load_annotations(layout.annotations)
        return apply_labels(corpus, settings, annotations, problems)

    rows, results, frame = [], {}, None
    stages = [("raw_corpus", lambda _: collect()), ("cleaned_corpus", clean),
              ("deduplicated_corpus", lambda c: deduplicate(c, settings)), ("labeled_corpus", label),
              ("augmented_corpus", lambda c: augment_corpus(c, settings))]
    for name, run in stages:
        rows_in = frame.height if frame is not None else None
        with PeakRSS() as memory:
            t0 = time.perf_counter()
            result = run(frame)
            seconds = time.perf_counter() - t0
        results[name] = (rows_in, result)
        frame = result.kept
        per_s = (rows_in or result.kept.height + result.rejected.height) / seconds
        rows.append((name, rows_in, result.kept.height, result.rejected.height, seconds, per_s, memory.peak))
    with PeakRSS() as memory:
        t0 = time.perf_counter()
        splits = assign_splits(frame, settings.splits)
        exports.export_splits(splits, layout.splits_export, task_for(settings))
        seconds = time.perf_counter() - t0
    rows.append(("dataset_splits + export", frame.height, splits.height, 0, seconds, frame.height / seconds,
                 memory.peak))

    print(f"\n{platform.node()} · {psutil.cpu_count()} cores · {psutil.virtual_memory().total / 2**30:.0f} GiB · "
          f"privacy.detector {settings.privacy.detector}")
    print(f"| stage | records in | out | rejected | wall s | records/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rows_in, out, rejected, seconds, per_s, peak in rows:
        print(f"| {name} | {rows_in if rows_in is not None else '-'} | {out} | {rejected} | {seconds:.1f} | "
              f"{per_s:,.0f} | {peak:,.0f} |")
    total = sum(r[4] for r in rows)
    print(f"| total | | | | {total:.1f} | | {max(r[6] for r in rows):,.0f} |")

    broken = []
    for name, (rows_in, result) in results.items():
        originals = result.kept.filter(result.kept["augmented_from"].is_null()) \
            if "augmented_from" in result.kept.columns else result.kept
        if rows_in is not None and rows_in != originals.height + result.rejected.height:
            broken.append(name)
    print("accounting in = out + rejected: " + ("holds at every stage" if not broken else f"BROKEN at {broken}"))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
