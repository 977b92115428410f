"""The new_raw_files sensor: new, changed, unchanged, touched, renamed and deleted files."""

import os

import dagster as dg

from finetune_pipeline.defs.automation import new_raw_files
from finetune_pipeline.defs.resources import PipelineResource


def _tick(root, cursor):
    context = dg.build_sensor_context(cursor=cursor, resources={"pipeline": PipelineResource(data_dir=str(root))})
    result = new_raw_files(context)
    return result, context.cursor


def test_sensor_requests_runs_only_for_real_changes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("first ticket text")

    result, cursor = _tick(tmp_path, None)
    assert isinstance(result, dg.RunRequest) and result.tags["changes"].startswith("1 new")

    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason) and "no new, changed or removed" in result.skip_message

    stat = (raw / "a.txt").stat()
    os.utime(raw / "a.txt", ns=(stat.st_atime_ns + 10**9, stat.st_mtime_ns + 10**9))  # touched, same bytes
    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)

    (raw / "a.txt").write_text("first ticket text, edited")
    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.RunRequest) and "1 changed" in result.tags["changes"]

    # renamed or moved: the content is already ingested (the parse cache serves it), so no run
    (raw / "sub").mkdir()
    (raw / "a.txt").rename(raw / "sub" / "b.txt")
    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason) and "1 renamed or copied" in result.skip_message

    # a copy of known content: no run either (it would only be an exact duplicate)
    (raw / "copy.txt").write_bytes((raw / "sub" / "b.txt").read_bytes())
    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)

    # deleting one of two copies leaves the content in the corpus: no run; deleting the last one does
    (raw / "copy.txt").unlink()
    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)
    (raw / "sub" / "b.txt").unlink()
    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.RunRequest) and "1 removed" in result.tags["changes"]

    result, cursor = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)


def test_annotations_sensor_requests_a_label_refresh_for_new_changed_or_removed_files(tmp_path):
    from finetune_pipeline.defs.automation import new_annotations

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor,
                                          resources={"pipeline": PipelineResource(data_dir=str(tmp_path))})
        return new_annotations(context), context.cursor

    result, cursor = tick(None)  # no annotations/ folder yet
    assert isinstance(result, dg.SkipReason)
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / ".gitkeep").write_text("")
    (folder / "readme.txt").write_text("not an annotation file")
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SkipReason)

    (folder / "batch1.csv").write_text("record_id,annotator,label\nr1,ann1,billing\n")
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and result.tags["changes"].startswith("1 new")
    assert tick(cursor)[0].skip_message.startswith("no new")

    (folder / "project-1.json").write_text('[{"data": {"record_id": "r1"}, "annotations": []}]')
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest)
    (folder / "batch1.csv").write_text("record_id,annotator,label\nr1,ann1,shipping\n")
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and "1 changed" in result.tags["changes"]
    (folder / "project-1.json").unlink()
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and "1 removed" in result.tags["changes"]
    assert isinstance(tick(cursor)[0], dg.SkipReason)
