"""How the step process gives freed memory back: glibc's malloc threshold for serving a block with its own mmap.

A streaming stage allocates and frees the same large arrays again and again (a shard's columns, a band's keys
over every record, a buffer of candidate pairs: 1-16 MB each). glibc serves a block above its mmap threshold
with a mapping of its own, unmapped (given back) when freed; but it raises that threshold each time such a
block is freed, up to 32 MB, after which these arrays come from the heap, whose freed space is kept and
fragments: the process's resident memory then grows with the corpus although each array is freed. Pinning the
threshold at `execution.malloc_mmap_threshold` (1 MiB) keeps them mapped: the dedup stage at 1M records peaked
at 569 instead of 681 MiB (docs/benchmarks.md), its time within the run-to-run noise. polars' own allocator
(jemalloc) is not affected.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_MAX_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)


def set_mmap_threshold(nbytes: int) -> bool:
    """Pin glibc's mmap threshold at `nbytes` for this process (0: leave glibc's own, which moves); whether it
    was set (False off Linux, or where the C library has no `mallopt`, e.g. musl)."""
    if nbytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, min(int(nbytes), _MAX_THRESHOLD)))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", nbytes)
    return done
