"""Progress of long work inside a stage (sentence embeddings, cleaning over a process pool), for the run log.

The library reports counts with `report(what, done, total)`; whoever runs the stage decides where they go
by wrapping the call in `reporting(callback)` (the Dagster layer: its run log, a line every few seconds).
Outside such a block a report costs a context-variable lookup and goes nowhere. Imports no dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Report = Callable[[str, int, int], None]  # (what, done, total): "texts embedded", 12800, 100000

_REPORT: ContextVar[Report | None] = ContextVar("finetune_pipeline_progress", default=None)


@contextmanager
def reporting(callback: Report) -> Iterator[None]:
    """Within this block (this thread), `report` calls `callback`."""
    token = _REPORT.set(callback)
    try:
        yield
    finally:
        _REPORT.reset(token)


def report(what: str, done: int, total: int) -> None:
    """`done` of `total` units of `what` finished (e.g. "texts embedded")."""
    callback = _REPORT.get()
    if callback is not None:
        callback(what, done, total)


@contextmanager
def overall(total: int) -> Iterator[Callable[[int], None]]:
    """One count over work done in parts (texts embedded a shard at a time): within this block a report of
    `done` units is passed on as `done` plus the units of the parts finished before (`advance(n)`, which this
    yields, after each part) out of `total`, and `advance` reports the sum itself (a part done elsewhere, on
    a Ray worker, reports nothing here)."""
    outer = _REPORT.get()
    if outer is None:
        yield lambda n: None
        return
    finished = [0, ""]

    def inner(what: str, done: int, _total: int) -> None:
        finished[1] = what
        outer(what, finished[0] + done, total)

    def advance(n: int) -> None:
        finished[0] += n
        if finished[1]:
            outer(finished[1], finished[0], total)

    token = _REPORT.set(inner)
    try:
        yield advance
    finally:
        _REPORT.reset(token)
