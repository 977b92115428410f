"""Review through a real Label Studio server (`review.backend: label_studio`), over its REST API.

What it does:
- `push_review(folder)`: one project per review kind, created or updated with its labeling config, from the
  files the review stage writes under exports/review/ (the same files a person imports by hand with the files
  backend): label review or instruction conflicts (`tasks.json` + `label_config.xml`), preference comparison
  (`pairwise_tasks.json` + `pairwise_label_config.xml`, when that kind wrote them). Tasks are imported in
  the files' order (highest priority first, so Label Studio's sequential stream and its task ids follow the
  priority), each with the model's label as a prediction with its score. Idempotent by record id: a task
  whose `data.record_id` is already in the project is not imported again. A task deleted in the UI is
  imported again while its record is still in the review queue (the queue is the truth: the record still
  waits for a label); the annotations deleted with it are gone.
- Routing, in what the free edition supports (it has no task assignment and no per-task overlap): each
  annotator the queue routes items to (labeling/routing.py: `suggested_annotators`, as many as the item's
  `annotators_needed`) gets a Data Manager tab "for <annotator>" in the project, filtered on the tasks routed
  to them, highest priority first; "Label all tasks" from that tab walks exactly those. The project's
  `maximum_annotations` is the largest `annotators_needed` in the queue, so a task stays open until that
  many people labeled it.
- `poll(labels)`: every annotation of those projects, read from the JSON export, in the frame the files
  backend's reader returns (labeling/annotations.py: record_id, annotator, label, source_file; annotators by
  e-mail), its problems, and a cursor (per project: annotations, the last annotation id and update time)
  that changes whenever an annotation is added, changed or deleted.

Errors name the cause and the fix: `ServerUnavailable` (no answer), `TokenRefused` (names the environment
variable, never the token), `LabelStudioError` otherwise. The token is read from the environment variable
`review.token_env`; it is never logged or put in metadata. Talks HTTP with `requests`: label-studio-sdk 2.1.2
pins opencv-python-headless below 4.13, which clashes with the 5.x our PDF stack is locked to.
Imports no dagster.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import requests

from finetune_pipeline.labeling.annotations import ANNOTATIONS_SCHEMA, empty_annotations, parse_label_studio
from finetune_pipeline.settings import ReviewServerSettings

IMPORT_BATCH = 250  # tasks per import request: SQLite ("database is locked") copes badly with huge imports
TITLE_MAX = 50  # Label Studio's limit on a project title
RETRIES = 4  # on a locked database or a 5xx answer, with 1, 2, 4, 8 s pauses


@dataclass(frozen=True)
class ReviewKind:
    """One review kind: its project title and the files the review stage writes for it."""

    key: str
    title: str
    tasks_file: str
    config_file: str


LABEL_REVIEW = ReviewKind("label_review", "label review", "tasks.json", "label_config.xml")
CONFLICTS = ReviewKind("conflicts", "instruction conflicts", "tasks.json", "label_config.xml")
PREFERENCE = ReviewKind("preference", "preference comparison", "pairwise_tasks.json", "pairwise_label_config.xml")


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error; the message names the request, the answer and the fix."""


class ServerUnavailable(LabelStudioError):
    """The server does not answer at the configured URL."""


class TokenRefused(LabelStudioError):
    """The token is missing or the server refused it."""


@dataclass
class PushResult:
    """Per project title: tasks imported now, already there (skipped), and the routing tabs made."""

    projects: dict[str, int] = field(default_factory=dict)  # title -> project id
    imported: dict[str, int] = field(default_factory=dict)
    already_there: dict[str, int] = field(default_factory=dict)
    views: dict[str, list[str]] = field(default_factory=dict)

    def metadata(self) -> dict:
        """Counts only: no texts, no annotator names."""
        return {"label_studio_projects": len(self.projects), "label_studio_imported": sum(self.imported.values()),
                "label_studio_already_there": sum(self.already_there.values()),
                "label_studio_routing_tabs": sum(len(v) for v in self.views.values())}


@dataclass
class PollResult:
    annotations: pl.DataFrame  # labeling/annotations.py's frame
    problems: list[dict]  # {"file", "where", "reason"} like load_annotations'
    cursor: dict  # title -> {"annotations", "last_id", "last_update"}
    cancelled: int = 0  # skipped annotations, ignored like the files reader does


