r"""Real-data gauntlet: data roots built from real public text a Debian machine installs offline, each run
as a newcomer would (`finetune-pipeline run` on the root, defaults otherwise), then measured against the
answers the builder planted.

  .venv/bin/python scripts/bench_real_data.py                      # every root, under /tmp/real_data_roots
  .venv/bin/python scripts/bench_real_data.py --roots pkg_csv instructions --through splits
  .venv/bin/python scripts/bench_real_data.py --rebuild --keep --out /tmp/gauntlet

Roots (built once into --out/<name>/, rebuilt with --rebuild; the runs' outputs are removed before each run):
- `pkg_jsonl`   classification, a table: Debian package synopses (`apt-cache dumpavail`) labeled by archive
                section (6 sections), JSONL `id,text,label`; about 7% carry the real "Maintainer: Name <email>"
                line of their package (real people: the names and addresses are the known answers), 3% a planted
                contact line (names of many origins, nicknames, all-capital surnames, lower-case names; phones;
                e-mails), 5% near copies (one or more word edits, at most 10% of the words, of a real row).
                Labels with one description each, as a newcomer writes them.
- `pkg_csv`     the same rows as a CSV with the columns `synopsis,section` and only the label set in
                finetune.yaml (the newcomer habit the issue names: column recognition).
- `manpages`    classification, documents: the NAME and DESCRIPTION of real manual pages (`man`), one `.txt`
                file per page in raw/<label>/ (label from the folder), 5 manual sections, at most 5 pages of
                one command family (man1 holds thousands of `gcloud_*` pages); planted contact sentences
                (6%) and near copies (5%, 3-10% word edits, spacing kept) as above.
- `instructions` instruction data: "what does this command do" conversations from man-db's `whatis` lines,
                in three chat formats (OpenAI messages JSONL, ShareGPT JSON, Alpaca CSV), with planted
                conflicts (the same question with another command's answer: the known conflicts) and planted
                personal data in the questions.
- `pkg_domain`  classification with a one-sentence `domain.description` and 3 real off-domain documents
                (GPL-3 licence text, a PDF manual, an HTML policy manual from /usr/share/doc) in raw/.

Budget (the only settings changed from the defaults besides labels, descriptions and the domain sentence):
`training.epochs: 1`, `training.max_length: 64`, `training.compare: [lora]`, `splits.cv_below_records: 0`
(classification: one training, no folds), and for the
instruction root the small local base model of examples/instruction (`build_base_model`) with
`instruction.max_length: 128`; they bound the training time on a 2-core machine and change no data stage.

Printed per root: published or refused (and the CLI's exit code), every check's outcome (blocking failures
with their description), rows in/out/rejected per stage and rejects by reason, personal data recall per
planted type (a planted value found verbatim in an exported text is missed) and precision (records with no
planted person that lost a word to <PERSON>), near-duplicate recall and false merges on the planted families,
conflict review tasks against the planted conflicts, the domain filter's outcome (in-domain lost,
off-domain caught), wall time. All of it also goes to --out/results.json (or --json).

No root plants a defect that should stop a run (the planted personal data is redactable, the near copies
removable, the conflicts reviewable): every root should publish, so a refusal here is a defect of the
pipeline. When a run is refused, the candidate split in .pipeline/staging/ is measured (what would have been
published). "Merged outside the family" counts planted copies or originals that dedup merged with a record
the builder did not plant: often a real near duplicate the data held ("X" and "X (data files)"), so read
the pairs (results file) before calling them false.
Needs Debian's `man-db`/`manpages` (`man`, `apropos`) and an apt list (`apt-get update`); the script says
what to install when they are missing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
ROOTS = ("pkg_csv", "pkg_jsonl", "instructions", "manpages", "pkg_domain")
PLACEHOLDER_PERSON = "<PERSON>"

# --------------------------------------------------------------------------------------------------------
# Planted personal data: names of many origins, with nicknames, all-capital surnames and lower-case names.
# Each is (name, style); e-mails and phones are made from them. Fictitious phone ranges (555-01xx, Ofcom's
# drama numbers) keep the planted numbers nobody's.
PLANTED_NAMES = [
    ("Siobhan O'Connor", "irish"), ("Oluwaseun Adebayo", "yoruba"), ("Bobby Tran", "nickname"),
    ("Kasia WISNIEWSKA", "all_caps_surname"), ("Jurgen Muller", "german"), ("Chidi Okonkwo", "igbo"),
    ("Mei-Ling Zhou", "chinese"), ("Santiago Garcia Lopez", "spanish"), ("Aroha Ngata", "maori"),
    ("Bjorn Lindqvist", "swedish"), ("Fatima Zahra El AMRANI", "all_caps_surname"), ("Dmitri Volkov", "russian"),
    ("Kenji Watanabe", "japanese"), ("Ana Paula Ribeiro", "portuguese"), ("Tomasz KOWALCZYK", "all_caps_surname"),
    ("Sven van der Berg", "dutch"), ("Leilani Kahale", "hawaiian"), ("Rajesh Iyer", "indian"),
    ("Yasmin Haddad", "arabic"), ("Ifeoma Nwosu", "igbo"), ("Haruto SATO", "all_caps_surname"),
    ("liam obrien", "lowercase"), ("maria gonzalez", "lowercase"), ("kwame mensah", "lowercase"),
    ("Liz Carter", "nickname"), ("Chuck Hollis", "nickname"), ("Pat McGee", "nickname"),
    ("Sasha Petrova", "nickname"), ("Jojo Mensah", "nickname"), ("Gabi Souza", "nickname"),
    ("Nguyen Van Minh", "vietnamese"), ("Zeynep Yilmaz", "turkish"), ("Aigerim Nurlanovna", "kazakh"),
    ("Thandiwe Dlamini", "zulu"), ("Eero Virtanen", "finnish"), ("Ngozi Eze", "igbo"),
]
CONTACT_TEMPLATES = [
    "Contact: {name} <{email}>, {phone}",
    "Reported by {name} ({email}).",
    "Questions to {name}, phone {phone}.",
    "Thanks to {name} for the patch; reach them at {email}.",
]
TEAM_WORDS = re.compile(r"\b(team|maintainers?|project|group|packagers?|developers?|list|debian|ubuntu|"
                        r"committee|uploaders|qa)\b", re.I)
MAINTAINER = re.compile(r"^(?P<name>[^<>]+?)\s*<(?P<email>[^<>\s]+@[^<>\s]+)>$")


def planted_email(name: str, rng: random.Random) -> str:
    """A planted address made from the name (ASCII, at example domains)."""
    parts = re.sub(r"[^a-z ]", "", name.lower()).split()
    local = f"{parts[0]}.{parts[-1]}" if len(parts) > 1 else parts[0]
    return f"{local}{rng.randint(1, 99)}@{rng.choice(['example.org', 'example.com', 'example.net'])}"


def planted_phone(rng: random.Random) -> str:
    """A phone number in one of several national formats, from ranges reserved for fiction."""
    kind = rng.randrange(3)
    if kind == 0:
        return f"(415) 555-01{rng.randint(0, 99):02d}"
    if kind == 1:
        return f"+1 212 555 01{rng.randint(0, 99):02d}"
    return f"+44 20 7946 0{rng.randint(0, 999):03d}"


def contact_line(rng: random.Random) -> tuple[str, list[dict]]:
    """A contact sentence with a planted name and an e-mail and/or phone, and its answers."""
    name, style = rng.choice(PLANTED_NAMES)
    email, phone = planted_email(name, rng), planted_phone(rng)
    template = rng.choice(CONTACT_TEMPLATES)
    answers = [{"type": "person", "value": name, "style": style, "origin": "planted"}]
    if "{email}" in template:
        answers.append({"type": "email", "value": email, "style": "planted", "origin": "planted"})
    if "{phone}" in template:
        answers.append({"type": "phone", "value": phone, "style": "planted", "origin": "planted"})
    return template.format(name=name, email=email, phone=phone), answers


def person_maintainer(field: str) -> tuple[str, str] | None:
    """(name, email) of a Maintainer field that names one person, not a team or a list."""
    match = MAINTAINER.match(field.strip())
    if not match or TEAM_WORDS.search(match["name"]) or len(match["name"].split()) < 2:
        return None
    return match["name"].strip().strip('"'), match["email"]


def edit_words(text: str, share: float, rng: random.Random, vocabulary: list[str]) -> tuple[str, int]:
    """A near copy: round(share * words) word edits (at least 1): a word replaced by another from the
    vocabulary, dropped, or swapped with its neighbour; the spacing and line breaks between words are kept.
    Returns the text and the number of edits."""
    parts = re.split(r"(\s+)", text.strip())
    pairs = [[parts[i], parts[i + 1] if i + 1 < len(parts) else ""] for i in range(0, len(parts), 2)]
    edits = max(1, round(share * len(pairs)))
    for _ in range(edits):
        if len(pairs) < 3:
            break
        i = rng.randrange(len(pairs))
        op = rng.randrange(3)
        if op == 0:
            pairs[i][0] = rng.choice(vocabulary)
        elif op == 1:
            del pairs[i]
        else:
            j = i + 1 if i < len(pairs) - 1 else i - 1
            pairs[i][0], pairs[j][0] = pairs[j][0], pairs[i][0]
    return "".join(word + space for word, space in pairs), edits


def unwrap(text: str) -> str:
    """Paragraph text from a rendered manual page block: lines joined, spacing collapsed."""
    return re.sub(r"\s+", " ", text).strip()


def man_sections(rendered: str) -> dict[str, str]:
    """A rendered manual page's sections by heading (NAME, DESCRIPTION, ...), each its body text."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in rendered.splitlines():
        if re.match(r"^[A-Z][A-Z0-9 /&-]{2,}$", line.rstrip()):
            current = line.strip()
            sections.setdefault(current, [])
        elif current:
            sections[current].append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def man_excerpt(rendered: str, max_chars: int = 900) -> str | None:
    """The NAME line and the first paragraphs of DESCRIPTION, up to max_chars (whole paragraphs)."""
    parts = man_sections(rendered)
    name, description = parts.get("NAME", "").strip(), parts.get("DESCRIPTION", "").strip()
    if not name or not description:
        return None
    out = [unwrap(name)]
    for paragraph in re.split(r"\n\s*\n", description):
        paragraph = unwrap(paragraph)
        if not paragraph:
            continue
        if sum(map(len, out)) + len(paragraph) > max_chars and len(out) > 1:
            break
        out.append(paragraph[:max_chars])
    return "\n\n".join(out) if len(out) > 1 else None


