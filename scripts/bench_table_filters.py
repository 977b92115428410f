r"""Document filters on rows of a table: records rejected per reason on a real labeled table, before and after.

Run from the repository root (needs Debian's package lists: `apt-get update` once):

  .venv/bin/python scripts/bench_table_filters.py [--out /tmp/debian_synopses] [--per-section 800]
                                                  [--detector patterns|presidio]

Builds a classification data root from `apt-cache dumpavail`: one JSONL file of `text` (a package's one-line
synopsis, the first line of its Description) and `label` (its archive section), for the sections games,
graphics, net, science and sound, at most `--per-section` packages each (chosen by a hash of the package name,
so the same lists give the same rows). The root is read as a newcomer's would be (`collect_raw_corpus`, the
JSONL reader) and cleaned twice with the defaults: once with `cleaning.document_filters_on: all` (the
behaviour before issue 33: the filters made for web documents reject rows of tables too) and once with the
default `documents` (they flag rows of tables). Prints rows in, kept, rejected per reason, quality flags per
reason, and the reject-share warnings (`checks.max_reject_share`) each run raises, then the rows the language
filter rejected (Debian synopses are written in English: each is a false reject).

`--language-probe` also measures the language filter (langid at `language_min_confidence`, texts of
`language_min_chars`+) on short real text with known languages: false rejects on every Debian synopsis of 60+
characters and on the English messages of the gettext catalogues under /usr/share/locale (60-200
characters), and texts caught among their translations (de fr es it pt nl pl sv), with and without an
English-dictionary veto (no reject when 80 % of 3+ dictionary-checkable words are English), which is
considered, not applied.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import gettext
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

SECTIONS = ("games", "graphics", "net", "science", "sound")


def debian_synopses(per_section: int) -> list[dict]:
    """(synopsis, section) of the packages of SECTIONS in the local package lists, `per_section` each at most."""
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    by_section: dict[str, dict[str, str]] = {s: {} for s in SECTIONS}
    for stanza in dump.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ": " in line:
                key, value = line.split(": ", 1)
                fields[key] = value
        section = fields.get("Section", "").split("/")[-1]  # contrib/net -> net
        if section in by_section and fields.get("Description"):
            by_section[section].setdefault(fields["Package"], fields["Description"].strip())
    rows = []
    for section, packages in by_section.items():
        chosen = sorted(packages, key=lambda name: hashlib.sha256(name.encode()).hexdigest())[:per_section]
        rows += [{"text": packages[name], "label": section} for name in sorted(chosen)]
    return rows


def build_root(out: Path, per_section: int) -> Path:
    rows = debian_synopses(per_section)
    if not rows:
        sys.exit("no packages found: run `apt-get update` first (apt-cache dumpavail lists nothing)")
    (out / "raw").mkdir(parents=True, exist_ok=True)
    with (out / "raw" / "synopses.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (out / "finetune.yaml").write_text(f"task: classification\nlabels: [{', '.join(SECTIONS)}]\n")
    return out


def report(name: str, result, rows_in: int, max_share: float) -> None:
    from finetune_pipeline.records import reject_share_warnings

    flags = Counter(f for fs in result.kept["quality_flags"].to_list() for f in fs)
    print(f"\n{name}: {rows_in} rows in, {result.kept.height} kept, {result.rejected.height} rejected")
    for reason, n in sorted(result.reasons().items(), key=lambda kv: -kv[1]):
        print(f"  rejected {reason:<24}{n:>6}  ({n / rows_in:.1%})")
    for flag, n in flags.most_common():
        print(f"  flagged  {flag:<24}{n:>6}  ({n / rows_in:.1%})")
    warnings = reject_share_warnings("cleaned_corpus", rows_in, result.rejected, max_share)
    for warning in warnings:
        print(f"  WARNING {warning.message()}")
    if not warnings:
        print(f"  no reject-share warning (no reason above checks.max_reject_share={max_share})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/debian_synopses"))
    parser.add_argument("--per-section", type=int, default=800)
    parser.add_argument("--detector", choices=["patterns", "presidio"], default="patterns",
                        help="privacy.detector (the document filters do not depend on it; patterns is faster)")
    parser.add_argument("--language-probe", action="store_true",
                        help="also measure the language filter on short real text with known languages")
    args = parser.parse_args()

    from finetune_pipeline.cleaning import clean_corpus
    from finetune_pipeline.settings import load_settings
    from finetune_pipeline.sources import collect_raw_corpus

    root = build_root(args.out, args.per_section)
    settings = load_settings(root)
    settings = settings.model_copy(update={"privacy": settings.privacy.model_copy(update={"detector": args.detector})})
    raw = collect_raw_corpus(root, settings).kept
    labels = Counter(raw["label"].to_list())
    print(f"data root {root}: {raw.height} rows from raw/synopses.jsonl (source_type "
          f"{', '.join(sorted(set(raw['source_type'])))}); labels {dict(sorted(labels.items()))}; "
          f"median {int(raw['text'].str.len_chars().median())} characters; privacy.detector {args.detector}")
    for scope in ("all", "documents"):
        cleaning = settings.cleaning.model_copy(update={"document_filters_on": scope})
        result = clean_corpus(raw, settings.model_copy(update={"cleaning": cleaning}))
        name = f"document_filters_on: {scope} ({'before issue 33' if scope == 'all' else 'the default now'})"
        report(name, result, raw.height, settings.checks.max_reject_share)
    language = result.rejected.filter(result.rejected["reason"] == "language")["record_id"].to_list()
    texts = dict(zip(raw["record_id"], raw["text"]))
    for record_id in language:
        print(f"  rejected as language: {texts[record_id]!r}")
    if args.language_probe:
        language_probe(settings.cleaning)


def gettext_pairs(languages=("de", "fr", "es", "it", "pt", "nl", "pl", "sv"), limit=6000) -> list[tuple[str, str, str]]:
    """(language, English message, translation) from the gettext catalogues under /usr/share/locale, both
    60-200 characters, no format strings; `limit` of them, shuffled with a fixed seed."""
    pairs = []
    for lang in languages:
        for mo in sorted(Path("/usr/share/locale", lang, "LC_MESSAGES").glob("*.mo")):
            try:
                with mo.open("rb") as handle:
                    catalog = gettext.GNUTranslations(handle)._catalog
            except (OSError, UnicodeDecodeError):
                continue
            for key, value in catalog.items():
                if isinstance(key, str) and key and isinstance(value, str):
                    english, translated = " ".join(key.split()), " ".join(value.split())
                    if 60 <= len(english) <= 200 and 60 <= len(translated) <= 200 and "%" not in english:
                        pairs.append((lang, english, translated))
    random.Random(0).shuffle(pairs)
    return pairs[:limit]


def language_probe(cleaning) -> None:
    from finetune_pipeline.cleaning.quality_filters import identify_languages, unknown_word_share

    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    synopses = sorted({line[13:].strip() for line in dump.splitlines() if line.startswith("Description: ")})
    synopses = [t for t in synopses if len(t) >= cleaning.language_min_chars]
    pairs = gettext_pairs()
    english = list(dict.fromkeys(e for _, e, _ in pairs))
    translated = [t for _, _, t in pairs]

    def rejected(texts: list[str], veto: bool) -> int:
        count = 0
        for text, (lang, prob) in zip(texts, identify_languages(texts)):
            if lang not in cleaning.languages and prob >= cleaning.language_min_confidence:
                share, checked = unknown_word_share(text)
                count += not (veto and checked >= 3 and 1 - share >= 0.8)
        return count

    print(f"\nlanguage filter on short real text (languages {cleaning.languages}, p >= "
          f"{cleaning.language_min_confidence}, {cleaning.language_min_chars}+ characters):")
    for veto in (False, True):
        print(f"  {'with the dictionary veto' if veto else 'as it is (langid alone)'}: "
              f"Debian synopses rejected {rejected(synopses, veto)} of {len(synopses)}; English gettext messages "
              f"rejected {rejected(english, veto)} of {len(english)}; translations caught "
              f"{rejected(translated, veto)} of {len(translated)}")


if __name__ == "__main__":
    main()
