"""Same answers on every path: a data root's exports from the local in-memory path, the streaming local path
and the Ray path, compared byte for byte.

For each data root given, three copies (inputs only) are prepared with finetune.yaml's `execution` section set to
- memory:    streaming: false   (each stage reads its input whole and returns a frame: the path before issue 36)
- streaming: streaming: true    (the default: stages read shards and write shards)
- ray:       backend: ray       (a local Ray cluster; stages read and write shards on its workers)
and the data preparation (`finetune-pipeline run --select '*published_splits'`: every stage up to the published
splits, no training) runs on each, in its own DAGSTER_HOME. Then every file under exports/ is compared byte for
byte, and each corpus stage's stored rows (less `ingested_at`, the run's own time) and rejects (.pipeline/) row
for row. The one
difference allowed is the published version's own name, time and run (the data card's `Version` line and
exports/versions/, which name the run that published them), masked before comparing.

    .venv/bin/python scripts/check_three_paths.py data examples/instruction [--work /tmp/three-paths]

Prints, per root and path, the wall time and the files compared; exits 1 when a file differs (and names it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = {"exports", "models", ".pipeline"}
PATHS = {"memory": {"streaming": False}, "streaming": {"streaming": True}, "ray": {"backend": "ray", "streaming": True}}
# Lines that name the run that published a version (its id, time), not the data.
VOLATILE = re.compile(r"(?m)^.*\b(Version|version|published_at|run_id|created)\b.*\d{4}-\d{2}-\d{2}.*$")


def prepare(root: Path, dest: Path, execution: dict) -> Path:
    shutil.copytree(root, dest, symlinks=True,
                    ignore=lambda folder, names: OUTPUTS & set(names) if Path(folder) == root else set())
    settings_file = dest / "finetune.yaml"
    settings = yaml.safe_load(settings_file.read_text()) or {}
    settings["execution"] = {**(settings.get("execution") or {}), **execution}
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    return dest


def run(root: Path, home: Path) -> float:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "DO_NOT_TRACK": "true", "UNSTRUCTURED_DISABLE_NOTICE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cli = Path(sys.executable).parent / "finetune-pipeline"
    started = time.monotonic()
    done = subprocess.run([str(cli), "run", "--data-dir", str(root), "--select", "*published_splits"], cwd=REPO,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{root}: the run failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.monotonic() - started


def export_files(root: Path) -> dict[str, bytes]:
    """Every file a reader of exports/ sees (through the `current` version's links), by path; exports/versions/
    itself is left out (its folder names are the versions' times and runs)."""
    exports = root / "exports"
    files = {}
    for folder, _, names in os.walk(exports, followlinks=True):
        relative_folder = Path(folder).relative_to(exports)
        if relative_folder.parts[:1] == ("versions",) or any(p.startswith(".") for p in relative_folder.parts):
            continue
        for name in names:
            if name.startswith("."):
                continue
            data = (Path(folder) / name).read_bytes()
            if Path(name).suffix in (".md", ".json", ".txt"):
                data = VOLATILE.sub("<published version>", data.decode("utf-8")).encode("utf-8")
            files[str(relative_folder / name)] = data
    return dict(sorted(files.items()))


def stage_frames(root: Path) -> dict[str, pl.DataFrame]:
    """Each corpus stage's stored rows and rejects, as the next stage reads them."""
    from finetune_pipeline.layout import DataRoot
    from finetune_pipeline.records import CORPUS_STAGES
    from finetune_pipeline.stored import stored_frame, stored_rejects

    layout, frames = DataRoot(root), {}
    for stage in CORPUS_STAGES:
        rows = stored_frame(layout, stage)
        # ingested_at: when the run collected the record (each run's own time), not the data
        frames[f"{stage} rows"] = rows.drop("ingested_at", strict=False) if rows is not None else None
        frames[f"{stage} rejects"] = stored_rejects(layout, stage)
    return frames


def compare(roots: list[Path], work: Path, paths: list[str]) -> list[str]:
    problems = []
    for root in roots:
        exports, stages = {}, {}
        for name in paths:
            copy = prepare(root, work / root.name / name / "root", {**PATHS[name]})
            seconds = run(copy, work / root.name / name / "dagster_home")
            exports[name], stages[name] = export_files(copy), stage_frames(copy)
            digest = hashlib.sha256(b"".join(k.encode() + v for k, v in exports[name].items())).hexdigest()[:16]
            print(f"{root.name:<14}{name:<10}{seconds:>8.1f} s  {len(exports[name]):>3} files  digest {digest}",
                  flush=True)
        first = paths[0]
        for name in paths[1:]:
            if set(exports[name]) != set(exports[first]):
                problems.append(f"{root.name}: {name} wrote {sorted(set(exports[name]) ^ set(exports[first]))} "
                                f"where {first} did not, or the reverse")
            for file in sorted(set(exports[name]) & set(exports[first])):
                if exports[name][file] != exports[first][file]:
                    problems.append(f"{root.name}: exports/{file} differs between {first} and {name}")
            for stage, frame in stages[first].items():
                other = stages[name][stage]
                if (frame is None) != (other is None) or (frame is not None and not frame.equals(other)):
                    problems.append(f"{root.name}: the stored {stage} differ between {first} and {name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--work", type=Path, help="where the copies go (default: a temporary folder, removed)")
    parser.add_argument("--paths", default="memory,streaming,ray", help="comma-separated, of memory,streaming,ray")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="three-paths-"))
    problems = compare([r.resolve() for r in args.roots], work, args.paths.split(","))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print("DIFFERS:", problem)
    print("identical exports on every path" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