def review_kinds(folder: Path) -> list[tuple[ReviewKind, Path, Path]]:
    """The review kinds whose files exist under `folder` (exports/review/), with their task and config files."""
    out = []
    tasks, config = folder / LABEL_REVIEW.tasks_file, folder / LABEL_REVIEW.config_file
    if tasks.exists() and config.exists():
        conflicts = "$options" in config.read_text(encoding="utf-8")  # the conflict config's dynamic choices
        out.append((CONFLICTS if conflicts else LABEL_REVIEW, tasks, config))
    tasks, config = folder / PREFERENCE.tasks_file, folder / PREFERENCE.config_file
    if tasks.exists() and config.exists():
        out.append((PREFERENCE, tasks, config))
    return out


class LabelStudio:
    """A client for one server and one data root's projects (titles '<prefix>: <kind>')."""

    def __init__(self, cfg: ReviewServerSettings, prefix: str, session: requests.Session | None = None):
        self.cfg = cfg
        # Label Studio titles hold at most 50 characters: the prefix keeps what the longest kind leaves.
        self.prefix = (cfg.project_prefix or prefix)[:TITLE_MAX - len(": ") - len(PREFERENCE.title)]
        self.url = cfg.url.rstrip("/")
        self._session = session or requests.Session()
        self._auth: str | None = None
        self._users: dict[int, str] | None = None

    # ---- HTTP

    def _token(self) -> str:
        token = os.environ.get(self.cfg.token_env, "").strip()
        if not token:
            raise TokenRefused(f"environment variable {self.cfg.token_env} (review.token_env) is not set: set it to "
                               f"an API token of the Label Studio server at {self.url} (scripts/label_studio.sh "
                               "token prints the local server's; in the UI: Account & Settings > Access Token)")
        return token

    def _authorization(self) -> str:
        if self._auth is None:
            token = self._token()
            if token.count(".") == 2 and token.startswith("eyJ"):  # a personal access token: a JWT refresh token
                answer = self._send("POST", "/api/token/refresh/", json={"refresh": token}, auth=False)
                self._auth = f"Bearer {answer.json()['access']}"
            else:
                self._auth = f"Token {token}"
        return self._auth

    def _send(self, method: str, path: str, auth: bool = True, **kwargs) -> requests.Response:
        headers = {"Authorization": self._authorization()} if auth else {}
        for attempt in range(RETRIES + 1):
            try:
                answer = self._session.request(method, self.url + path, headers=headers,
                                               timeout=self.cfg.timeout_s, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise ServerUnavailable(
                    f"Label Studio at {self.url} (review.url) does not answer ({type(exc).__name__}): start it "
                    "(scripts/label_studio.sh start, or `make review`), fix review.url, or set review.backend: "
                    "files.") from None
            if answer.status_code in (401, 403) or (not auth and answer.status_code == 400
                                                    and path == "/api/token/refresh/"):
                raise TokenRefused(
                    f"Label Studio at {self.url} refused the token in the environment variable {self.cfg.token_env} "
                    f"(review.token_env): HTTP {answer.status_code}. Set it to an API token of this server "
                    "(scripts/label_studio.sh token prints the local server's; legacy tokens need "
                    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true on the server)")
            locked = "database is locked" in answer.text[:2000]
            if (answer.status_code >= 500 or locked) and attempt < RETRIES:
                time.sleep(2 ** attempt)
                continue
            if answer.status_code >= 400:
                raise LabelStudioError(f"Label Studio at {self.url}: {method} {path.split('?')[0]} answered HTTP "
                                       f"{answer.status_code}: {_detail(answer)}")
            return answer
        raise AssertionError("unreachable")

    def _get(self, path: str, **params):
        return self._send("GET", path, params=params).json()

    # ---- projects and tasks

    def title(self, kind: ReviewKind) -> str:
        return f"{self.prefix}: {kind.title}"

    def projects(self) -> dict[str, dict]:
        """This server's projects by title (every page)."""
        out, page = {}, 1
        while True:
            answer = self._get("/api/projects/", page=page, page_size=100)
            for project in answer.get("results", []):
                out[project["title"]] = project
            if not answer.get("next"):
                return out
            page += 1

    def ensure_project(self, kind: ReviewKind, label_config: str, overlap: int | None = None) -> int:
        """The id of the kind's project, created when missing, its labeling config (and overlap) updated."""
        title = self.title(kind)
        project = self.projects().get(title)
        fields = {"label_config": label_config.strip(), **({"maximum_annotations": overlap} if overlap else {})}
        if project is None:
            return self._send("POST", "/api/projects/", json={
                "title": title, "description": f"finetune-pipeline review queue ({kind.title}); imported by "
                "finetune_pipeline/labeling/label_studio.py", **fields}).json()["id"]
        changed = {k: v for k, v in fields.items() if project.get(k) != v}
        if changed:
            self._send("PATCH", f"/api/projects/{project['id']}/", json=changed)
        return project["id"]

    def export(self, project: int, all_tasks: bool) -> list[dict]:
        """The project's tasks in Label Studio's JSON export format (annotated ones only unless `all_tasks`)."""
        return self._get(f"/api/projects/{project}/export", exportType="JSON",
                         download_all_tasks=str(all_tasks).lower())

    def record_ids(self, project: int) -> set[str]:
        return {str(t["data"]["record_id"]) for t in self.export(project, all_tasks=True)
                if isinstance(t.get("data"), dict) and t["data"].get("record_id") is not None}

    def import_tasks(self, project: int, tasks: list[dict]) -> int:
        """Import `tasks` whose record id is not in the project yet, in their order, in batches; how many."""
        have = self.record_ids(project)
        new, seen = [], set(have)
        for task in tasks:
            record_id = str((task.get("data") or {}).get("record_id"))
            if record_id not in seen:
                seen.add(record_id)
                new.append(task)
        for start in range(0, len(new), IMPORT_BATCH):
            self._send("POST", f"/api/projects/{project}/import", json=new[start:start + IMPORT_BATCH])
        return len(new)

    def ensure_routing_views(self, project: int, tasks: list[dict]) -> list[str]:
        """A tab per annotator the tasks are routed to, filtered on `data.suggested_annotators`, priority first."""
        annotators = sorted({a for t in tasks for a in (t.get("meta") or {}).get("suggested_annotators") or []})
        existing = {v["data"].get("title") for v in self._get("/api/dm/views/", project=project)}
        made = []
        for annotator in annotators:
            title = f"for {annotator}"
            if title not in existing:
                self._send("POST", "/api/dm/views/", json={"project": project, "data": {
                    "title": title, "ordering": ["-tasks:data.priority"],
                    "filters": {"conjunction": "and", "items": [{
                        "filter": "filter:tasks:data.suggested_annotators", "operator": "contains",
                        "type": "String", "value": annotator}]}}})
            made.append(title)
        return made

    def push_review(self, folder: Path) -> PushResult:
        """Create or update one project per review kind found under `folder` and import its new tasks."""
        result = PushResult()
        for kind, tasks_file, config_file in review_kinds(folder):
            tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
            if not tasks:
                continue  # no empty project for a kind with nothing to review (e.g. tasks.json of a pairs root)
            needed = [int(n) for t in tasks if (n := (t.get("meta") or {}).get("annotators_needed"))]
            project = self.ensure_project(kind, config_file.read_text(encoding="utf-8"),
                                          overlap=max(needed) if needed else None)
            title = self.title(kind)
            result.projects[title] = project
            result.imported[title] = self.import_tasks(project, tasks)
            result.already_there[title] = len(tasks) - result.imported[title]
            result.views[title] = self.ensure_routing_views(project, tasks)
        return result

    # ---- annotations back

    def _annotator_names(self) -> dict[int, str]:
        if self._users is None:
            users = self._get("/api/users/")
            self._users = {u["id"]: u.get("email") or str(u["id"]) for u in users}
        return self._users

    def poll(self) -> PollResult:
        """Every annotation in this data root's projects, as labeling/annotations.py reads an export."""
        names = self._annotator_names()
        frames, problems, cursor, cancelled = [], [], {}, 0
        for title, project in sorted(self.projects().items()):
            if not title.startswith(f"{self.prefix}: "):
                continue
            tasks = self.export(project["id"], all_tasks=False)
            annotations = [a for t in tasks for a in t.get("annotations") or []]
            cursor[title] = {"annotations": len(annotations), "last_id": max((a["id"] for a in annotations), default=0),
                             "last_update": max((a.get("updated_at") or "" for a in annotations), default="")}
            cancelled += sum(1 for a in annotations if a.get("was_cancelled"))
            for annotation in annotations:
                user = annotation.get("completed_by")
                if isinstance(user, int) and user not in names:
                    self._users = None  # a user made since the last look
                    names = self._annotator_names()
                if isinstance(user, int):
                    annotation["completed_by"] = {"email": names.get(user, str(user))}
            rows, bad = parse_label_studio(json.dumps(tasks))
            source = f"label_studio/{title}"
            problems += [{"file": source, "where": where, "reason": reason} for where, reason in bad]
            if rows:
                frames.append(pl.DataFrame([{**r, "source_file": source} for r in rows], schema=ANNOTATIONS_SCHEMA))
        if not frames:
            return PollResult(empty_annotations(), problems, cursor, cancelled)
        frame = pl.concat(frames).unique(subset=["record_id", "annotator"], keep="last", maintain_order=True)
        return PollResult(frame, problems, cursor, cancelled)


def _detail(answer: requests.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    if isinstance(body, dict):
        return json.dumps(body.get("validation_errors") or body.get("detail") or body)[:500]
    return json.dumps(body)[:500]


# ---- the last poll, kept so a run goes on when the server is down (review.required: false)

def save_snapshot(poll: PollResult, path: Path) -> None:
    from finetune_pipeline.atomic import write_text

    write_text(json.dumps({"annotations": poll.annotations.to_dicts(), "problems": poll.problems,
                           "cursor": poll.cursor}, ensure_ascii=False), path)


def load_snapshot(path: Path) -> PollResult:
    """The last poll saved at `path`; empty when there is none."""
    if not path.exists():
        return PollResult(empty_annotations(), [], {})
    saved = json.loads(path.read_text(encoding="utf-8"))
    frame = (pl.DataFrame(saved["annotations"], schema=ANNOTATIONS_SCHEMA) if saved["annotations"]
             else empty_annotations())
    return PollResult(frame, saved["problems"], saved["cursor"])


def snapshot_path(storage: Path) -> Path:
    """Where the last poll is kept under the data root's private storage (.pipeline/)."""
    return storage / "label_studio" / "annotations.json"


# ---- what the review assets and the annotations sensor call (the Dagster layer stays thin)

def client_for(settings, root) -> LabelStudio | None:
    """The client for `settings.review` on the data root `root`, or None with the files backend."""
    if settings.review.backend != "label_studio":
        return None
    return LabelStudio(settings.review, prefix=root.path.name)


@dataclass
class Pulled:
    """Annotations for the labeling stage: the server's (or, when it is down and not required, the last ones
    read from it), and why the server's were not read fresh, if so."""

    poll: PollResult
    unavailable: str | None = None


def pull_annotations(settings, root) -> Pulled | None:
    """Poll the server and keep what came back under .pipeline/; None with the files backend. A server that
    does not answer raises when `review.required`, else the last poll is used and the reason returned.
    A refused token always raises (it does not fix itself)."""
    client = client_for(settings, root)
    if client is None:
        return None
    path = snapshot_path(root.storage)
    try:
        poll = client.poll()
    except ServerUnavailable as err:
        if settings.review.required:
            raise
        return Pulled(load_snapshot(path), unavailable=f"{err} Using the annotations last read from it.")
    save_snapshot(poll, path)
    return Pulled(poll)


def merge_annotations(files: pl.DataFrame, server: pl.DataFrame) -> pl.DataFrame:
    """annotations/ files and the server's annotations as one frame; the server's vote wins for the same
    annotator and record (it is the newer)."""
    if server.is_empty():
        return files
    return pl.concat([files, server]).unique(subset=["record_id", "annotator"], keep="last", maintain_order=True)


def push_review(settings, root) -> tuple[PushResult | None, str | None]:
    """Push exports/review/ to the server (None with the files backend), and why it could not, if the server
    does not answer and is not required."""
    client = client_for(settings, root)
    if client is None:
        return None, None
    try:
        return client.push_review(root.review), None
    except ServerUnavailable as err:
        if settings.review.required:
            raise
        return None, f"{err} The review tasks stay in exports/review/ and are imported on the next run."


def annotation_state(settings, root) -> dict:
    """The cursor of the server's annotations (per project: count, last id, last update); raises
    ServerUnavailable / TokenRefused."""
    client = client_for(settings, root)
    return client.poll().cursor if client is not None else {}