# --------------------------------------------------------------------------------------------------------
# Measuring: pure functions of the planted answers and what the pipeline wrote.

def record_key(source_uri: str | None, locator: str | None, by_file: bool) -> str:
    """The builder's key of a record: the path under raw/ (documents), plus the row locator (tables)."""
    path = (source_uri or "").split("raw/", 1)[-1]
    return path if by_file else f"{path}|{locator}"


def pii_scores(planted: list[dict], exported: dict[str, list[str]], person_keys: set[str]) -> dict:
    """Recall per planted type and person precision.

    planted: {"key", "type", "value", "style"} answers; exported: key -> exported texts of that record;
    person_keys: keys holding a planted (or real maintainer) person. A planted value still in an exported text,
    verbatim (case-insensitive), is missed; values of records not exported (rejected) are not counted.
    Precision: exported records with no planted person whose text holds <PERSON> lost a word to a false name."""
    by_type: dict[str, dict] = defaultdict(lambda: {"planted": 0, "found": 0, "missed": []})
    by_style: dict[str, dict] = defaultdict(lambda: {"planted": 0, "found": 0})
    for answer in planted:
        texts = exported.get(answer["key"])
        if not texts:
            continue
        row = by_type[answer["type"]]
        row["planted"] += 1
        missed = any(answer["value"].lower() in t.lower() for t in texts)
        if missed:
            row["missed"].append({"key": answer["key"], "style": answer.get("style")})
        else:
            row["found"] += 1
        if answer["type"] == "person":
            by_style[answer.get("style") or "?"]["planted"] += 1
            by_style[answer.get("style") or "?"]["found"] += 0 if missed else 1
    for row in by_type.values():
        row["recall"] = round(row["found"] / row["planted"], 4) if row["planted"] else None
    clean = [k for k in exported if k not in person_keys]
    false = [k for k in clean if any(PLACEHOLDER_PERSON in t for t in exported[k])]
    return {
        "by_type": dict(by_type),
        "person_by_style": {k: {**v, "recall": round(v["found"] / v["planted"], 4)} for k, v in by_style.items()},
        "records_without_person": len(clean),
        "false_person_records": len(false),
        "false_person_share": round(len(false) / len(clean), 4) if clean else None,
        "false_person_keys": false,
    }


