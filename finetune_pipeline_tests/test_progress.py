"""Progress inside a step: the library reports counts (embeddings, chunks of the cleaning pool), the Dagster
layer writes them to the run log at most every few seconds, with the rate and the time left."""

import polars as pl

from finetune_pipeline import progress
from finetune_pipeline.dedup.minhash import unique_pairs
from finetune_pipeline.defs.progress import run_log
from finetune_pipeline.embeddings import embed
from finetune_pipeline.execution import process_pool_groups


def _collect():
    seen = []
    return seen, lambda what, done, total: seen.append((what, done, total))


def test_embedding_reports_texts_done_after_each_batch():
    seen, callback = _collect()
    texts = [f"My parcel number {i} has not arrived yet." for i in range(5)]
    with progress.reporting(callback):
        embed(texts, None, 2, 32)
    assert seen == [("texts embedded", 2, 5), ("texts embedded", 4, 5), ("texts embedded", 5, 5)]
    embed(texts, None, 2, 32)  # outside the block: nothing reported
    assert len(seen) == 3


def test_the_process_pool_reports_the_rows_of_each_finished_chunk():
    frame = pl.DataFrame({"i": [k // 3 for k in range(60)], "j": list(range(60))})
    seen, callback = _collect()
    with progress.reporting(callback):  # a light batch function the spawned worker imports quickly
        out = process_pool_groups(frame, ["i"], unique_pairs, workers=2, chunks_per_worker=4)
    assert out.sort("j").equals(frame)
    done = [d for what, d, total in seen if what == "rows done" and total == 60]
    assert len(done) == 8 and done == sorted(done) and done[-1] == 60


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(line)


class _Context:
    def __init__(self):
        self.log = _Log()


def test_the_run_log_gets_a_line_per_interval_and_the_last_one_and_small_work_stays_quiet():
    context = _Context()
    report = run_log(context, "deduplicated_corpus", every_s=0.0, min_total=100)
    for done in (25, 50, 100):  # the first count sets where the rate is measured from: no line
        report("texts embedded", done, 100)
    report("texts embedded", 10, 20)  # below min_total: no line
    assert len(context.log.lines) == 2
    assert context.log.lines[0].startswith("deduplicated_corpus: 50 of 100 texts embedded (")
    assert "left" in context.log.lines[0] and "left" not in context.log.lines[1]
    quiet = _Context()
    report = run_log(quiet, "labeling", every_s=3600, min_total=100)
    for done in range(10, 101, 10):
        report("texts embedded", done, 100)
    assert quiet.log.lines == ["labeling: 100 of 100 texts embedded" + quiet.log.lines[0].split("embedded")[1]]
