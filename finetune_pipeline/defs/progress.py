"""Progress of long work inside a step, in the run log: the library's `progress.report` calls, a line at most
every few seconds with the rate and the time left (the UI's run page, `finetune-pipeline run`'s output)."""

import time

import dagster as dg

from finetune_pipeline import progress


def run_log(context: dg.AssetExecutionContext, step: str, every_s: float = 10.0, min_total: int = 2000):
    """A `progress.Report` for `progress.reporting`: for work of at least `min_total` units, a line when
    `every_s` seconds have passed since the last one and when the work is done. The first count of a piece
    of work only starts its clock; a count lower than the last one, or another total, starts a new piece
    (the domain's examples, then the records)."""
    state: dict[str, list[float]] = {}  # what -> [started, first count, last count, last line, total]

    def report(what: str, done: int, total: int) -> None:
        if total < min_total:
            return
        now = time.monotonic()
        # a first count, or another piece of work: a lower count, or another total
        fresh = what not in state or done < state[what][2] or total != state[what][4]
        started, first, _, line, _ = [now, done, done, now, total] if fresh else state[what]
        state[what] = [started, first, done, line, total]
        if done < total and (fresh or now - line < every_s):
            return
        state[what][3] = now
        rate = (done - first) / (now - started) if now > started else 0.0
        left = f", about {(total - done) / rate:,.0f} s left" if done < total and rate else ""
        context.log.info(f"{step}: {done:,} of {total:,} {what} ({rate:,.0f}/s{left})")
    return report


def logged(context: dg.AssetExecutionContext, step: str):
    """`with logged(context, "deduplicated_corpus"): ...`: the step's progress goes to its run log."""
    return progress.reporting(run_log(context, step))
