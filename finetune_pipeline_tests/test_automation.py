"""The new_raw_files sensor: new, changed, unchanged, touched, renamed and deleted files."""

import os

import dagster as dg

from finetune_pipeline.definitions import resources_for
from finetune_pipeline.defs.automation import new_raw_files
from finetune_pipeline.defs.resources import PipelineResource


def _tick(root, cursor):
    """(RunRequest or SkipReason, new cursor, asset events the tick reported)."""
    context = dg.build_sensor_context(cursor=cursor, resources={"pipeline": PipelineResource(data_dir=str(root))})
    result = new_raw_files(context)
    if isinstance(result, dg.SensorResult):
        [request] = result.run_requests
        return request, context.cursor, list(result.asset_events)
    return result, context.cursor, []


def test_sensor_requests_runs_only_for_real_changes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("first ticket text")

    result, cursor, _ = _tick(tmp_path, None)
    assert isinstance(result, dg.RunRequest) and result.tags["changes"].startswith("1 new")

    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason) and "no new, changed or removed" in result.skip_message

    stat = (raw / "a.txt").stat()
    os.utime(raw / "a.txt", ns=(stat.st_atime_ns + 10**9, stat.st_mtime_ns + 10**9))  # touched, same bytes
    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)

    (raw / "a.txt").write_text("first ticket text, edited")
    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.RunRequest) and "1 changed" in result.tags["changes"]

    # renamed or moved: the content is already ingested (the parse cache serves it), so no run
    (raw / "sub").mkdir()
    (raw / "a.txt").rename(raw / "sub" / "b.txt")
    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason) and "1 renamed or copied" in result.skip_message

    # a copy of known content: no run either (it would only be an exact duplicate)
    (raw / "copy.txt").write_bytes((raw / "sub" / "b.txt").read_bytes())
    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)

    # deleting one of two copies leaves the content in the corpus: no run; deleting the last one does
    (raw / "copy.txt").unlink()
    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)
    (raw / "sub" / "b.txt").unlink()
    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.RunRequest) and "1 removed" in result.tags["changes"]

    result, cursor, _ = _tick(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)


def test_new_raw_files_make_the_dataset_and_adapter_stale_in_the_ui(tmp_path):
    """raw_files' data version moves when raw/ changes; Dagster then reports raw_corpus (and downstream) stale."""
    # The resolver the UI uses for its "stale" badges (internal API: pinned dagster release).
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from finetune_pipeline.defs.collection import raw_corpus, raw_files

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("I was charged twice for my order and would like a refund of one payment.")
    (tmp_path / "finetune.yaml").write_text("checks: {min_records: 1}\n")  # raw_corpus's step runs its checks
    pipeline = PipelineResource(data_dir=str(tmp_path))
    defs = dg.Definitions(assets=[raw_files, raw_corpus],
                          jobs=[dg.define_asset_job("refresh", dg.AssetSelection.all(include_sources=True))],
                          resources=resources_for(pipeline))
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("refresh").execute_in_process(instance=instance).success

        def status():
            resolver = CachingStaleStatusResolver(instance, defs.get_repository_def().asset_graph,
                                                  loading_context=LoadingContextForTest(instance))
            return resolver.get_status(dg.AssetKey("raw_corpus"))

        assert status() == StaleStatus.FRESH
        _, cursor, events = _tick(tmp_path, None)
        (raw / "b.txt").write_text("The parcel for order 5512 never arrived and tracking shows nothing.")
        request, cursor, events = _tick(tmp_path, cursor)
        assert isinstance(request, dg.RunRequest) and len(events) == 1
        instance.report_runless_asset_event(events[0])  # what the sensor daemon does with the tick's events
        assert status() == StaleStatus.STALE
        assert defs.resolve_job_def("refresh").execute_in_process(instance=instance).success
        assert status() == StaleStatus.FRESH


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
