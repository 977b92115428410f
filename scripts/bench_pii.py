r"""PII detection benchmark: recall and precision per type on a seeded Faker test set.

Run from the repository root:  .venv/bin/python scripts/bench_pii.py [--per-type 300] [--seed 4]

Each document is a few support-ticket sentences: two carry a PII value in some format (phones of seven
locales plus hand-made formats, cards with spaces/dashes/none, IPv4/IPv6, SSNs with dashes/spaces/context,
IBANs of five countries, US/UK street addresses, person names of 20 Faker locales and hand lists in many
positions, mostly without a cue word: attributions, possessives, lists, mid-sentence), one or two are
distractors without PII (order numbers, prices, dates, times, tracking codes, versions, brand, product and
place names, some shaped like a person's name).

A gold value counts as found (recall) when every letter and digit of it lies inside spans of its type.
A predicted span is correct (precision) when it overlaps a gold value of its type. Locations are not
scored (kept by default policy). Prints a Markdown table; `finetune_pipeline_tests` imports `make_cases`.

`--debian`: real technical text instead, built at run time from this machine's Debian package index
(`apt-get update` first; then `apt-cache dumpavail`, read here, nothing downloaded): the first line of each
package's Description (its synopsis: product, format, language and place names, "split MP3, OGG, or FLAC
files", "Debian Squeeze themes") and its Maintainer field ("Name <email>"). The recall set: every distinct
maintainer who is a person (a field without team, list or project words), as the line
"Maintainer: Name <email>" under the synopsis of one of their packages; a name counts as found when every
letter of it lies inside person spans, its e-mail inside an e-mail span. The precision set: `--synopses`
distinct synopses (seeded sample) alone, with no person in them: a record counts as damaged when any
person span is found in it (a word lost to `<PERSON>`). Targets: person recall 0.99, at most 1% of the
precision set damaged.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faker import Faker  # noqa: E402

TYPES = ["email", "phone", "credit_card", "us_ssn", "ip_address", "iban", "street_address", "person"]

# Person cases, harder than cue words: names placed freely as in real quotations and messages. Each
# "{}" is a name; a template may hold two ("X and Y"). Scored rows: all person values, and the values in
# `NO_CUE` (no word of the project's cue lists near the name) and `ATTRIBUTION` (quotation credits).
NO_CUE = ["{} will pick up the parcel on Monday.", "I think {} is the account holder.",
          "The account belongs to {} now.", "Is {} still working on my case?", "Yesterday {} brought the forms back.",
          "We met {} at the station before the storm.", "Only {} knew the password.", "{}'s order arrived broken.",
          "The refund went to {}'s account, not mine.", "{} and {} share this account.",
          "Both {} and {} signed the lease.", "Last week {} sent the wrong size again.",
          "Nobody but {} has the key.", "The best answer came from {}.", "{} had already left the building.",
          "Ask {} about the delay.", "It was {} who found the fault.", "The survey was run by {} in spring."]
ATTRIBUTION = ["\u201cThe work is never finished, only abandoned.\u201d \u2014 {}", "\u2014 {}",
               "Things fall apart; the centre cannot hold ({}, 1958).", "\"We leave at dawn,\" said {}.",
               "A note from {}: the keys are under the mat.", "As {} put it, patience pays.",
               "\"Never again,\" {} wrote in the margin.", "In the words of {}, less is more.",
               "Quoted by {} in the annual letter.", "Note from {}, 12 May: call the bank."]
CUED = ["My name is {}.", "Kind regards, {}", "I spoke with {} on the phone.", "Thanks, {}", "Dear {},",
        "The order was placed by my colleague {}."]
TEMPLATES = {
    "email": ["You can reach me at {}.", "Please reply to {} instead of my old address.", "My login is {}",
              "Send the invoice to {} please.", "Email: {}", "I wrote from {} last week.", "cc {} on this"],
    "phone": ["Call me at {} if that is easier.", "My phone number is {}.", "Phone: {}", "You can text me on {}",
              "Best to reach me at {} after 5pm.", "The courier tried {} but I was out.", "tel. {} (mobile)"],
    "credit_card": ["The card I used is {}.", "It was charged to card number {}", "Card: {}, expires 04/27.",
                    "Please refund to {} rather than store credit."],
    "us_ssn": ["For the identity check I entered my SSN {}.", "SSN: {}", "My social security number is {}.",
               "They asked for {} on the form."],
    "ip_address": ["My IP address is {} if that helps with your logs.", "The login alert came from {}.",
                   "Requests from {} are blocked.", "IP: {}", "I connect through {} at work."],
    "iban": ["Please transfer the refund to {}.", "IBAN: {}", "My account is {} at my bank.",
             "Pay back to IBAN {} please."],
    "street_address": ["Please ship it to {}.", "My new address is {}.", "I moved to {} last month.",
                       "The parcel was left at {} instead of my door.", "Address: {}"],
    "person": [*NO_CUE, *NO_CUE, *ATTRIBUTION, *CUED],  # mostly no cue
}
DISTRACTORS = [
    "Order #{order} was placed on {date} and cost ${price}.", "The tracking number is {tracking}.",
    "Your app version {version} crashes when I open the cart.", "I tried Chrome, Safari and Firefox on my iPad.",
    "The error says Error 500 and then 502 Bad Gateway.", "It has been 12 days and the parcel is still at the depot.",
    "The discount code SAVE20 gave only 15% off.", "I paid with PayPal at 10:45 on {date}.",
    "The box weighed 2.5 kg and measured 40 x 30 x 20 cm.", "Invoice INV-{order} lists 3 items at ${price} each.",
    "I ordered the 1000-piece puzzle and a cast iron skillet.", "DHL and Royal Mail both say it is not with them.",
    # brands, products and places that no built-in list covers
    "I bought the Dyson fan on Zalando and the Nespresso machine on Shopify.", "My Logitech mouse and Bose headset work.",
    "I live near Portland but the parcel went to Seattle.", "The Le Creuset pot arrived with a Hisense manual.",
    # shaped like a person's name ("First Last"), none a person (brands named after one are left out: redacting
    # "Ben Sherman" is defensible)
    "Tesla Model Y and Ford Focus owners get the same discount.", "The Golden Gate tour and the Victoria Station pass.",
    "We use Microsoft Teams and Adobe Acrobat at the office.", "I flew Air France to Buenos Aires via Lisbon.",
    "The Santa Cruz bike and the Monte Carlo poster were missing.", "Our Georgia office moved to San Diego.",
]
# A greeting, a sign-off or a credit after a quotation is a line of its own.
LINE_ENDERS = ("Kind regards, {}", "Thanks, {}", "Dear {},", ATTRIBUTION[0], ATTRIBUTION[1])
PHONE_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "en_CA", "en_IN", "en_AU"]
IBAN_LOCALES = ["de_DE", "fr_FR", "en_GB", "nl_NL", "es_ES"]
NAME_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "pl_PL", "nl_NL", "en_IN", "sv_SE",
                "tr_TR", "cs_CZ", "hu_HU", "ro_RO", "fi_FI", "id_ID", "sw", "yo_NG", "zu_ZA"]
# Romanised names of origins without a Latin-script Faker locale (Chinese, Japanese, Korean, Arabic, Vietnamese,
# Igbo, Akan ...), combined freely.
HAND_FIRST = ("Mei Wei Xiaoling Jun Hiroshi Yuki Haruto Sakura Min-jun Seo-yeon Ji-woo Ahmed Fatima Layla Omar "
              "Youssef Chinua Ngozi Chidi Kwame Ama Kofi Thanh Linh Minh Aiko Kenji Farah Tariq Nadia").split()
HAND_LAST = ("Lin Zhang Wang Chen Liu Tanaka Sato Suzuki Watanabe Kim Park Choi Al-Masri Haddad Nasser Achebe "
             "Okafor Adeyemi Mensah Boateng Asante Nguyen Tran Pham Nakamura Rahman Siddiqui Khalil").split()


def _phone(rng: random.Random, fakers: dict) -> str:
    kind = rng.random()
    if kind < 0.55:
        return fakers[rng.choice(PHONE_LOCALES)].phone_number()
    area, mid, last = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"({area}) {mid}-{last:04d}", f"{area}.{mid}.{last:04d}", f"+1 {area} {mid} {last:04d}",
                       f"+1{area}{mid}{last:04d}", f"{area}-{mid}-{last:04d} ext. {rng.randint(1, 999)}",
                       f"+44 20 {rng.randint(7000, 8999)} {last:04d}", f"+49 30 {rng.randint(1000000, 9999999)}",
                       f"0{rng.randint(1000, 9999)} {rng.randint(100000, 999999)}"])


def _card(rng: random.Random, fake: Faker) -> str:
    number = fake.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex", "discover", "visa13"]))
    style = rng.random()
    if style < 0.35:
        return number
    sep = " " if style < 0.7 else "-"
    if len(number) == 15:  # Amex 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


def _ssn(rng: random.Random, fake: Faker) -> tuple[str, str | None]:
    ssn = fake.ssn()
    style = rng.random()
    if style < 0.6:
        return ssn, None
    if style < 0.85:
        return ssn.replace("-", " "), None
    return ssn.replace("-", ""), "SSN: {}"  # plain nine digits only with context


def _iban(rng: random.Random, fakers: dict) -> str:
    iban = fakers[rng.choice(IBAN_LOCALES)].iban()
    if rng.random() < 0.5:
        return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
    return iban


def _address(rng: random.Random, fakers: dict) -> str:
    fake = fakers["en_US"] if rng.random() < 0.7 else fakers["en_GB"]
    if rng.random() < 0.5:
        return fake.street_address()
    return fake.address().replace("\n", ", ")


def _person(rng: random.Random, fakers: dict) -> str:
    if rng.random() < 0.2:
        return f"{rng.choice(HAND_FIRST)} {rng.choice(HAND_LAST)}"
    fake = fakers[rng.choice(NAME_LOCALES)]
    if rng.random() < 0.15:
        return f"{fake.first_name()} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {fake.last_name()}"
    return f"{fake.first_name()} {fake.last_name()}"


def _value(kind: str, rng: random.Random, fakers: dict) -> tuple[str, str | None]:
    fake = fakers["en_US"]
    if kind == "email":
        value = rng.choice([fake.email, fake.free_email, fake.company_email, fakers["de_DE"].email])()
        return (value.upper() if rng.random() < 0.05 else value), None
    if kind == "phone":
        return _phone(rng, fakers), None
    if kind == "credit_card":
        return _card(rng, fake), None
    if kind == "us_ssn":
        return _ssn(rng, fake)
    if kind == "ip_address":
        return (fake.ipv4() if rng.random() < 0.6 else fake.ipv6(network=False)), None
    if kind == "iban":
        return _iban(rng, fakers), None
    if kind == "street_address":
        return _address(rng, fakers), None
    return _person(rng, fakers), None


def _distractor(rng: random.Random) -> str:
    return rng.choice(DISTRACTORS).format(
        order=rng.randint(40000, 99999), price=f"{rng.randint(5, 300)}.{rng.choice(['00', '49', '99'])}",
        date=f"{rng.choice(['March', 'April', 'May'])} {rng.randint(1, 28)}", version=f"{rng.randint(3, 5)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}",
        tracking=rng.choice(["1Z", "JD", "LX"]) + "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ", k=2))
        + str(rng.randint(1000000, 9999999)) + rng.choice(["GB", "US", "DE"]))


def make_cases(per_type: int = 300, seed: int = 4) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Documents with their gold spans (start, end, type): `per_type` values of every type."""
    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in sorted({*PHONE_LOCALES, *IBAN_LOCALES, *NAME_LOCALES})}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed * 100 + i)
    items = [kind for kind in TYPES for _ in range(per_type)]
    rng.shuffle(items)
    cases = []
    for start in range(0, len(items), 2):
        sentences, gold = [], []
        parts = [("pii", kind) for kind in items[start:start + 2]] + \
                [("filler", None) for _ in range(rng.randint(1, 2))]
        rng.shuffle(parts)
        text, ends_line = "", False
        for what, kind in parts:
            template = None
            sentence = _distractor(rng) if what == "filler" else None
            if kind is not None:
                value, template = _value(kind, rng, fakers)
                template = template or rng.choice(TEMPLATES[kind])
                pieces = template.split("{}")
                values = [value] + [_person(rng, fakers) for _ in pieces[2:]]  # "{} and {}": a second name
                sentence = pieces[0]
                joiner_len = 1 if text else 0  # one space or one newline
                for piece, value in zip(pieces[1:], values):
                    offset = len(text) + joiner_len + len(sentence)
                    gold.append((offset, offset + len(value), kind, template))
                    sentence += value + piece
            # Greetings and sign-offs end their line, as in real messages; other sentences run on or break.
            joiner = "\n" if ends_line or template in LINE_ENDERS or rng.random() < 0.3 else " "
            text = (text + joiner + sentence) if text else sentence
            ends_line = template in LINE_ENDERS
            sentences.append(sentence)
        cases.append((text, gold))
    return cases


