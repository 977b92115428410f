r"""Conflicting-instruction benchmark on real templated questions about this machine's commands.

Run from the repository root:

  .venv/bin/python scripts/bench_conflicts.py                       # today's code
  .venv/bin/python scripts/bench_conflicts.py --before 3bc55f9      # and dedup/conflicts.py of that commit

Corpus (rebuilt at run time, seeded): the commands of `apropos -l -s 1 .` (man-db's one-line
descriptions of every installed command), every command of a name family (`dpkg`, `dpkg-name`,
`dpkg-deb`...; `ucf`, `ucfr`; `git-merge-file`, `git-merge-one-file` when installed) and a random sample
of the others. Each command gets one conversation "What does the `X` command do?" (or "What is X used
for?") -> a templated answer
("X: description.", "The X command: description.", "`X` - description.", "Description."), and some a
second one with another form of the prompt (no backticks, lower case, no question mark) and of the
answer: duplicates, not conflicts. Planted conflicts: some commands get the same prompt again answered
with another command's (different) description. The conversations are written in three chat formats
(OpenAI messages and ShareGPT with a system turn, Alpaca with it as the instruction and the question as
the input) and read back with the project's readers.

Truth: every conversation knows the command its prompt asks about and the command its answer describes.
A conflict task is real when its prompts all ask about one command and its answers hold at least two
different descriptions. It prints the conflict tasks, how many are real (precision), the planted
conflicts found (recall: the planted answer waits for review in a conflict), duplicates removed, and
examples of the tasks that are not real.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune_pipeline.dedup import keep_order  # noqa: E402
from finetune_pipeline.dedup.exact import exact_duplicates  # noqa: E402
from finetune_pipeline.records import corpus_frame, sha256_text  # noqa: E402
from finetune_pipeline.settings import DedupSettings  # noqa: E402
from finetune_pipeline.sources.conversations import (alpaca_turns, conversation_fields, openai_turns,  # noqa: E402
                                                     sharegpt_turns)

PROMPTS = (("What does the `{x}` command do?", "What does the {x} command do?", "what does the `{x}` command do"),
           ("What is {x} used for?", "What is `{x}` used for?", "what is {x} used for"))
ANSWERS = ("{x}: {d}.", "The {x} command: {d}.", "`{x}` - {d}.", "{D}.")
SYSTEM = "You are a helpful assistant for Debian system administration. Answer in one sentence."
FAMILIES = ("dpkg", "ucf", "git-merge", "apt", "systemd-", "gpg")


def commands() -> dict[str, str]:
    """command -> one-line description, from `apropos -l -s 1 .`."""
    out = subprocess.run(["apropos", "-l", "-s", "1", "."], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(r"^(\S+) \(1\)\s+- (.+)$", line)
        if (match and re.fullmatch(r"[a-z0-9.+-]+", match.group(1)) and len(match.group(2)) >= 10
                and not match.group(2).startswith("(")):  # "(unknown subject)": no description
            found.setdefault(match.group(1), match.group(2).strip().rstrip("."))
    return found


def _folded(text: str) -> str:
    return " ".join(text.lower().split())


def build(seed: int, sample: int, planted: int) -> tuple[pl.DataFrame, dict[str, dict]]:
    """The corpus (in keep order) and per record id its truth: prompt command, answer command, planted."""
    rng = random.Random(seed)
    described = commands()
    names = sorted(described)
    chosen = [n for n in names if n.startswith(FAMILIES)]
    chosen += rng.sample([n for n in names if n not in set(chosen)], sample)
    conversations = []  # (prompt command, answer command, planted, prompt, answer)
    template = {x: rng.choice(PROMPTS) for x in chosen}  # one wording per command, in three forms
    for x in chosen:
        d = described[x]
        forms = rng.sample(range(len(ANSWERS)), 2)
        conversations.append((x, x, False, template[x][0].format(x=x),
                              ANSWERS[forms[0]].format(x=x, d=d, D=d[:1].upper() + d[1:])))
        if rng.random() < 0.6:
            conversations.append((x, x, False, rng.choice(template[x]).format(x=x),
                                  ANSWERS[forms[1]].format(x=x, d=d, D=d[:1].upper() + d[1:])))
    for x in rng.sample(chosen, planted):
        y = rng.choice([n for n in chosen if _folded(described[n]) != _folded(described[x])])
        d = described[y]
        conversations.append((x, y, True, template[x][0].format(x=x), ANSWERS[0].format(x=x, d=d, D=d)))
    rng.shuffle(conversations)
    rows, extra, truth = [], [], {}
    for i, (px, ax, planted_one, prompt, answer) in enumerate(conversations):
        fmt = ("openai", "sharegpt", "alpaca")[i % 3]
        if fmt == "openai":
            turns = openai_turns([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt},
                                  {"role": "assistant", "content": answer}])
        elif fmt == "sharegpt":
            turns = sharegpt_turns([{"from": "system", "value": SYSTEM}, {"from": "human", "value": prompt},
                                    {"from": "gpt", "value": answer}])
        else:
            turns = alpaca_turns(SYSTEM, prompt, answer, ("instruction", "input", "output"))
        fields = conversation_fields(turns)
        rid = f"c{i:04d}"
        rows.append({"record_id": rid, "text": fields["text"], "source_uri": f"raw/chats.{fmt}.jsonl",
                     "source_type": "jsonl", "locator": f"line {i + 1}", "content_sha256": sha256_text(fields["text"]),
                     "ingested_at": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}"})
        extra.append(fields)
        truth[rid] = {"prompt": px, "answer": ax, "planted": planted_one, "description": _folded(described[ax])}
    frame = corpus_frame(rows).with_columns(*[pl.Series(c, [f[c] for f in extra]) for c in
                                              ("messages", "prompt", "response")])
    return keep_order(frame), truth


def load_before(rev: str):
    """dedup/conflicts.py as it was at `rev` (git), as a module."""
    source = subprocess.run(["git", "show", f"{rev}:finetune_pipeline/dedup/conflicts.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "conflicts_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("conflicts_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def score(name: str, prompt_dedup, cfg: DedupSettings, corpus: pl.DataFrame, truth: dict) -> None:
    start = time.perf_counter()
    kept, _ = exact_duplicates(corpus)
    result = prompt_dedup(kept, cfg)
    seconds = time.perf_counter() - start
    tasks = result.kept.filter(pl.col("conflict_id").is_not_null()).group_by("conflict_id", maintain_order=True) \
        .agg(pl.col("record_id"))
    real, wrong, merged_prompts = 0, [], 0
    for cid, ids in tasks.iter_rows():
        prompts = {truth[r]["prompt"] for r in ids}
        descriptions = {truth[r]["description"] for r in ids}
        if len(prompts) == 1 and len(descriptions) > 1:
            real += 1
        else:
            wrong.append(ids)
            merged_prompts += len(prompts) > 1
    in_conflict = set(result.kept.filter(pl.col("conflict_id").is_not_null())["record_id"])
    planted = [r for r, t in truth.items() if t["planted"]]
    found = sum(r in in_conflict for r in planted)
    kept_apart = getattr(result.stats, "prompts_kept_apart", None)
    duplicates = result.rejected.filter(pl.col("reason") == "duplicate_prompt").height
    n_tasks = tasks.height
    print(f"| {name} | {corpus.height} | {n_tasks} | {real} | {real / n_tasks if n_tasks else float('nan'):.3f} | "
          f"{found} of {len(planted)} ({found / len(planted):.3f}) | {len(in_conflict)} | {duplicates} | "
          f"{seconds:.2f} |")
    print(f"  not real: {len(wrong)} ({merged_prompts} join prompts about different commands, "
          f"{len(wrong) - merged_prompts} hold one description in different forms); similar prompts kept apart "
          f"as naming different commands: {kept_apart if kept_apart is not None else 'n/a'}")
    text = dict(zip(corpus["record_id"], corpus["text"]))
    for ids in wrong[:4]:
        print("  not a conflict: " + " || ".join(repr(text[r].replace("\n", " ")[:90]) for r in ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=200, help="commands drawn besides the name families")
    parser.add_argument("--planted", type=int, default=30, help="planted conflicts")
    parser.add_argument("--before", help="also score dedup/conflicts.py of this git commit (e.g. 3bc55f9)")
    args = parser.parse_args()
    corpus, truth = build(args.seed, args.sample, args.planted)
    formats = corpus["source_uri"].value_counts(sort=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {platform.python_version()} seed={args.seed}: "
          f"{corpus.height} conversations about {len({t['prompt'] for t in truth.values()})} commands "
          f"({', '.join(f'{u}: {c}' for u, c in formats.iter_rows())}), {args.planted} planted conflicts")
    print("| code | conversations | conflict tasks | real conflicts | precision | planted found (recall) | "
          "records in review | duplicate prompts removed | seconds |\n|---|---|---|---|---|---|---|---|---|")
    if args.before:
        # The old code's MinHash had no word-set pass for short texts: off, as it was.
        score(f"before ({args.before})", load_before(args.before).prompt_dedup, DedupSettings(short_text_words=0),
              corpus, truth)
    from finetune_pipeline.dedup.conflicts import prompt_dedup

    score("now", prompt_dedup, DedupSettings(), corpus, truth)


if __name__ == "__main__":
    main()
