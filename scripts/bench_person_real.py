"""Person names on the real-data gauntlet's rows, without the pipeline: cleaning's redaction
(`redact_to_fixed_point`, default `PrivacySettings`) over the raw rows of roots that
`scripts/bench_real_data.py` built, scored as that script scores the exports (`pii_scores`): person recall
on the planted and real maintainer names, and the share of records with no person that got a <PERSON>.

    python scripts/bench_person_real.py [--roots /tmp/real_data_roots] [--show 10] [pkg_jsonl manpages ...]

Rows only (table rows, the manual-page files as one text each): no chunking, no filters, no dedup, so the
figures can differ a little from a full run's.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real_data import PLACEHOLDER_PERSON, pii_scores  # noqa: E402

from finetune_pipeline.cleaning.privacy import redact_to_fixed_point  # noqa: E402
from finetune_pipeline.settings import PrivacySettings  # noqa: E402


def raw_rows(root: Path, by_file: bool) -> dict[str, str]:
    """key -> text, keyed as `bench_real_data.record_key` keys the exports."""
    rows: dict[str, str] = {}
    raw = root / "raw"
    if by_file:
        for path in sorted(raw.rglob("*.txt")):
            rows[str(path.relative_to(raw))] = path.read_text()
        return rows
    for path in sorted(raw.glob("*.jsonl")):
        for line in path.open():
            r = json.loads(line)
            rows[f"{path.name}|id={r['id']}"] = r["text"]
    for path in sorted(raw.glob("*.csv")):
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            for n, r in enumerate(reader, start=1):
                rows[f"{path.name}|row {n}"] = r[0]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=["pkg_jsonl", "pkg_csv", "pkg_domain", "manpages"])
    parser.add_argument("--roots", type=Path, default=Path("/tmp/real_data_roots"))
    parser.add_argument("--show", type=int, default=0, help="print this many false and missed examples")
    args = parser.parse_args(argv)
    policy = PrivacySettings()
    for name in args.names:
        truth = json.loads((args.roots / f"{name}.truth.json").read_text())
        rows = raw_rows(args.roots / name, bool(truth.get("by_file")))
        keys = list(rows)
        t0 = time.monotonic()
        results = redact_to_fixed_point([[rows[k]] for k in keys], policy)
        exported = {k: [group[0].text] for k, group in zip(keys, results) if not group[0].drop_because}
        scores = pii_scores([a for a in truth["pii"] if a["key"] in rows], exported, set(truth["person_keys"]))
        person = scores["by_type"].get("person", {})
        print(f"{name}: {len(rows)} rows, {time.monotonic() - t0:.0f} s; person recall {person.get('recall')} "
              f"({person.get('found')}/{person.get('planted')}); <PERSON> in records without a person "
              f"{scores['false_person_records']}/{scores['records_without_person']} "
              f"({scores['false_person_share']})")
        for key in scores["false_person_keys"][:args.show]:
            text = exported[key][0]
            i = text.find(PLACEHOLDER_PERSON)
            print(f"  false {key}: {rows[key][max(0, i - 60):i + 60]!r} -> {text[max(0, i - 60):i + 60]!r}")
        for miss in person.get("missed", [])[:args.show]:
            values = [a["value"] for a in truth["pii"] if a["key"] == miss["key"] and a["type"] == "person"]
            print(f"  missed {miss['key']} ({miss['style']}): {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