def _found(text: str, spans, start: int, end: int, kind: str) -> bool:
    covered = {i for s in spans if s.kind == kind for i in range(s.start, s.end)}
    return all(i in covered for i in range(start, end) if text[i].isalnum())


def score(cases, predictions) -> dict[str, dict]:
    """Per type: gold count, found, recall, predicted spans, correct ones, precision; plus the rows
    `person (no cue)` (names in sentences without a cue word) and `person (attribution)`."""
    rows = [*TYPES, "person (no cue)", "person (attribution)"]
    table = {kind: {"gold": 0, "found": 0, "predicted": 0, "correct": 0} for kind in rows}
    for (text, gold), spans in zip(cases, predictions):
        for start, end, kind, template in gold:
            found = _found(text, spans, start, end, kind)
            extra = ["person (no cue)"] if template in NO_CUE else ["person (attribution)"] \
                if template in ATTRIBUTION else []
            for row in [kind] + extra:
                table[row]["gold"] += 1
                table[row]["found"] += found
        for s in spans:
            if s.kind not in table:
                continue
            table[s.kind]["predicted"] += 1
            if any(k == s.kind and s.start < end and start < s.end for start, end, k, _ in gold):
                table[s.kind]["correct"] += 1
    for row in table.values():
        row["recall"] = row["found"] / row["gold"] if row["gold"] else float("nan")
        row["precision"] = row["correct"] / row["predicted"] if row["predicted"] else float("nan")
    return table


