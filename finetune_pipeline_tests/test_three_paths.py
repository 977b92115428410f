"""Same answers on every path (issue 36): the sample root's and the instruction example's exports, and every
corpus stage's stored rows and rejects, are identical whether the stages run in memory (`execution.streaming:
false`), streaming shard by shard on this machine (the default), or on Ray (`execution.backend: ray`).
scripts/check_three_paths.py runs the data preparation (every stage up to published_splits) on a copy of each
root per path, through the README's `finetune-pipeline run`, and compares."""

import sys

import pytest

from finetune_pipeline_tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import check_three_paths  # noqa: E402


@pytest.mark.parametrize("root", ["data", "examples/instruction"], ids=["sample", "instruction"])
def test_exports_and_stored_stages_are_identical_in_memory_streaming_and_on_ray(root, tmp_path, capsys):
    """One data root per test, so that the two roots' runs (a few minutes each) can go to both workers of
    `make test` (conftest.py hands this file out a test at a time)."""
    problems = check_three_paths.compare([REPO / root], tmp_path, ["memory", "streaming", "ray"])
    printed = capsys.readouterr().out
    assert problems == [], printed
    # the three runs printed the same digest over their exports, and found files to compare
    # "<root> <path> <seconds> s <files> files digest <digest>"
    runs = [line.split() for line in printed.splitlines() if " files " in line]
    assert len(runs) == 3 and {run[1] for run in runs} == {"memory", "streaming", "ray"}, printed
    assert len({run[-1] for run in runs}) == 1 and all(int(run[4]) > 0 for run in runs), printed
