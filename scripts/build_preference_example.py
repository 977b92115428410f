r"""Build the committed preference example root `examples/preference/`: a few hundred preference pairs about
Debian packages, from real text: the package descriptions of the packages installed on this machine
(`dpkg-query`). The chosen answer to "What does <package> do?" is the package's own description (its first
paragraph); the rejected one is a plausibly worse answer built from real text: another package's description,
the description cut off mid-sentence, or the one-line synopsis alone.

Run from the repository root:  .venv/bin/python scripts/build_preference_example.py [--out FOLDER]

It deletes and recreates `<out>/raw/` and (re)writes `<out>/finetune.yaml` and `<out>/truth.json` (what was
planted where: next to raw/, never read as data). Seeded `random.Random(34)`: on the same installed
packages every run writes the same bytes. Files:

  raw/pairs_plain.jsonl     TRL preference format, explicit prompt, plain text: {id, prompt, chosen, rejected}
  raw/pairs_chat.jsonl      TRL conversational format, implicit prompt: {id, chosen, rejected} as full
                            conversations ([system], user, assistant) sharing every turn but the answer
  raw/ultrafeedback.json    UltraFeedback-style: {id, instruction, completions: [{response, overall_score}]},
                            3-5 rated answers per prompt, some rated alike (ties)
  raw/conflicts.jsonl       instruction format (OpenAI `messages`): the same question asked twice (or three
                            times) with different answers, the right one first, so that a resolved conflict
                            (dedup.conflicts: keep_first) becomes pairs (`pairs_from_conflicts`)

Planted (listed in truth.json, all fictitious): e-mail addresses, phone numbers and person names in prompts
and answers; malformed rows: chosen equal to rejected, a missing side, an empty prompt, an unknown role, a
broken JSON line, a rated row whose answers all tie and one with a single rated answer.

The base model is not committed: `finetune-pipeline build-base-model` (run by `make run`) builds a small
random-weight causal LM with a tokenizer trained on this root's text into `.pipeline/base_model/`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "examples" / "preference"
SEED = 34

FINETUNE_YAML = """\
# The preference example root: pairs about Debian packages in TRL's two input forms, UltraFeedback-style rated
# answers, and instruction conflicts that become pairs; run end to end offline on a small causal LM built
# from this root's own text (`finetune-pipeline build-base-model`, called by `make run`).
#   FINETUNE_DATA_DIR=examples/preference make run
# Rebuild with: .venv/bin/python scripts/build_preference_example.py
task: preference
privacy:
  detector: presidio       # person names need NER; the patterns alone find e-mails and phones only
dedup:
  conflicts: keep_first    # raw/conflicts.jsonl lists the right answer first: it is kept, the others rejected
checks:
  min_records: 50
splits:
  cv_below_records: 0      # DPO is the kind's one approach: folds would train it three more times to compare it with nothing
preference:
  pairing: best_vs_each    # rated answers: the best against every answer rated lower; ties dropped
  max_length_ratio: 4.0
training:
  build_base_model:
    enabled: true          # built from raw/ when missing: random weights, a BPE tokenizer trained here
  preference:              # DPO on a LoRA adapter; the reference is the base with the adapter disabled
    base_model: .pipeline/base_model   # relative: under this data root
    epochs: 2
    batch_size: 4
    learning_rate: 0.001
    lora_r: 16
    lora_dropout: 0.0
    max_length: 256
    max_prompt_length: 128
"""

SYSTEM = "You are a helpful assistant who knows the Debian operating system and its packages."
QUESTIONS = ("What does the Debian package {p} do?", "What is {p} for?", "Could you explain what {p} provides?",
             "I found {p} on my system. What does it do?", "Tell me briefly what the {p} package is.")
PEOPLE = ("Margaret Okafor", "Tomasz Wielgosz", "Priya Raghunathan", "Henrik Solberg", "Lucía Carvajal",
          "Dmitri Antonov", "Aisha Bello", "Connor McAllister", "Yuki Hashimoto", "Fatima Zahra Idrissi")


def package_descriptions() -> list[dict]:
    """Installed packages with a usable description: {package, synopsis, description} sorted by name; the
    description is the first paragraph of the long description (80 characters or more, ending with a full
    stop, without addresses or links)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\x1f${binary:Summary}\x1f${Description}\x1e"],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for entry in out.split("\x1e"):
        if not entry.strip():
            continue
        package, synopsis, description = entry.strip("\n").split("\x1f")
        paragraph = []
        for line in description.split("\n")[1:]:
            if line.strip() == ".":
                break
            paragraph.append(line.strip())
        text = " ".join(" ".join(paragraph).split())
        if (len(text) >= 80 and text.endswith(".") and not re.search(r"@|https?:|www\.", text)
                and len(synopsis) >= 10):
            found[package] = {"package": package, "synopsis": synopsis.strip(), "description": shorten(text)}
    return [found[p] for p in sorted(found)]


