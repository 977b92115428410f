"""Same answers on every path (issue 36): the sample root's and the instruction example's exports, and every
corpus stage's stored rows and rejects, are identical whether the stages run in memory (`execution.streaming:
false`), streaming shard by shard on this machine (the default), or on Ray (`execution.backend: ray`).
scripts/check_three_paths.py runs the data preparation (every stage up to published_splits) on a copy of each
root per path, through the README's `finetune-pipeline run`, and compares."""

import sys

from finetune_pipeline_tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import check_three_paths  # noqa: E402


def test_exports_and_stored_stages_are_identical_in_memory_streaming_and_on_ray(tmp_path, capsys):
    problems = check_three_paths.compare([REPO / "data", REPO / "examples" / "instruction"], tmp_path,
                                         ["memory", "streaming", "ray"])
    printed = capsys.readouterr().out
    assert problems == [], printed
    # each root's three runs printed the same digest over their exports, and found files to compare
    lines = [line.split() for line in printed.splitlines() if " files " in line]
    assert len(lines) == 6
    for root in ("data", "instruction"):
        runs = [line for line in lines if line[0] == root]
        # "<root> <path> <seconds> s <files> files digest <digest>"
        assert len({line[-1] for line in runs}) == 1 and all(int(line[4]) > 0 for line in runs), printed
