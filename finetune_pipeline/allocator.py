"""How the step process gives freed memory back: glibc's malloc threshold for serving a block with its own mmap.

A streaming stage allocates and frees the same large arrays again and again (a shard's columns, a band's keys
over every record, a buffer of candidate pairs: 1-16 MB each). glibc serves a block above its mmap threshold
with a mapping of its own, unmapped (given back) when freed; but it raises that threshold each time such a
block is freed, up to 32 MB, after which these arrays come from the heap, whose freed space is kept and
fragments: the process's resident memory then grows with the corpus although each array is freed. Pinning the
threshold (`execution.malloc_mmap_threshold`, 1 to 4 MiB) keeps them mapped: at 1M records the dedup stage
peaked at 569-578 instead of 627-681 MiB and the split at 1,088 instead of 1,258 MiB, but each such array then
costs fresh pages (a mapping, zeroed): 5-15 % more time for dedup, about 27 % for the split at 100k
(docs/benchmarks.md). So it is off by default (0), a setting for a machine where memory is what runs out.
polars' own allocator (jemalloc) is not affected.
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