def shorten(text: str, limit: int = 420) -> str:
    """The text cut after the last full sentence within `limit` characters (the first sentence at least)."""
    sentences = re.split(r"(?<=\.)\s+", text)
    kept = [sentences[0]]
    for sentence in sentences[1:]:
        if len(" ".join(kept + [sentence])) > limit:
            break
        kept.append(sentence)
    return " ".join(kept)


def answer(entry: dict) -> str:
    return f"{entry['package']}: {entry['synopsis']}. {entry['description']}"


def worse_answer(entry: dict, other: dict, rng: random.Random) -> tuple[str, str]:
    """A plausibly worse answer from real text, and how it was made."""
    kind = rng.choices(("other_package", "truncated", "synopsis_only"), weights=(9, 7, 4))[0]
    if kind == "other_package":  # the right name, the description of another package
        return f"{entry['package']}: {other['synopsis']}. {other['description']}", kind
    if kind == "truncated":  # cut mid-word at 40-60% of the answer
        full = answer(entry)
        return full[: int(len(full) * rng.uniform(0.4, 0.6))].rstrip(" .,"), kind
    return f"{entry['package']}: {entry['synopsis']}.", kind


class Planter:
    """Puts fictitious personal data into texts and remembers where (file, row id, field, kind, value)."""

    def __init__(self, rng: random.Random):
        self.rng, self.truth = rng, []

    def person(self, file: str, row: str, field: str) -> tuple[str, str, str]:
        name = self.rng.choice(PEOPLE)
        user = name.lower().split()[0] + "." + name.lower().split()[-1]
        email = f"{user}@example.org"
        phone = f"+1 555 01{self.rng.randrange(10, 99)} {self.rng.randrange(1000, 9999)}"
        for kind, value in (("person", name), ("email", email), ("phone", phone)):
            self.truth.append({"file": file, "id": row, "field": field, "kind": kind, "value": value})
        return name, email, phone

    def prompt(self, question: str, file: str, row: str, field: str = "prompt") -> str:
        name, email, phone = self.person(file, row, field)
        return f"Hi, this is {name} ({email}, phone {phone}). {question}"

    def answer(self, text: str, file: str, row: str, field: str) -> str:
        name, email, phone = self.person(file, row, field)
        return f"{text} If you need more help, {name} from our support team answers at {email} or {phone}."


