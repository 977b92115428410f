"""The step process pins glibc's mmap threshold (allocator.py): large freed arrays are given back to the system
instead of staying in the heap."""

import subprocess
import sys

import pytest

PROGRAM = """
import sys
import numpy as np
from finetune_pipeline.allocator import set_mmap_threshold
if sys.argv[1] == "pinned":
    assert set_mmap_threshold(1 << 20)
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
first = np.ones(8 << 20, dtype=np.uint8)  # 8 MiB: glibc's own threshold rises to it when it is freed
del first
held, kept = [], []
for _ in range(100):  # 200 MiB in 2 MiB arrays, each followed by a small block that stays (as a stage's results)
    held.append(np.ones(2 << 20, dtype=np.uint8))
    kept.append(np.ones(64 << 10, dtype=np.uint8))
before = rss()
del held
print(before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_large_arrays_are_given_back_with_the_threshold_pinned():
    given_back = {how: int(subprocess.run([sys.executable, "-c", PROGRAM, how], capture_output=True, text=True,
                                          check=True).stdout) for how in ("glibc", "pinned")}
    assert given_back["pinned"] >= 190  # every 2 MiB array was its own mapping, unmapped when freed
    assert given_back["glibc"] < 50  # glibc's moving threshold put them in the heap, which keeps them


def test_the_step_pins_the_configured_threshold(tmp_path, monkeypatch):
    import dagster as dg

    from finetune_pipeline.defs import resources

    (tmp_path / "finetune.yaml").write_text("execution: {malloc_mmap_threshold: 2097152}\n")
    calls = []
    monkeypatch.setattr(resources, "set_mmap_threshold", calls.append)
    resource = resources.PipelineResource(data_dir=str(tmp_path))
    resource.setup_for_execution(dg.build_init_resource_context())
    assert calls == [2097152]
