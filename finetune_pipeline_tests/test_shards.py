"""The sharded dataset format: the manifest is the commit point, so readers see a complete dataset or the
previous one; shards stream in and out one at a time; any fsspec URL works as a location."""

import json

import numpy as np
import polars as pl
import pytest

from finetune_pipeline import shards


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"record_id": [f"r{i:04d}" for i in range(n)], "text": [f"text {i}" for i in range(n)],
                         "score": [i / 7 for i in range(n)]})


def test_a_frame_round_trips_through_shards_of_the_given_size(tmp_path):
    frame = _frame(10)
    manifest = shards.write_dataset(frame, tmp_path / "d", shard_rows=4)
    assert [s.rows for s in manifest.shards] == [4, 4, 2]
    assert manifest.rows == 10 and manifest.schema == {"record_id": "String", "text": "String", "score": "Float64"}
    dataset = shards.open_dataset(tmp_path / "d")
    assert dataset.collect().equals(frame)
    assert dataset.scan().filter(pl.col("score") > 1).collect().height == 2
    assert [b.height for b in dataset.iter_batches(3)] == [3, 1, 3, 1, 2]
    on_disk = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert on_disk["digest"] == manifest.digest and len(on_disk["shards"]) == 3


def test_the_digest_follows_the_content(tmp_path):
    a = shards.write_dataset(_frame(10), tmp_path / "a", shard_rows=4)
    b = shards.write_dataset(_frame(10), tmp_path / "b", shard_rows=4)
    c = shards.write_dataset(_frame(10).with_columns(pl.col("text").str.to_uppercase()), tmp_path / "c", shard_rows=4)
    assert a.digest == b.digest != c.digest


def test_streamed_frames_are_cut_into_shards_across_frame_boundaries(tmp_path):
    manifest = shards.write_dataset((_frame(10).slice(i, 3) for i in range(0, 10, 3)), tmp_path / "d", shard_rows=5)
    assert [s.rows for s in manifest.shards] == [5, 5]
    assert shards.open_dataset(tmp_path / "d").collect().equals(_frame(10))


def test_an_empty_result_keeps_its_schema(tmp_path):
    shards.write_dataset(_frame(0), tmp_path / "d")
    dataset = shards.open_dataset(tmp_path / "d")
    assert dataset.rows == 0 and dataset.collect().schema == _frame(0).schema


def test_a_writer_that_fails_midway_leaves_the_previous_dataset_whole(tmp_path):
    shards.write_dataset(_frame(6), tmp_path / "d", shard_rows=2)

    def dies_after_two_frames():
        yield _frame(4)
        yield _frame(4)
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        shards.write_dataset(dies_after_two_frames(), tmp_path / "d", shard_rows=2)
    dataset = shards.open_dataset(tmp_path / "d")
    assert dataset.collect().equals(_frame(6))
    assert len([p for p in (tmp_path / "d").iterdir() if p.name.startswith("g-")]) == 1  # the new one removed


def test_a_new_commit_replaces_the_old_generation(tmp_path):
    shards.write_dataset(_frame(6), tmp_path / "d", shard_rows=2)
    shards.write_dataset(_frame(3), tmp_path / "d", shard_rows=2)
    assert shards.open_dataset(tmp_path / "d").rows == 3
    assert len([p for p in (tmp_path / "d").iterdir() if p.name.startswith("g-")]) == 1


def test_no_manifest_is_no_dataset_and_says_which_stage_to_run(tmp_path):
    (tmp_path / "d").mkdir()
    assert not shards.is_dataset(tmp_path / "d")
    with pytest.raises(shards.DatasetMissing, match="materialize the stage"):
        shards.open_dataset(tmp_path / "d")


def test_any_fsspec_url_is_a_location():
    shards.write_dataset(_frame(7), "memory://finetune-test/d", shard_rows=3)
    dataset = shards.open_dataset("memory://finetune-test/d")
    assert dataset.rows == 7 and [s.height for s in dataset.iter_shards()] == [3, 3, 1]
    assert pl.concat(list(dataset.iter_shards())).equals(_frame(7))


def test_read_rows_reads_a_range_across_shards(tmp_path):
    frame = pl.DataFrame({"id": list(range(10)), "text": [f"t{i}" for i in range(10)]})
    shards.write_dataset(frame, tmp_path / "d", shard_rows=3)
    dataset = shards.open_dataset(tmp_path / "d")
    for start, stop in ((2, 8), (0, 3), (3, 6), (9, 10), (0, 10), (4, 4)):
        assert dataset.read_rows(start, stop).equals(frame.slice(start, stop - start)), (start, stop)
    assert dataset.read_rows(0, 0).schema == frame.schema


def test_take_reads_the_named_rows_in_their_order_from_the_shards_holding_them(tmp_path, monkeypatch):
    frame = pl.DataFrame({"id": list(range(10)), "text": [f"t{i}" for i in range(10)]})
    shards.write_dataset(frame, tmp_path / "d", shard_rows=3)  # shards: 0-2, 3-5, 6-8, 9
    dataset = shards.open_dataset(tmp_path / "d")
    read, real = [], shards.ShardedDataset.read_shard
    monkeypatch.setattr(shards.ShardedDataset, "read_shard",
                        lambda self, number, columns=None: read.append(number) or real(self, number, columns))
    for rows in ([7, 1, 4, 1, 9], [2], [5, 4, 3], list(range(10))[::-1]):
        read.clear()
        assert dataset.take(np.array(rows), ["text"]).equals(frame.select("text")[rows]), rows
        assert sorted(read) == sorted({r // 3 for r in rows}), rows  # each shard holding a row, once
    assert dataset.take(np.array([], dtype=np.int64), ["text"]).schema == {"text": pl.String}
    with pytest.raises(IndexError, match="rows outside 0..9"):
        dataset.take(np.array([3, 10]), ["text"])


def _buffer_bytes(frame: pl.DataFrame) -> int:
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    return sum(b.size for column in table.columns for chunk in column.chunks for b in chunk.buffers() if b)


def test_owned_rows_of_a_shard_do_not_hold_the_shard():
    shard = pl.DataFrame({
        "text": [f"{'word ' * 40}{i}" for i in range(5000)],
        "quality_flags": [["short"] if i % 3 else [] for i in range(5000)],
        "label_confidence": [None if i % 7 == 0 else i / 5000 for i in range(5000)],
        "label": pl.Series([str(i % 4) for i in range(5000)], dtype=pl.Categorical),
    })
    rows = shard[[3, 700, 4999]]
    assert _buffer_bytes(rows) > _buffer_bytes(shard) // 2  # polars' selection: views into the shard's strings
    kept = shards.owned(rows)
    assert kept.schema == rows.schema and kept.equals(rows)
    assert _buffer_bytes(kept) < _buffer_bytes(shard) // 100