# A Maintainer field that names a team, list or project, not a person ("Debian QA Group", "Python Team").
ORGANISATION = re.compile(r"(?i)\b(?:team|maintainers?|group|project|developers|packagers|list|lists|debian|ubuntu|"
                          r"community|foundation|consortium|admins?|support|committee|uploaders|society|"
                          r"contributors|authors)\b|@lists\.|@(?:tracker|qa|packages)\.debian")


def debian_packages() -> list[dict[str, str]]:
    """Package, Section, Maintainer and the Description's first line of every package `apt-cache dumpavail`
    lists (about 63,000 on Debian 12 after `apt-get update`)."""
    try:
        dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True,
                              encoding="utf-8", errors="replace").stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--debian reads `apt-cache dumpavail` ({exc}); on Debian or Ubuntu run `apt-get update` "
                         f"first, elsewhere leave --debian out") from exc
    packages = []
    for block in dump.split("\n\n"):
        fields = dict(re.findall(r"(?m)^(Package|Section|Maintainer|Description): ?(.*)$", block))
        if fields.get("Package") and fields.get("Description"):
            packages.append(fields)
    if not packages:
        raise SystemExit("`apt-cache dumpavail` listed no package: run `apt-get update` first")
    return packages


def debian_cases(synopses: int = 3000, seed: int = 4) -> tuple[list, list[str]]:
    """(recall cases, precision texts): each distinct person maintainer's "Maintainer: Name <email>" line
    under a synopsis of one of their packages, with gold spans (start, end, type, template); and `synopses`
    distinct synopses (seeded sample) with no maintainer line."""
    rng = random.Random(seed)
    packages = debian_packages()
    by_maintainer: dict[str, list[str]] = {}
    for fields in packages:
        maintainer = fields.get("Maintainer", "")
        match = re.fullmatch(r"\s*(.+?)\s*<([^<>\s]+@[^<>\s]+)>\s*", maintainer)
        if match and not ORGANISATION.search(maintainer) and any(c.isalpha() for c in match.group(1)):
            by_maintainer.setdefault(maintainer, []).append(fields["Description"].strip())
    cases = []
    for maintainer in sorted(by_maintainer):
        name, email = re.fullmatch(r"\s*(.+?)\s*<([^<>\s]+)>\s*", maintainer).groups()
        synopsis = rng.choice(sorted(by_maintainer[maintainer]))
        line = f"Maintainer: {name} <{email}>"
        text = f"{synopsis}\n{line}"
        start = len(synopsis) + 1 + len("Maintainer: ")
        cases.append((text, [(start, start + len(name), "person", "maintainer"),
                             (start + len(name) + 2, start + len(name) + 2 + len(email), "email", "maintainer")]))
    distinct = sorted({fields["Description"].strip() for fields in packages} - {text.split("\n")[0] for text, _ in cases})
    return cases, rng.sample(distinct, min(synopses, len(distinct)))