def dedup_scores(families: list[dict], outcome: dict[str, dict]) -> dict:
    """Near-duplicate recall and false merges on the planted families.

    families: {"original": key, "copies": [key]}; outcome: key -> {"status": "kept"|"duplicate"|"rejected",
    "record_id", "duplicate_of" (a record id), "split"}. Members rejected for another reason before dedup do
    not count; of the n members that reached dedup, n - 1 are removable, and each member rejected as a
    duplicate of a member of its own family is found (whichever member was kept: the first seen). A false
    merge is a duplicate reject whose kept record is outside the duplicate's family (planted keys only;
    `unplanted_duplicates` counts the duplicates the real data held on its own). `families_split_apart`:
    families with kept members in two splits (a leak the contamination check should have stopped)."""
    ids = {v["record_id"]: k for k, v in outcome.items() if v.get("record_id")}
    family_of = {}
    for n, fam in enumerate(families):
        for key in [fam["original"], *fam["copies"]]:
            family_of[key] = n
    removable = found = 0
    missed_keys, false_pairs, split_apart = [], [], 0
    for n, fam in enumerate(families):
        members = [k for k in [fam["original"], *fam["copies"]]
                   if outcome.get(k, {}).get("status") in ("kept", "duplicate")]
        if len(members) < 2:
            continue
        removable += len(members) - 1
        mine = [k for k in members if outcome[k]["status"] == "duplicate"
                and family_of.get(ids.get(outcome[k].get("duplicate_of"))) == n]
        found += len(mine)
        kept = [k for k in members if outcome[k]["status"] == "kept"]
        missed_keys += kept[1:]
        if len({outcome[k].get("split") for k in kept} - {None}) > 1:
            split_apart += 1
    unplanted = false = 0
    for key, state in outcome.items():
        if state["status"] != "duplicate":
            continue
        mine, theirs = family_of.get(key), family_of.get(ids.get(state.get("duplicate_of")))
        if mine is None and theirs is None:
            unplanted += 1
        elif mine != theirs:
            false += 1
            false_pairs.append((key, ids.get(state.get("duplicate_of"))))
    return {"copies": removable, "found": found, "missed": removable - found,
            "recall": round(found / removable, 4) if removable else None, "missed_keys": missed_keys,
            "false_merges": false, "false_merge_pairs": false_pairs, "families_split_apart": split_apart,
            "unplanted_duplicates": unplanted}


def conflict_scores(tasks: list[set[str]], planted: list[set[str]]) -> dict:
    """Conflict review tasks (each a set of record keys) against the planted conflicts (sets of keys that share a
    prompt, nothing else in the corpus does). A task is real when it holds one planted conflict and nothing else
    (a task that also holds conversations about other things makes the reviewer sort them first); recall:
    planted conflicts held by one task, pure or not. `innocent_in_review`: records in some task that belong to no
    planted conflict (held out of training for nothing)."""
    real = sum(1 for t in tasks if any(p == t for p in planted))
    caught = sum(1 for p in planted if any(p <= t for t in tasks))
    planted_keys = set().union(*planted) if planted else set()
    innocent = set().union(*tasks) - planted_keys if tasks else set()
    return {"tasks": len(tasks), "real": real, "precision": round(real / len(tasks), 4) if tasks else None,
            "planted": len(planted), "caught": caught,
            "recall": round(caught / len(planted), 4) if planted else None,
            "largest_task": max((len(t) for t in tasks), default=0), "innocent_in_review": len(innocent)}


def domain_scores(off_keys: set[str], reasons: dict[str, str], all_keys: set[str]) -> dict:
    """In-domain records lost to the domain filter and off-domain records caught (key -> reject reason)."""
    off = [k for k in all_keys if k in off_keys]
    inside = [k for k in all_keys if k not in off_keys]
    caught = sum(1 for k in off if reasons.get(k) == "off_domain")
    lost = sum(1 for k in inside if reasons.get(k) == "off_domain")
    return {"off_domain": len(off), "off_domain_caught": caught, "in_domain": len(inside),
            "in_domain_lost": lost, "in_domain_lost_share": round(lost / len(inside), 4) if inside else None}


CHECK_LINE = re.compile(r"^(FAILED CHECK|WARNING) (\S+) on (\S+): (.*)$")


def cli_check_lines(stderr: str) -> list[dict]:
    """The CLI's FAILED CHECK / WARNING lines: kind, check, asset, description (first line)."""
    out = []
    for line in stderr.splitlines():
        if match := CHECK_LINE.match(line.strip()):
            out.append({"kind": match[1], "check": match[2], "asset": match[3], "description": match[4]})
    return out


# --------------------------------------------------------------------------------------------------------
# Building the roots from Debian's own text.

def need(command: str, package: str) -> None:
    if shutil.which(command):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {package} (apt-get) ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, stdout=subprocess.DEVNULL)
        return
    sys.exit(f"{command} is missing: install Debian's {package} (apt-get install -y {package}) and run again")


def packages() -> list[dict]:
    """Every package of the apt lists: name, section, synopsis, maintainer."""
    need("apt-cache", "apt")
    text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    if text.count("Package:") < 1000:
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
            text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
        else:
            sys.exit("the apt lists are empty: run `apt-get update` as root, then this script again")
    out = []
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Section|Description|Maintainer): (.*)$", block, re.M))
        if {"Package", "Section", "Description"} <= fields.keys():
            out.append({"package": fields["Package"], "section": fields["Section"].split("/")[-1],
                        "synopsis": fields["Description"].strip(), "maintainer": fields.get("Maintainer", "")})
    return out


PKG_LABELS = {
    "games": "Games and amusements: video games, puzzles, board and card games, their data files.",
    "sound": "Audio software: music players, sound editors and mixers, codecs, audio servers and plugins.",
    "graphics": "Graphics software: image viewers and editors, drawing, 3D modelling, image formats.",
    "science": "Scientific software: physics, chemistry, biology, astronomy, data analysis, simulation.",
    "fonts": "Fonts: typefaces, font families and font tools.",
    "net": "Networking: network clients and servers, protocols, remote access, monitoring.",
}


