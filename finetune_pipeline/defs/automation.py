"""The raw folder as an observable source asset, the nightly schedule, the sensor on new raw files and
the sensor on returned annotations (the sensors and the schedule run by default under `dagster dev`).

`raw_files` carries a data version (a hash of every path and content hash under raw/). The sensor
records a new observation whenever raw/ changes, so the UI marks `raw_corpus` and everything after it,
the dataset and the adapter included, as stale ("upstream data version changed") until they are
refreshed; each refresh run observes raw/ first.

Each tick first asks `run_gate.gate_skip` whether its job would build on a failed blocking check, and
skips naming the check and its run if so (the daemon's run coordinator would refuse the run anyway).
"""


import json
import warnings

import dagster as dg

from finetune_pipeline.defs.collection import RAW_FILES
from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.defs.run_gate import gate_skip
from finetune_pipeline.labeling.annotations import ANNOTATION_SUFFIXES
from finetune_pipeline.raw_inventory import compare, inventory, inventory_version

with warnings.catch_warnings():  # include_sources is marked beta in dagster 1.13; the behaviour is tested
    warnings.simplefilter("ignore", dg.BetaWarning)
    refresh_all = dg.define_asset_job(
        "refresh_all", selection=dg.AssetSelection.all(include_sources=True),
        description="Observe raw/, then materialize every asset (and run its checks) on the data root.",
    )


@dg.schedule(name="nightly_refresh", job=refresh_all, cron_schedule="0 2 * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Refresh the whole pipeline every night at 02:00 (server time); skipped, naming the "
                         "check, when the run would build on a failed blocking check.")
def nightly_refresh(context: dg.ScheduleEvaluationContext):
    return gate_skip(context, "refresh_all") or dg.RunRequest()


@dg.sensor(job=refresh_all, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests a full refresh when a file under raw/ is added, changed (by content hash) "
                       "or removed. A touched but unchanged file, or a renamed or copied one, starts no run.")
def new_raw_files(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
    if skip := gate_skip(context, "refresh_all"):
        return skip  # the cursor stays: the change is requested once the gate is clear
    previous = json.loads(context.cursor) if context.cursor else {}
    current = inventory(pipeline.data_root().raw, previous)
    changes = compare(previous, current)
    if not changes.any():
        context.update_cursor(json.dumps(current))  # refresh mtimes so unchanged files are not re-hashed
        renamed = f"; {len(changes.renamed)} renamed or copied, content already ingested" if changes.renamed else ""
        return dg.SkipReason(f"no new, changed or removed files under raw/ ({len(current)} files{renamed})")
    # No run_key: the cursor already makes each change request exactly one run, and a state seen
    # before (a file restored) must still trigger a refresh.
    context.update_cursor(json.dumps(current))
    observation = dg.AssetObservation(asset_key=RAW_FILES, tags={"dagster/data_version": inventory_version(current)},
                                      metadata={"files": len(current), "changes": changes.describe()})
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={"trigger": "new_raw_files", "changes": changes.describe()})],
        asset_events=[observation])


refresh_labels = dg.define_asset_job(
    "refresh_labels", selection=dg.AssetSelection.assets("labeled_corpus", "review_queue").downstream(),
    description="Re-label with the annotations in annotations/ and refresh everything downstream "
                "(the review queue, augmentation, splits, training, reports).",
)


@dg.sensor(job=refresh_labels, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests a refresh of labeled_corpus and everything downstream when an annotation file "
                       "(Label Studio JSON export, or CSV record_id,annotator,label) under annotations/ is added, "
                       "changed (by content hash) or removed; with review.backend: label_studio also when an "
                       "annotation is added, changed or deleted on the Label Studio server (polled; a server that "
                       "does not answer skips the tick with the reason and keeps the cursor).")