def debian_main(args) -> int:
    from finetune_pipeline.cleaning.privacy import detect_pii
    from finetune_pipeline.settings import PrivacySettings

    cases, clean = debian_cases(args.synopses, args.seed)
    policy = PrivacySettings(detector=args.detector)
    detect_pii(["Warm up: Ada Lovelace wrote this."], policy)  # models load outside the timing
    started = time.perf_counter()
    predictions = detect_pii([text for text, _ in cases] + clean, policy)
    elapsed = time.perf_counter() - started
    found, false = predictions[:len(cases)], predictions[len(cases):]
    print(f"apt-cache dumpavail: {len(cases)} person maintainers (one 'Maintainer: Name <email>' line each, under a "
          f"synopsis), {len(clean)} synopses without a person; detector={args.detector}, {elapsed:.1f} s\n")
    print("| type | values | recall | span precision |")
    print("|---|---|---|---|")
    for kind in ("person", "email"):
        gold = [(text, spans, s, e) for (text, golds), spans in zip(cases, found) for s, e, k, _ in golds if k == kind]
        hits = sum(_found(text, spans, s, e, kind) for text, spans, s, e in gold)
        predicted = [(sp, golds) for (_, golds), spans in zip(cases, found) for sp in spans if sp.kind == kind]
        correct = sum(any(k == kind and sp.start < e and s < sp.end for s, e, k, _ in golds) for sp, golds in predicted)
        print(f"| {kind} | {len(gold)} | {hits / len(gold):.3f} ({hits}) | "
              f"{correct / len(predicted) if predicted else float('nan'):.3f} |")
    damaged = [(text, spans) for text, spans in zip(clean, false) if any(s.kind == "person" for s in spans)]
    other = Counter(s.kind for spans in false for s in spans if s.kind != "person")
    share = len(damaged) / len(clean)
    print(f"\nsynopses without a person that lose a word to <PERSON>: {len(damaged)} of {len(clean)} ({share:.4f}; "
          f"target at most 0.01: {'met' if share <= 0.01 else 'MISSED'}); other kinds found in them: "
          f"{dict(sorted(other.items())) or 'none'}")
    recall = sum(_found(t, sp, s, e, "person") for (t, g), sp in zip(cases, found) for s, e, k, _ in g if k == "person")
    print(f"person recall {recall / len(cases):.3f} (target 0.99: {'met' if recall / len(cases) >= 0.99 else 'MISSED'})")
    if args.show_misses:
        for (text, golds), spans in zip(cases, found):
            for s, e, kind, _ in golds:
                if kind == args.show_misses and not _found(text, spans, s, e, kind):
                    print("MISS", repr(text[s:e]), "|", repr(text), "|", [(text[x.start:x.end], x.kind) for x in spans])
        for text, spans in damaged:
            print("FALSE", [text[s.start:s.end] for s in spans if s.kind == "person"], "|", repr(text))
    return 0