def pkg_rows(seed: int, per_label: int, maintainer_share: float, contact_share: float,
             copy_share: float) -> tuple[list[dict], dict]:
    """Rows {id, text, label} of package synopses with planted maintainer lines, contacts and near copies,
    and the answers (keys are the row ids)."""
    rng = random.Random(seed)
    by_section: dict[str, list[dict]] = defaultdict(list)
    seen: set[str] = set()
    for p in packages():
        text = p["synopsis"]
        if p["section"] in PKG_LABELS and text.lower() not in seen:
            seen.add(text.lower())
            by_section[p["section"]].append(p)
    rows, truth = [], {"pii": [], "person_keys": [], "families": []}
    vocabulary = sorted({w for ps in by_section.values() for p in ps for w in p["synopsis"].split()})
    for label in PKG_LABELS:
        for p in rng.sample(by_section[label], min(per_label, len(by_section[label]))):
            rows.append({"id": f"pkg-{len(rows) + 1:05d}", "text": p["synopsis"], "label": label, "_p": p})
    rng.shuffle(rows)
    eligible = [r for r in rows if person_maintainer(r["_p"]["maintainer"])]
    with_maintainer = {r["id"] for r in rng.sample(eligible, min(len(eligible), round(maintainer_share * len(rows))))}
    for row in rows:
        person = person_maintainer(row["_p"]["maintainer"])
        if row["id"] in with_maintainer:
            row["text"] += f"\nMaintainer: {person[0]} <{person[1]}>"
            truth["pii"] += [{"key": row["id"], "type": "person", "value": person[0], "style": "real_maintainer"},
                             {"key": row["id"], "type": "email", "value": person[1], "style": "real_maintainer"}]
            truth["person_keys"].append(row["id"])
        elif rng.random() < contact_share:
            line, answers = contact_line(rng)
            row["text"] += "\n" + line
            truth["pii"] += [{**a, "key": row["id"]} for a in answers]
            truth["person_keys"].append(row["id"])
    originals = [r for r in rows if len(r["text"].split()) >= 10 and r["id"] not in truth["person_keys"]]
    for orig in rng.sample(originals, min(len(originals), round(copy_share * len(rows)))):
        text, edits = edit_words(orig["text"], rng.uniform(0.03, 0.10), rng, vocabulary)
        copy = {"id": f"pkg-{len(rows) + 1:05d}", "text": text, "label": orig["label"], "_p": orig["_p"]}
        rows.append(copy)
        truth["families"].append({"original": orig["id"], "copies": [copy["id"]],
                                  "edit_share": round(edits / len(orig["text"].split()), 3)})
    rng.shuffle(rows)
    for r in rows:
        r.pop("_p")
    return rows, truth


def write_yaml(path: Path, text: str) -> None:
    path.write_text(text.strip() + "\n")


BUDGET = """
# Budget of the gauntlet (scripts/bench_real_data.py): training kept short on a 2-core machine; no data stage changes.
training:
  epochs: 1
  max_length: 64
  compare: [lora]
splits:
  cv_below_records: 0   # no cross-validated comparison on the smaller roots (it trains once per fold)
"""


def label_block(labels: dict[str, str]) -> str:
    lines = [f"labels: [{', '.join(labels)}]", "labeling:", "  label_descriptions:"]
    return "\n".join(lines + [f"    {k}: {json.dumps(v)}" for k, v in labels.items()])


def build_pkg_jsonl(root: Path, size: int) -> dict:
    rows, truth = pkg_rows(seed=33, per_label=size // len(PKG_LABELS), maintainer_share=0.07, contact_share=0.03,
                           copy_share=0.05)
    (root / "raw").mkdir(parents=True)
    with (root / "raw" / "packages.jsonl").open("w") as handle:
        for r in rows:
            handle.write(json.dumps(r, ensure_ascii=False) + "\n")
    write_yaml(root / "finetune.yaml", "task: classification\n" + label_block(PKG_LABELS) + BUDGET)
    key = {r["id"]: f"packages.jsonl|id={r['id']}" for r in rows}
    return rekey(truth, key, rows=len(rows), by_file=False)