def write_jsonl(path: Path, rows: list, broken: str | None = None) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if broken is not None:
        lines.insert(len(lines) // 2, broken)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(out: Path) -> dict:
    rng = random.Random(SEED)
    entries = package_descriptions()
    rng.shuffle(entries)
    plain, chat, rated, conflict = entries[:130], entries[130:260], entries[260:310], entries[310:345]
    pool = entries  # other packages' descriptions
    planter = Planter(rng)
    malformed = []

    def other_than(entry):
        while (other := rng.choice(pool))["package"] == entry["package"]:
            pass
        return other

    def question(entry):
        return rng.choice(QUESTIONS).format(p=entry["package"])

    # explicit prompt, plain text
    plain_rows = []
    for n, entry in enumerate(plain, start=1):
        row_id = f"plain-{n:03d}"
        rejected, kind = worse_answer(entry, other_than(entry), rng)
        prompt, chosen = question(entry), answer(entry)
        if n % 12 == 0:
            prompt = planter.prompt(prompt, "pairs_plain.jsonl", row_id)
        if n % 17 == 0:
            chosen = planter.answer(chosen, "pairs_plain.jsonl", row_id, "chosen")
        plain_rows.append({"id": row_id, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                           "rejected_kind": kind})
    bad = [{"id": "plain-bad-1", "prompt": question(plain[0]), "chosen": answer(plain[0]),
            "rejected": answer(plain[0])},
           {"id": "plain-bad-2", "prompt": question(plain[1]), "chosen": answer(plain[1])},
           {"id": "plain-bad-3", "prompt": "  ", "chosen": answer(plain[2]), "rejected": plain[2]["synopsis"]}]
    malformed += [{"file": "pairs_plain.jsonl", "id": "plain-bad-1", "reason": "chosen_equals_rejected"},
                  {"file": "pairs_plain.jsonl", "id": "plain-bad-2", "reason": "missing_side"},
                  {"file": "pairs_plain.jsonl", "id": "plain-bad-3", "reason": "empty_prompt"}]
    write_jsonl(out / "raw" / "pairs_plain.jsonl", plain_rows + bad)

    # conversational, implicit prompt: full conversations sharing every turn but the answer
    chat_rows = []
    for n, entry in enumerate(chat, start=1):
        row_id = f"chat-{n:03d}"
        rejected, kind = worse_answer(entry, other_than(entry), rng)
        user, chosen = question(entry), answer(entry)
        if n % 11 == 0:
            user = planter.prompt(user, "pairs_chat.jsonl", row_id, "chosen/rejected user turn")
        if n % 19 == 0:
            rejected = planter.answer(rejected, "pairs_chat.jsonl", row_id, "rejected")
        head = ([{"role": "system", "content": SYSTEM}] if n % 3 == 0 else []) + [{"role": "user", "content": user}]
        chat_rows.append({"id": row_id, "chosen": head + [{"role": "assistant", "content": chosen}],
                          "rejected": head + [{"role": "assistant", "content": rejected}], "rejected_kind": kind})
    bad_entry = chat[0]
    chat_rows.append({"id": "chat-bad-1",
                      "chosen": [{"role": "user", "content": question(bad_entry)},
                                 {"role": "bot", "content": answer(bad_entry)}],
                      "rejected": [{"role": "user", "content": question(bad_entry)},
                                   {"role": "bot", "content": bad_entry["synopsis"]}]})
    malformed += [{"file": "pairs_chat.jsonl", "id": "chat-bad-1", "reason": "unknown_role"},
                  {"file": "pairs_chat.jsonl", "id": "(the broken line)", "reason": "malformed_row"}]
    write_jsonl(out / "raw" / "pairs_chat.jsonl", chat_rows, broken='{"id": "chat-bad-2", "chosen": [')

    # UltraFeedback-style rated answers
    rated_rows = []
    for n, entry in enumerate(rated, start=1):
        row_id = f"rated-{n:03d}"
        answers = [(answer(entry), 5.0)]
        for _ in range(rng.choice((2, 3))):
            text, kind = worse_answer(entry, other_than(entry), rng)
            answers.append((text, {"other_package": 1.0, "truncated": 2.0, "synopsis_only": 3.0}[kind]))
        if n % 5 == 0:  # a second good answer rated as high as the best: a tie
            answers.append((f"The {entry['package']} package: {entry['description']}", 5.0))
        rng.shuffle(answers)
        texts = [t for t, _ in answers]
        if n % 13 == 0:
            texts[0] = planter.answer(texts[0], "ultrafeedback.json", row_id, "completions[0].response")
        rated_rows.append({"id": row_id, "instruction": question(entry),
                           "completions": [{"response": t, "overall_score": s} for t, (_, s) in zip(texts, answers)]})
    tie_entry, one_entry = rated[0], rated[1]
    rated_rows.append({"id": "rated-bad-1", "instruction": question(tie_entry), "completions": [
        {"response": answer(tie_entry), "overall_score": 4.0},
        {"response": f"The {tie_entry['package']} package: {tie_entry['description']}", "overall_score": 4.0}]})
    rated_rows.append({"id": "rated-bad-2", "instruction": question(one_entry), "completions": [
        {"response": answer(one_entry), "overall_score": 5.0}, {"response": one_entry["synopsis"], "overall_score": None}]})
    malformed += [{"file": "ultrafeedback.json", "id": "rated-bad-1", "reason": "tied_ratings"},
                  {"file": "ultrafeedback.json", "id": "rated-bad-2", "reason": "too_few_rated_answers"}]
    (out / "raw" / "ultrafeedback.json").write_text(json.dumps(rated_rows, ensure_ascii=False, indent=1) + "\n",
                                                    encoding="utf-8")

    # instruction conflicts: the right answer first, then one or two others
    conflict_rows = []
    for n, entry in enumerate(conflict, start=1):
        user = question(entry)
        wrong = [other_than(entry) for _ in range(2 if n % 4 == 0 else 1)]
        answers = [answer(entry)] + [f"{entry['package']}: {o['synopsis']}. {o['description']}" for o in wrong]
        for k, text in enumerate(answers, start=1):
            row_id = f"conflict-{n:03d}-{k}"
            if k == 2 and n % 9 == 0:
                text = planter.answer(text, "conflicts.jsonl", row_id, "assistant turn")
            conflict_rows.append({"id": row_id, "messages": [{"role": "user", "content": user},
                                                             {"role": "assistant", "content": text}]})
    write_jsonl(out / "raw" / "conflicts.jsonl", conflict_rows)

    truth = {"seed": SEED, "source": "dpkg-query descriptions of the packages installed where it was built",
             "counts": {"pairs_plain": len(plain_rows), "pairs_chat": len(chat) , "rated_rows": len(rated),
                        "conflict_prompts": len(conflict), "conflict_rows": len(conflict_rows)},
             "planted_pii": planter.truth, "malformed": malformed}
    (out / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (out / "finetune.yaml").write_text(FINETUNE_YAML, encoding="utf-8")
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    shutil.rmtree(args.out / "raw", ignore_errors=True)
    (args.out / "raw").mkdir(parents=True)
    truth = build(args.out)
    print(f"{args.out}: {truth['counts']}, {len(truth['planted_pii'])} planted values, "
          f"{len(truth['malformed'])} malformed rows")


if __name__ == "__main__":
    main()