TARGETS = {"email": 0.98, "phone": 0.98, "credit_card": 0.98, "us_ssn": 0.98, "ip_address": 0.98, "person": 0.97}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-type", type=int, default=300)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--detector", choices=["presidio", "patterns"], default="presidio")
    parser.add_argument("--show-misses", type=str, default="", help="print missed values of this type")
    parser.add_argument("--debian", action="store_true",
                        help="real technical text from `apt-cache dumpavail` (maintainer names, package synopses)")
    parser.add_argument("--synopses", type=int, default=3000, help="with --debian: synopses in the precision set")
    args = parser.parse_args(argv)
    if args.debian:
        return debian_main(args)

    from finetune_pipeline.cleaning.privacy import detect_pii, presidio_analyzer
    from finetune_pipeline.settings import PrivacySettings

    cases = make_cases(args.per_type, args.seed)
    policy = PrivacySettings(detector=args.detector)
    if args.detector == "presidio":
        presidio_analyzer()  # load once, outside the timing
    started = time.perf_counter()
    predictions = detect_pii([text for text, _ in cases], policy)
    elapsed = time.perf_counter() - started
    table = score(cases, predictions)
    print(f"{len(cases)} documents, {sum(table[k]['gold'] for k in TYPES)} PII values, detector={args.detector}, "
          f"{elapsed:.1f} s ({len(cases) / elapsed:.0f} documents/s)\n")
    print("| type | values | recall | precision | target recall |")
    print("|---|---|---|---|---|")
    for kind, row in table.items():
        target = TARGETS.get(kind)
        verdict = "" if target is None else f"{target:.2f} {'met' if row['recall'] >= target else 'MISSED'}"
        precision = "" if kind.startswith("person (") else f"{row['precision']:.3f}"
        print(f"| {kind} | {row['gold']} | {row['recall']:.3f} | {precision} | {verdict} |")
    if args.show_misses:
        for (text, gold), spans in zip(cases, predictions):
            for start, end, kind, _ in gold:
                if kind == args.show_misses and not _found(text, spans, start, end, kind):
                    print("MISS", repr(text[start:end]), "|", text, "|",
                          [(text[s.start:s.end], s.kind) for s in spans])
            for s in spans:
                if s.kind == args.show_misses and not any(k == s.kind and s.start < e and b < s.end
                                                          for b, e, k, _ in gold):
                    print("FALSE", repr(text[s.start:s.end]), "|", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