def build_pkg_csv(root: Path, size: int) -> dict:
    rows, truth = pkg_rows(seed=34, per_label=size // len(PKG_LABELS), maintainer_share=0.07, contact_share=0.03,
                           copy_share=0.05)
    (root / "raw").mkdir(parents=True)
    with (root / "raw" / "packages.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["synopsis", "section"])
        for r in rows:
            writer.writerow([r["text"], r["label"]])
    write_yaml(root / "finetune.yaml", f"task: classification\nlabels: [{', '.join(PKG_LABELS)}]" + BUDGET)
    key = {r["id"]: f"packages.csv|row {n}" for n, r in enumerate(rows, start=1)}
    return rekey(truth, key, rows=len(rows), by_file=False)


def rekey(truth: dict, key: dict[str, str], **extra) -> dict:
    """The answers with the builder's row ids replaced by record keys (file|locator)."""
    return {
        **extra,
        "pii": [{**a, "key": key[a["key"]]} for a in truth["pii"]],
        "person_keys": [key[k] for k in truth["person_keys"]],
        "families": [{**f, "original": key[f["original"]], "copies": [key[c] for c in f["copies"]]}
                     for f in truth["families"]],
        "conflicts": [[key[k] for k in c] for c in truth.get("conflicts", [])],
        "off_domain": truth.get("off_domain", []),
    }


MAN_LABELS = {
    "1": ("user_command", "A command a user runs in a shell: what the program does and how to call it."),
    "2": ("system_call", "A Linux system call: a kernel function a C program calls, its arguments and errors."),
    "3": ("library_function", "A C or Perl library function: what the function computes, its parameters."),
    "5": ("file_format", "A file format or configuration file: its syntax, fields and where it lives."),
    "8": ("admin_command", "A system administration command or daemon, usually run by root."),
}


def render_man(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8"}
    try:
        out = subprocess.run(["man", "--nh", "--nj", "-P", "cat", "-l", str(path)], capture_output=True,
                             env=env, timeout=20).stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return ""
    return re.sub(r".\x08", "", out)


def build_manpages(root: Path, size: int) -> dict:
    need("man", "man-db")
    rng = random.Random(35)
    per = size // len(MAN_LABELS)
    truth: dict = {"pii": [], "person_keys": [], "families": []}
    texts: dict[str, str] = {}
    for section, (label, _) in MAN_LABELS.items():
        folder = Path(f"/usr/share/man/man{section}")
        pages = sorted({p.resolve() for p in folder.glob("*.gz") if p.resolve().exists()})
        rng.shuffle(pages)
        candidates = Counter()  # render no more than 8 pages of one family
        pages = [p for p in pages if candidates.update([re.split(r"[_.-]", p.name)[0]]) or
                 candidates[re.split(r"[_.-]", p.name)[0]] <= 8]
        picked, families = 0, Counter()  # at most 5 pages of one command family (gcloud has thousands)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for start in range(0, len(pages), 4 * 16):
                batch = pages[start:start + 64]
                for page, rendered in zip(batch, pool.map(render_man, batch)):
                    excerpt = man_excerpt(rendered)
                    family = re.split(r"[_.-]", page.name)[0]
                    if excerpt and picked < per and excerpt not in texts.values() and families[family] < 5:
                        families[family] += 1
                        name = re.sub(r"[^A-Za-z0-9_.+-]", "_", page.name.removesuffix(".gz"))
                        texts[f"{label}/{name}.txt"] = excerpt
                        picked += 1
                if picked >= per:
                    break
    keys = sorted(texts)
    for k in rng.sample(keys, round(0.06 * len(keys))):
        line, answers = contact_line(rng)
        texts[k] += "\n\n" + line
        truth["pii"] += [{**a, "key": k} for a in answers]
        truth["person_keys"].append(k)
    vocabulary = sorted({w for t in texts.values() for w in t.split() if w.isalpha()})
    originals = [k for k in keys if k not in truth["person_keys"] and 30 <= len(texts[k].split())]
    for k in rng.sample(originals, min(len(originals), round(0.05 * len(keys)))):
        text, edits = edit_words(texts[k], rng.uniform(0.03, 0.10), rng, vocabulary)
        copy = k.removesuffix(".txt") + "-copy.txt"
        texts[copy] = text
        truth["families"].append({"original": k, "copies": [copy],
                                  "edit_share": round(edits / len(texts[k].split()), 3)})
    for k, text in texts.items():
        (root / "raw" / k).parent.mkdir(parents=True, exist_ok=True)
        (root / "raw" / k).write_text(text + "\n")
    labels = {label: desc for label, desc in MAN_LABELS.values()}
    write_yaml(root / "finetune.yaml", "task: classification\n" + label_block(labels) + BUDGET)
    return {**truth, "rows": len(texts), "by_file": True, "conflicts": [], "off_domain": []}


def whatis_lines() -> list[tuple[str, str]]:
    need("apropos", "man-db")
    out = subprocess.run(["apropos", "-s", "1", "."], capture_output=True, text=True).stdout
    pairs, seen = [], set()
    for line in out.splitlines():
        match = re.match(r"^(\S+) \(1\)\s+- (.+)$", line)
        if match and match[1] not in seen and not match[2].endswith("...") and len(match[2].split()) >= 3:
            seen.add(match[1])
            pairs.append((match[1], match[2].strip().rstrip(".")))
    return pairs


PROMPTS = ["What does the {cmd} command do?", "What is {cmd} used for?", "Explain the {cmd} command in one sentence.",
           "I found {cmd} on my Debian system. What is it?"]
ANSWERS = ["{cmd}: {desc}.", "The {cmd} command: {desc}.", "{desc} ({cmd})."]


def build_instructions(root: Path, size: int) -> dict:
    rng = random.Random(36)
    pairs = rng.sample(whatis_lines(), size)
    conversations, truth = [], {"pii": [], "person_keys": [], "families": [], "conflicts": []}
    for n, (cmd, desc) in enumerate(pairs):
        prompt = rng.choice(PROMPTS).format(cmd=cmd)
        answer = rng.choice(ANSWERS).format(cmd=cmd, desc=desc)
        cid = f"c{n + 1:04d}"
        if rng.random() < 0.05:
            name, style = rng.choice(PLANTED_NAMES)
            email = planted_email(name, rng)
            prompt = f"Hi, I'm {name} ({email}). {prompt}"
            truth["pii"] += [{"key": cid, "type": "person", "value": name, "style": style},
                             {"key": cid, "type": "email", "value": email, "style": "planted"}]
            truth["person_keys"].append(cid)
        conversations.append({"id": cid, "prompt": prompt, "answer": answer, "category": "commands"})
    for n, conv in enumerate(rng.sample(conversations[:], 8)):  # planted conflicts: the same prompt, a wrong answer
        other_cmd, other = rng.choice(pairs)
        cid = f"x{n + 1:04d}"
        conversations.append({"id": cid, "prompt": conv["prompt"].split(". ", 1)[-1] if "Hi, I'm" in conv["prompt"]
                              else conv["prompt"], "answer": f"{other}.", "category": "commands"})
        truth["conflicts"].append([conv["id"], cid])
    rng.shuffle(conversations)
    third = len(conversations) // 3
    chats, sharegpt, alpaca = conversations[:third], conversations[third:2 * third], conversations[2 * third:]
    raw = root / "raw"
    raw.mkdir(parents=True)
    with (raw / "chats.jsonl").open("w") as handle:
        for c in chats:
            handle.write(json.dumps({"id": c["id"], "category": c["category"], "messages": [
                {"role": "user", "content": c["prompt"]}, {"role": "assistant", "content": c["answer"]}]}) + "\n")
    (raw / "sharegpt.json").write_text(json.dumps([{"id": c["id"], "category": c["category"], "conversations": [
        {"from": "human", "value": c["prompt"]}, {"from": "gpt", "value": c["answer"]}]} for c in sharegpt], indent=1))
    with (raw / "alpaca.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "category", "instruction", "input", "output"])
        for c in alpaca:
            writer.writerow([c["id"], c["category"], c["prompt"], "", c["answer"]])
    files = {c["id"]: "chats.jsonl" for c in chats} | {c["id"]: "sharegpt.json" for c in sharegpt} | \
        {c["id"]: "alpaca.csv" for c in alpaca}
    key = {cid: f"{f}|id={cid}" for cid, f in files.items()}
    write_yaml(root / "finetune.yaml", """
task: instruction
# Budget of the gauntlet (scripts/bench_real_data.py): the small local base model of examples/instruction,
# one epoch; no data stage changes.
training:
  build_base_model:
    enabled: true
  epochs: 1
  instruction:
    base_model: .pipeline/base_model
    max_length: 128
    generation_samples: 4
    generation_max_new_tokens: 24
""")
    return rekey(truth, key, rows=len(conversations), by_file=False)


OFF_DOMAIN_DOCS = ["/usr/share/common-licenses/GPL-3", "/usr/share/doc/libtasn1-doc/libtasn1.pdf",
                   "/usr/share/doc/python3/python-policy.html"]


def build_pkg_domain(root: Path, size: int) -> dict:
    truth = build_pkg_jsonl(root, size)
    settings = (root / "finetune.yaml").read_text()
    sentence = ("One-line summaries of Debian software packages: what a game, sound, graphics, science, font or "
                "networking package provides.")
    write_yaml(root / "finetune.yaml", settings + f"\ndomain:\n  description: {json.dumps(sentence)}\n")
    docs = root / "raw" / "docs"
    docs.mkdir()
    off = []
    for path in map(Path, OFF_DOMAIN_DOCS):
        if not path.exists():
            print(f"pkg_domain: {path} is missing (install its Debian package); left out", file=sys.stderr)
            continue
        name = path.name if path.suffix else path.name + ".txt"
        shutil.copy(path, docs / name)
        off.append(f"docs/{name}")
    return {**truth, "off_domain_files": off}


BUILDERS = {"pkg_jsonl": build_pkg_jsonl, "pkg_csv": build_pkg_csv, "manpages": build_manpages,
            "instructions": build_instructions, "pkg_domain": build_pkg_domain}


# --------------------------------------------------------------------------------------------------------
# Running and reading back.

OUTPUTS = (".pipeline", "exports", "models", ".dagster_home")


def run_root(root: Path, timeout: int, through: str | None) -> dict:
    for name in OUTPUTS:
        shutil.rmtree(root / name, ignore_errors=True)
    home = root / ".dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "FINETUNE_DATA_DIR": str(root), "DAGSTER_HOME": str(home), "DO_NOT_TRACK": "true",
           "UNSTRUCTURED_DISABLE_NOTICE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cli = str(VENV_BIN / "finetune-pipeline")
    start = time.monotonic()
    build = subprocess.run([cli, "build-base-model"], env=env, capture_output=True, text=True, timeout=timeout)
    command = [cli, "run"] + (["--select", "+key:published_splits or key:rejected_records"] if through else [])
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = "timeout", (exc.stdout or b"").decode(), (exc.stderr or b"").decode()
    wall = time.monotonic() - start
    (root / "run.stdout.log").write_text(stdout)
    (root / "run.stderr.log").write_text(build.stdout + build.stderr + stderr)
    return {"rc": rc, "wall_s": round(wall, 1), "stdout": stdout, "stderr": stderr, "command": " ".join(command)}


def check_events(home: Path) -> list[dict]:
    """Every asset check evaluation of the root's run, from its Dagster instance."""
    try:
        from dagster import DagsterEventType, DagsterInstance

        instance = DagsterInstance.from_config(str(home))
        out = []
        for run in instance.get_runs():
            for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
                data = record.dagster_event.event_specific_data
                out.append({"check": data.check_name, "asset": data.asset_key.to_user_string(),
                            "passed": data.passed, "severity": str(getattr(data.severity, "value", data.severity)),
                            "description": data.description})
        return out
    except Exception as err:  # reading back is best effort; the CLI lines stay
        return [{"check": "?", "asset": "?", "passed": None, "severity": "?", "description": f"unreadable: {err!r}"}]


def read_outputs(root: Path, truth: dict) -> dict:
    import polars as pl

    by_file = bool(truth.get("by_file"))
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.stored import has_stored, stored_frame, stored_rejects

    stats_dir = root / ".pipeline" / "stats"
    stages = []
    for stage in ("raw_corpus", "cleaned_corpus", "deduplicated_corpus", "labeled_corpus", "augmented_corpus"):
        path = stats_dir / f"{stage}.json"
        if path.exists():
            s = json.loads(path.read_text())
            added = s.get("augmented_rows", 0)
            stages.append({"stage": stage, "in": s["rows_out"] - added + s["rows_rejected"],
                           "out": s["rows_out"] - added, "rejected": s["rows_rejected"], "added": added,
                           "passes": s.get("redaction_passes")})
    frames = [stored_rejects(DataRoot(root), stage) for stage in sorted(  # the stages that stored rejects
        {p.name.removesuffix(".parquet") for p in (root / ".pipeline" / "rejects").glob("*")
         if not p.name.startswith(".")})]
    rejects = pl.concat(frames, how="diagonal_relaxed") if frames else None
    reasons = Counter()
    outcome: dict[str, dict] = {}
    reject_reason: dict[str, str] = {}
    conflict_tasks: dict[str, set] = defaultdict(set)
    reject_details = defaultdict(list)
    if rejects is not None and rejects.height:
        for r in rejects.iter_rows(named=True):
            reasons[(r["stage"], r["reason"])] += 1
            if len(reject_details[(r["stage"], r["reason"])]) < 2:
                reject_details[(r["stage"], r["reason"])].append((r["detail"] or "")[:300])
            key = record_key(r["source_uri"], r["locator"], by_file)
            reject_reason[key] = r["reason"]
            dup = r["reason"] in ("exact_duplicate", "near_duplicate", "semantic_duplicate")
            outcome[key] = {"status": "duplicate" if dup else "rejected", "record_id": r["record_id"],
                            "duplicate_of": r["duplicate_of"], "reason": r["reason"]}
            if r["reason"] == "in_review" and (m := re.match(r"^(\S+): same prompt", r["detail"] or "")):
                conflict_tasks[m[1]].add(key)
    uris = list(rejects["source_uri"]) if rejects is not None and rejects.height else []
    published = root / "exports" / "splits"
    staged = root / ".pipeline" / "staging" / "exports" / "splits"
    where = published if list(published.glob("*.jsonl")) else staged
    exported: dict[str, list[str]] = defaultdict(list)
    split_sizes = {}
    for path in sorted(where.glob("*.jsonl")):
        n = 0
        for line in path.open():
            rec = json.loads(line)
            n += 1
            if rec.get("augmented_from"):
                continue
            key = record_key(rec.get("source_uri"), rec.get("locator"), by_file)
            texts = [rec.get("text") or ""]
            if rec.get("messages"):
                msgs = rec["messages"] if isinstance(rec["messages"], list) else json.loads(rec["messages"])
                texts += [m.get("content", "") for m in msgs]
            exported[key] += texts
            uris.append(rec.get("source_uri"))
            outcome[key] = {"status": "kept", "record_id": rec["record_id"], "split": rec.get("split", path.stem)}
        split_sizes[path.stem] = n
    pii = pii_scores(truth["pii"], exported, set(truth["person_keys"]))
    examples = []
    for key in pii["false_person_keys"][:8]:
        text = " | ".join(exported[key])
        i = text.find(PLACEHOLDER_PERSON)
        examples.append(f"{key}: ...{text[max(0, i - 60):i + 60]}...")
    pii["false_person_examples"] = examples
    pii.pop("false_person_keys")
    # the builder's file names hold no personal data: a placeholder in one is a false finding
    changed = [u.split("raw/", 1)[-1] for u in uris if u and re.search(r"<[A-Z_]+>", u)]
    result = {
        "source_uri_redacted": {"records": len(changed), "names": len(set(changed)),
                                "examples": sorted(set(changed))[:8]},
        "by_file": by_file,
        "accounted": len({k.split("|")[0] if by_file else k for k in outcome}),
        "stages": stages,
        "rejects": [{"stage": s, "reason": r, "n": n, "detail": reject_details[(s, r)]}
                    for (s, r), n in sorted(reasons.items())],
        "splits_from": "published" if where == published else "staged candidate (not published)",
        "split_sizes": split_sizes,
        "pii": pii,
        "dedup": dedup_scores(truth["families"], outcome) if truth["families"] else None,
        "conflicts": conflict_scores(list(conflict_tasks.values()), [set(c) for c in truth["conflicts"]])
        if truth.get("conflicts") else None,
    }
    for metrics in sorted((root / "models").glob("*/metrics.json")):  # published adapters (full runs)
        m = json.loads(metrics.read_text())
        result.setdefault("adapters", {})[metrics.parent.name] = {
            k: m.get(k) for k in ("approach", "test", "majority_baseline", "base_model_test", "epochs_run")
            if k in m}
    stats = root / ".pipeline" / "stats" / "deduplicated_corpus.json"
    if truth.get("off_domain_files") and stats.exists() and has_stored(DataRoot(root), "cleaned_corpus"):
        # every record the domain filter scored: the stored output of cleaning, the filter's input
        offs = {f"{f}|" for f in truth["off_domain_files"]}
        frame = stored_frame(DataRoot(root), "cleaned_corpus", columns=["source_uri", "locator"])
        seen = [record_key(u, loc, False) for u, loc in frame.iter_rows()]
        all_keys = set(seen)
        off_keys = {k for k in all_keys if k.split("|")[0] + "|" in offs}
        result["domain"] = domain_scores(off_keys, reject_reason, all_keys)
        result["domain"]["stats"] = json.loads(stats.read_text()).get("domain")
    elif truth.get("off_domain_files"):
        result["domain"] = "not reached: the run stopped before deduplicated_corpus"
    return result


def verdict(run: dict, checks: list[dict], outputs: dict) -> str:
    if run["rc"] == "timeout":
        return "TIMEOUT"
    failed = [c for c in checks if c["passed"] is False and c["severity"] != "WARN"]
    if run["rc"] == 0 and not failed and outputs["splits_from"] == "published":
        return "published"
    # nothing planted should stop a run: a refusal is the pipeline's defect
    return "REFUSED (pipeline defect)" if failed else f"FAILED (exit {run['rc']})"


def report(name: str, res: dict) -> str:
    lines = [f"\n=== {name}: {res['verdict']}  (exit {res['run']['rc']}, {res['run']['wall_s']} s; "
             f"{res['truth_rows']} rows built) ==="]
    failed = [c for c in res["checks"] if c["passed"] is False]
    if res["verdict"].startswith(("FAILED", "TIMEOUT")):
        lines += ["  stderr (tail):", *("    " + t for t in res["stderr_tail"].strip().splitlines()[-12:])]
    lines.append(f"checks: {sum(1 for c in res['checks'] if c['passed'])} passed, "
                 f"{sum(1 for c in failed if c['severity'] != 'WARN')} blocking failed, "
                 f"{sum(1 for c in failed if c['severity'] == 'WARN')} warnings")
    for c in failed:
        desc = (c["description"] or "").replace("\n", " ")
        lines.append(f"  {'FAILED' if c['severity'] != 'WARN' else 'warning'} {c['check']}: {desc[:400]}")
    for line in res["cli_checks"]:
        if not any(line["check"] == c["check"] for c in failed):
            lines.append(f"  (cli) {line['kind']} {line['check']}: {line['description'][:300]}")
    for s in res["outputs"]["stages"]:
        lines.append(f"  {s['stage']:<22} in {s['in']:>5}  out {s['out']:>5}  rejected {s['rejected']:>5}"
                     + (f"  added {s['added']}" if s["added"] else ""))
    for r in res["outputs"]["rejects"]:
        lines.append(f"    reject {r['stage']:<20} {r['reason']:<22} {r['n']:>5}   e.g. {r['detail'][0][:140]!r}")
    o = res["outputs"]
    lines.append(f"  splits ({o['splits_from']}): {o['split_sizes']}; built {'files' if o.get('by_file') else 'rows'} "
                 f"kept or rejected: {o['accounted']} of {res['truth_rows']}")
    if o["source_uri_redacted"]["records"]:
        u = o["source_uri_redacted"]
        lines.append(f"  source_uri changed by redaction (no file name here holds personal data): {u['records']} "
                     f"records, {u['names']} distinct names left, e.g. {u['examples'][:4]}")
    for t, row in o["pii"]["by_type"].items():
        lines.append(f"  PII {t:<7} recall {row['recall']} ({row['found']}/{row['planted']})"
                     + (f"; missed: {[m['style'] for m in row['missed']][:10]}" if row["missed"] else ""))
    p = o["pii"]
    lines.append(f"  PII person precision: {p['false_person_records']} of {p['records_without_person']} records "
                 f"without a planted person lost a word to <PERSON> ({p['false_person_share']})")
    for e in p["false_person_examples"][:5]:
        lines.append(f"    {e!r}")
    if o["dedup"]:
        d = o["dedup"]
        lines.append(f"  near copies: recall {d['recall']} ({d['found']}/{d['copies']}), merged outside the family "
                     f"{d['false_merges']}, families split apart {d['families_split_apart']}, duplicates the real "
                     f"data held {d['unplanted_duplicates']}")
    if o.get("conflicts"):
        c = o["conflicts"]
        lines.append(f"  conflicts: {c['tasks']} review tasks, {c['real']} real (precision {c['precision']}); "
                     f"planted {c['planted']}, caught {c['caught']} (recall {c['recall']}); largest task "
                     f"{c['largest_task']} records; {c['innocent_in_review']} records held in review that are no "
                     f"planted conflict")
    for name, m in o.get("adapters", {}).items():
        lines.append(f"  adapter {name}: test {m.get('test')}; baseline {m.get('majority_baseline') or m.get('base_model_test')}")
    if isinstance(o.get("domain"), str):
        lines.append(f"  domain filter: {o['domain']}")
    elif o.get("domain"):
        d = o["domain"]
        lines.append(f"  domain filter: off-domain caught {d['off_domain_caught']}/{d['off_domain']}, in-domain lost "
                     f"{d['in_domain_lost']}/{d['in_domain']} ({d['in_domain_lost_share']})")
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    """The results file as a Markdown table (docs/benchmarks.md), one row per root."""
    head = ["root", "outcome", "wall s", "blocking checks failed", "records in / exported", "rejects (top reasons)",
            "PII recall person / email / phone", "<PERSON> in records without a person",
            "source_uri redacted (no name in it)", "near copies found",
            "conflict tasks real", "domain: off caught / in lost"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        o = res["outputs"]
        failed = [c["check"] for c in res["checks"] if c["passed"] is False and c["severity"] != "WARN"]
        first = o["stages"][0]["in"] if o["stages"] else 0
        exported = sum(o["split_sizes"].values())
        top = sorted(o["rejects"], key=lambda r: -r["n"])[:3]
        pii = o["pii"]["by_type"]
        recall = " / ".join(f"{pii[t]['found']}/{pii[t]['planted']}" if t in pii else "-"
                            for t in ("person", "email", "phone"))
        p = o["pii"]
        d, c, dom = o.get("dedup"), o.get("conflicts"), o.get("domain")
        cells = [
            name, res["verdict"], str(res["run"]["wall_s"]), ", ".join(failed) or "none",
            f"{first} / {exported}" + ("" if o["splits_from"] == "published" else " (staged)"),
            ", ".join(f"{r['reason']} {r['n']}" for r in top) or "none", recall,
            f"{p['false_person_records']}/{p['records_without_person']}" if p["records_without_person"] else "-",
            str(o.get("source_uri_redacted", {}).get("records", "-")),
            f"{d['found']}/{d['copies']}, {d['false_merges']} outside family, {d['families_split_apart']} split apart"
            if d and d["copies"] else "-",
            f"{c['real']}/{c['tasks']} (planted caught {c['caught']}/{c['planted']})" if c else "-",
            dom if isinstance(dom, str) else f"{dom['off_domain_caught']}/{dom['off_domain']} / "
            f"{dom['in_domain_lost']}/{dom['in_domain']}" if dom else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/real_data_roots", help="work folder holding the roots")
    parser.add_argument("--roots", nargs="+", choices=ROOTS, default=list(ROOTS))
    parser.add_argument("--size", type=int, default=1800, help="rows (documents, conversations: fewer) per root")
    parser.add_argument("--rebuild", action="store_true", help="build the roots again from the Debian sources")
    parser.add_argument("--keep", action="store_true", help="keep each root's outputs after measuring")
    parser.add_argument("--through", choices=["splits"], help="stop at the published split (no training)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--json", help="result file (default: <out>/results.json)")
    parser.add_argument("--table", action="store_true", help="print the results file as a Markdown table, run nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(markdown_table(json.loads(Path(args.json or out / "results.json").read_text())))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"manpages": max(50, args.size // 2), "instructions": max(50, args.size // 6),
             "pkg_domain": max(60, args.size // 2)}
    results = {}
    result_path = Path(args.json or out / "results.json")
    if result_path.exists():
        results = json.loads(result_path.read_text())
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = len(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.splitlines())
    commit += f" (+{dirty} uncommitted files)" if dirty else ""
    for name in args.roots:
        root = out / name
        truth_path = out / f"{name}.truth.json"
        if args.rebuild or not truth_path.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            t0 = time.monotonic()
            truth = BUILDERS[name](root, sizes.get(name, args.size))
            truth_path.write_text(json.dumps(truth, indent=1))
            print(f"built {name}: {truth['rows']} rows in {time.monotonic() - t0:.0f} s ({root})", file=sys.stderr)
        truth = json.loads(truth_path.read_text())
        print(f"running {name} ...", file=sys.stderr, flush=True)
        run = run_root(root, args.timeout, args.through)
        checks = check_events(root / ".dagster_home")
        outputs = read_outputs(root, truth)
        res = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "truth_rows": truth["rows"], "run": {k: v for k, v in run.items() if k not in ("stdout", "stderr")},
               "cli_checks": cli_check_lines(run["stderr"]), "checks": checks, "outputs": outputs,
               "stderr_tail": run["stderr"][-3000:]}
        res["verdict"] = verdict(run, checks, outputs)
        results[name] = res
        print(report(name, res), flush=True)
        result_path.write_text(json.dumps(results, indent=1, default=str))
        if not args.keep:
            for sub in OUTPUTS:
                shutil.rmtree(root / sub, ignore_errors=True)
    print("\n" + markdown_table(results))
    print(f"\nresults: {result_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