def new_annotations(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
    if skip := gate_skip(context, "refresh_labels"):
        return skip  # the cursor stays: the new annotations are requested once the gate is clear
    previous = json.loads(context.cursor) if context.cursor else {}
    server_before = previous.pop(SERVER_CURSOR, None)  # review.backend: label_studio: the server's annotations
    found = inventory(pipeline.data_root().annotations, previous)
    current = {path: entry for path, entry in found.items()
               if path.lower().endswith(ANNOTATION_SUFFIXES) and not any(p.startswith(".") for p in path.split("/"))}
    changes = compare(previous, current)
    server_now, server_changed = _server_annotations(pipeline)
    if isinstance(server_now, dg.SkipReason):
        return server_now  # the cursor stays: what changed meanwhile is requested once the server answers
    context.update_cursor(json.dumps({**current, **({SERVER_CURSOR: server_now} if server_now is not None else {})}))
    server_changes = server_now is not None and server_now != server_before
    if not changes.any() and not server_changes:
        return dg.SkipReason(f"no new, changed or removed annotation files ({len(current)} files)"
                             + ("" if server_now is None else " and no new or changed annotation in Label Studio"))
    described = "; ".join([*([changes.describe()] if changes.any() else []),
                           *([server_changed(server_before)] if server_changes else [])])
    return dg.RunRequest(tags={"trigger": "new_annotations", "changes": described})


SERVER_CURSOR = "label_studio:"  # never a path: inventory keys are paths relative to annotations/


def _server_annotations(pipeline: PipelineResource):
    """With review.backend: label_studio, (the server's annotation cursor, a describer of its change); (None,
    None) with files; (SkipReason, None) when the server cannot be read (not answering, or the token refused)."""
    from finetune_pipeline.labeling import label_studio
    from finetune_pipeline.settings import SettingsError

    try:
        settings = pipeline.settings()
    except SettingsError:
        return None, None  # the files part still works; settings_changed names the error
    if settings.review.backend != "label_studio":
        return None, None
    try:
        now = label_studio.annotation_state(settings, pipeline.data_root())
    except label_studio.LabelStudioError as err:
        return dg.SkipReason(f"Label Studio not read, cursor kept: {err}"), None

    def describe(before: dict | None) -> str:
        before = before or {}
        added = sum(max(v["annotations"] - before.get(k, {}).get("annotations", 0), 0) for k, v in now.items())
        return f"Label Studio: annotations added, changed or deleted ({added} more than before)"
    return now, describe


# The first stage each finetune.yaml section changes; the run covers it and everything downstream. Stages
# before it are not run (their stored values are read); stages after it that did not really change reuse
# their caches (cleaning) or keep their candidate (training, when the data snapshot is the same).
# `execution` changes where work runs, never its result: it starts no run.
SECTION_STAGES: dict[str, tuple[str, ...]] = {
    "task": ("raw_corpus",), "sources": ("raw_corpus",), "checks": ("raw_corpus",),
    "cleaning": ("cleaned_corpus",), "privacy": ("cleaned_corpus",),
    "training.instruction_tokens": ("cleaned_corpus",),  # the too-long filter counts the base model's tokens
    "dedup": ("deduplicated_corpus",),
    "labels": ("labeled_corpus", "review_queue"), "labeling": ("labeled_corpus", "review_queue"),
    "review": ("labeled_corpus", "review_queue"),  # where the review queue goes and the labels come from
    "augmentation": ("augmented_corpus",),
    "splits": ("split_assignment",),  # the split is decided there, before augmentation, which reads it
    "bias": ("dataset_splits", "bias_report"), "card": ("dataset_splits",),
    "training": ("lora_adapter",),
    "erasure_requests.csv": ("cleaned_corpus",),
}
_TOO_LONG_FIELDS = ("base_model", "max_length")  # of training.instruction


def settings_versions(root) -> dict[str, str]:
    """A hash per finetune.yaml section (validated settings, defaults included) and of erasure_requests.csv."""
    from finetune_pipeline.incremental import digest
    from finetune_pipeline.settings import load_settings

    dumped = load_settings(root).model_dump(mode="json")
    versions = {name: digest(value) for name, value in dumped.items() if name != "execution"}
    versions["training.instruction_tokens"] = digest([dumped["training"]["instruction"][f] for f in _TOO_LONG_FIELDS])
    erasure = root.erasure_requests
    versions["erasure_requests.csv"] = digest(erasure.read_bytes().hex() if erasure.exists() else None)
    return versions


def stages_to_refresh(changed: list[str], asset_graph) -> list[dg.AssetKey]:
    """Every asset of `asset_graph` from the first stage of each changed section on."""
    starts = sorted({stage for section in changed for stage in SECTION_STAGES.get(section, ())})
    if not starts:
        return []
    return sorted(dg.AssetSelection.assets(*starts).downstream().resolve(asset_graph), key=lambda k: k.to_user_string())


@dg.sensor(job=refresh_all, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests a run of the stages a change affects when a finetune.yaml section (by its validated "
                       "value, defaults included) or erasure_requests.csv changes: a cleaning or privacy change, or a "
                       "new erasure request, runs cleaned_corpus and everything after it; a splits change "
                       "split_assignment, augmentation and what follows; a training change only the training assets "
                       "and what follows. An invalid finetune.yaml starts nothing.")
def settings_changed(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
    from finetune_pipeline.settings import SettingsError

    previous = json.loads(context.cursor) if context.cursor else None
    try:
        current = settings_versions(pipeline.data_root())
    except SettingsError as err:
        return dg.SkipReason(f"finetune.yaml is not valid, no run started: {err}")
    context.update_cursor(json.dumps(current))
    if previous is None:
        return dg.SkipReason("first evaluation: the current settings and erasure requests are recorded")
    changed = sorted(name for name, version in current.items() if previous.get(name) != version)
    stages = stages_to_refresh(changed, context.repository_def.asset_graph)
    if not stages:
        return dg.SkipReason("no finetune.yaml section that changes a result, and no erasure request, changed")
    return dg.RunRequest(asset_selection=stages, tags={"trigger": "settings_changed", "changes": ", ".join(changed)})
