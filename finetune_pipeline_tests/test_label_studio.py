"""review.backend: label_studio against a REAL Label Studio server (one for the whole run: conftest's
`label_studio_server`): projects with their labeling config, idempotent import in priority order with the
model's prediction and score, routing tabs, annotations polled back into labeling's frame and through the
labeling stage, and the bad cases (server down, wrong token, task deleted in the UI, an annotation for an
erased record, a label outside the label set)."""

import json
import socket
import uuid

import dagster as dg
import polars as pl
import pytest
import requests

from finetune_pipeline.defs.resources import PipelineResource
from finetune_pipeline.labeling import apply_labels
from finetune_pipeline.labeling import label_studio as ls
from finetune_pipeline.labeling.annotations import ANNOTATIONS_SCHEMA
from finetune_pipeline.labeling.review import REVIEW_SCHEMA, write_pairwise_export, write_review_export
from finetune_pipeline.layout import DataRoot
from finetune_pipeline.settings import Settings
from finetune_pipeline.stored import stored_frame
from finetune_pipeline_tests.test_labeling import LABELS, _corpus, _scripted_labeler

TOKEN_ENV = "FINETUNE_TEST_LABEL_STUDIO_TOKEN"  # a name of our own: review.token_env is honoured
ANNOTATORS = ["ann1@example.com", "ann2@example.com", "ann3@example.com"]


def _settings(url: str, **review) -> Settings:
    return Settings(labels=LABELS, labeling={"review_threshold": 0.7, "audit_share": 0.0,
                                             "review": {"annotators": ANNOTATORS}},
                    review={"backend": "label_studio", "url": url, "token_env": TOKEN_ENV, **review})


def _corpus_with_r9():
    return _corpus([("r1", "predict billing 0.55", None, None), ("r2", "predict shipping 0.31", None, None),
                    ("r3", "predict account_access 0.62", None, None), ("r4", "predict billing 0.97", None, None),
                    ("r9", "predict shipping 0.40", None, None)])


@pytest.fixture
def server(label_studio_server, monkeypatch):
    url, token = label_studio_server
    monkeypatch.setenv(TOKEN_ENV, token)
    return url, token


@pytest.fixture
def root(tmp_path):
    """A data root whose folder name (the project prefix) is unique on the shared server."""
    folder = tmp_path / f"t-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return DataRoot.resolve(folder)


def _export_queue(settings, root):
    """The labeling stage's review queue for the 5-record corpus, exported to exports/review/ (no server)."""
    first = apply_labels(_corpus_with_r9(), settings, labeler=_scripted_labeler)
    return write_review_export(first.review_queue, LABELS, root.review)


def _push_queue(settings, root):
    """The review queue exported and pushed; the tasks file."""
    paths = _export_queue(settings, root)
    pushed, unavailable = ls.push_review(settings, root)
    assert unavailable is None
    return pushed, json.loads(paths["tasks"].read_text())


class Admin:
    """Direct REST calls, as a person in the UI would act (users, annotations, deletions)."""

    def __init__(self, url, token):
        self.url, self.headers = url, {"Authorization": f"Token {token}"}

    def call(self, method, path, **kwargs):
        answer = requests.request(method, self.url + path, headers=self.headers, timeout=30, **kwargs)
        assert answer.status_code < 400, answer.text[:300]
        return answer.json() if answer.text else None

    def user(self, email):
        for user in self.call("GET", "/api/users/"):
            if user["email"] == email:
                return user["id"]
        return self.call("POST", "/api/users/", json={"email": email, "username": email.split("@")[0]})["id"]

    def tasks(self, project):
        return {t["data"]["record_id"]: t for t in self.call(
            "GET", f"/api/projects/{project}/export", params={"exportType": "JSON", "download_all_tasks": "true"})}

    def annotate(self, task_id, email, label):
        return self.call("POST", f"/api/tasks/{task_id}/annotations/", json={
            "completed_by": self.user(email), "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                                         "value": {"choices": [label]}}]})


def test_project_per_kind_with_config_priority_order_predictions_routing_and_idempotent_import(server, root):
    url, token = server
    settings = _settings(url)
    pushed, tasks = _push_queue(settings, root)
    title = f"{root.path.name}: label review"
    assert pushed.projects.keys() == {title} and pushed.imported[title] == len(tasks) == 4  # r2, r3, r9, r1
    admin = Admin(url, token)
    project = admin.call("GET", f"/api/projects/{pushed.projects[title]}/")
    assert project["label_config"] == (root.review / "label_config.xml").read_text().strip()
    needed = max(t["meta"]["annotators_needed"] for t in tasks)
    assert project["maximum_annotations"] == needed

    on_server = admin.tasks(project["id"])
    # imported in the file's order (highest priority first): Label Studio's ids follow it
    assert sorted(on_server, key=lambda r: on_server[r]["id"]) == [t["data"]["record_id"] for t in tasks]
    predictions = admin.call("GET", "/api/predictions/", params={"task": on_server["r2"]["id"]})
    assert len(predictions) == 1 and predictions[0]["score"] == pytest.approx(0.31)
    assert predictions[0]["result"][0]["value"]["choices"] == ["shipping"]
    assert predictions[0]["model_version"] == "scripted zero-shot"

    # routing: a tab per annotator, holding exactly the items routed to them
    views = {v["data"]["title"]: v for v in admin.call("GET", "/api/dm/views/", params={"project": project["id"]})}
    routed = {a for t in tasks for a in t["meta"]["suggested_annotators"]}
    assert routed and {f"for {a}" for a in routed} == set(views)
    for annotator in routed:
        in_tab = admin.call("GET", "/api/tasks/", params={"view": views[f"for {annotator}"]["id"],
                                                          "project": project["id"]})["tasks"]
        assert {t["data"]["record_id"] for t in in_tab} == {
            t["data"]["record_id"] for t in tasks if annotator in t["meta"]["suggested_annotators"]}

    again, _ = ls.push_review(settings, root)  # idempotent by record id: nothing imported twice
    assert again.imported[title] == 0 and again.already_there[title] == 4
    assert len(admin.tasks(project["id"])) == 4 and len(views) == len(admin.call(
        "GET", "/api/dm/views/", params={"project": project["id"]}))


def test_annotations_come_back_in_labelings_frame_and_through_the_labeling_stage(server, root):
    url, token = server
    settings = _settings(url)
    pushed, _ = _push_queue(settings, root)
    admin = Admin(url, token)
    project = pushed.projects[f"{root.path.name}: label review"]
    ids = {r: t["id"] for r, t in admin.tasks(project).items()}
    before = ls.annotation_state(settings, root)

    admin.annotate(ids["r1"], "lead@example.com", "billing")
    for annotator in ANNOTATORS:
        admin.annotate(ids["r2"], annotator, "shipping")
    admin.annotate(ids["r3"], "ann1@example.com", "technical_issue")
    admin.annotate(ids["r9"], "ann2@example.com", "shipping")  # r9 is erased below
    admin.annotate(ids["r1"], "ann3@example.com", "refund")  # not in the label set

    after = ls.annotation_state(settings, root)
    assert after != before and ls.annotation_state(settings, root) == after  # the cursor moves on change only
    pulled = ls.pull_annotations(settings, root)
    assert pulled.unavailable is None
    frame = pulled.poll.annotations
    assert frame.schema == pl.Schema(ANNOTATIONS_SCHEMA) and frame.height == 7
    assert set(frame["source_file"]) == {f"label_studio/{root.path.name}: label review"}
    assert ("r2", "ann2@example.com", "shipping") in frame.select("record_id", "annotator", "label").rows()

    corpus = _corpus_with_r9().filter(pl.col("record_id") != "r9")  # r9 erased since its annotation
    result = apply_labels(corpus, settings, pulled.poll.annotations, pulled.poll.problems, labeler=_scripted_labeler)
    kept = {r["record_id"]: (r["label"], r["label_source"]) for r in result.kept.iter_rows(named=True)}
    assert kept == {"r1": ("billing", "human"), "r2": ("shipping", "crowd"), "r3": ("technical_issue", "human"),
                    "r4": ("billing", "model")}
    reasons = [p["reason"] for p in result.stats.annotations.problems]
    assert any("record_id not in the corpus" in r for r in reasons)  # the erased record's: ignored and counted
    assert any("'refund' is not in the label set" in r for r in reasons)  # rejected with the reason
    # what the run used is kept for when the server is down
    assert ls.load_snapshot(ls.snapshot_path(root.storage)).annotations.equals(frame)


def test_a_task_deleted_in_the_ui_loses_its_annotations_and_comes_back_while_its_record_waits(server, root):
    url, token = server
    settings = _settings(url)
    pushed, _ = _push_queue(settings, root)
    title = f"{root.path.name}: label review"
    admin = Admin(url, token)
    ids = {r: t["id"] for r, t in admin.tasks(pushed.projects[title]).items()}
    admin.annotate(ids["r3"], "ann1@example.com", "technical_issue")
    admin.call("DELETE", f"/api/tasks/{ids['r3']}/")
    polled = ls.pull_annotations(settings, root).poll
    assert polled.annotations.is_empty() and polled.problems == []
    again, _ = ls.push_review(settings, root)
    assert again.imported[title] == 1 and "r3" in admin.tasks(pushed.projects[title])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_a_clear_reason_the_sensor_skips_keeping_its_cursor_and_fails_only_when_required(
        root, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "irrelevant")
    dead = f"http://127.0.0.1:{_free_port()}"
    settings = _settings(dead, timeout_s=5)
    _export_queue(settings, root)
    with pytest.raises(ls.ServerUnavailable, match="does not answer.*scripts/label_studio.sh start"):
        ls.annotation_state(settings, root)
    pulled = ls.pull_annotations(settings, root)  # not required: the last annotations (none yet), and why
    assert pulled.poll.annotations.is_empty() and dead in pulled.unavailable
    pushed, why = ls.push_review(settings, root)
    assert pushed is None and "next run" in why
    with pytest.raises(ls.ServerUnavailable):
        ls.pull_annotations(_settings(dead, required=True), root)

    from finetune_pipeline.defs.automation import new_annotations
    (root.path / "finetune.yaml").write_text(
        f"labels: {LABELS}\nreview: {{backend: label_studio, url: '{dead}', token_env: {TOKEN_ENV}, timeout_s: 5}}\n")
    cursor = json.dumps({"batch.csv": [1.0, 2, "x"]})
    context = dg.build_sensor_context(cursor=cursor, resources={"pipeline": PipelineResource(data_dir=str(root.path))})
    result = new_annotations(context)
    assert isinstance(result, dg.SkipReason) and "does not answer" in result.skip_message
    assert context.cursor == cursor


def test_wrong_or_missing_token_is_an_error_naming_the_variable_never_the_token(server, root, monkeypatch):
    url, _ = server
    _export_queue(_settings(url), root)
    monkeypatch.setenv(TOKEN_ENV, "not-the-token-1234")
    with pytest.raises(ls.TokenRefused) as err:
        ls.annotation_state(_settings(url), root)
    assert TOKEN_ENV in str(err.value) and "not-the-token-1234" not in str(err.value) and "401" in str(err.value)
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ls.TokenRefused, match=f"{TOKEN_ENV} .*is not set"):
        ls.push_review(_settings(url), root)


def test_the_annotations_sensor_requests_a_run_when_an_annotation_arrives_in_label_studio(server, root):
    from finetune_pipeline.defs.automation import new_annotations
    url, token = server
    settings = _settings(url)
    pushed, _ = _push_queue(settings, root)
    (root.path / "finetune.yaml").write_text(
        f"labels: {LABELS}\nreview: {{backend: label_studio, url: '{url}', token_env: {TOKEN_ENV}}}\n")

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources={"pipeline": PipelineResource(data_dir=str(root.path))})
        return new_annotations(context), context.cursor

    result, cursor = tick(None)
    assert isinstance(result, dg.RunRequest)  # first look: the server's state is new
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SkipReason) and "Label Studio" in result.skip_message
    admin = Admin(url, token)
    task = admin.tasks(pushed.projects[f"{root.path.name}: label review"])["r2"]
    admin.annotate(task["id"], "ann1@example.com", "shipping")
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and "Label Studio" in result.tags["changes"]
    assert isinstance(tick(cursor)[0], dg.SkipReason)


def test_preference_comparison_gets_its_own_project_and_its_choices_come_back(server, root):
    """Pending preference pairs (labeling/pairwise.py's pairwise_tasks.json and config) go to a project of
    their own; the choice an annotator makes there comes back as A/B/tie rows in labeling's frame."""
    url, token = server
    settings = _settings(url)
    options = {"answer_a": "Restart the router.", "answer_b": "Call us.", "answer_a_id": "a1", "answer_b_id": "b1",
               "origin": "tie", "annotations": 0}
    row = {c: None for c in REVIEW_SCHEMA} | {"record_id": "p1", "text": "The internet is down, what now?",
                                              "reason": "pairwise", "options": json.dumps(options), "score": 0.0}
    write_pairwise_export(pl.DataFrame([row], schema=REVIEW_SCHEMA), root.review)
    pushed, _ = ls.push_review(settings, root)
    title = f"{root.path.name}: preference comparison"
    assert pushed.projects.keys() == {title} and pushed.imported[title] == 1  # no empty project for other kinds
    admin = Admin(url, token)
    task = admin.tasks(pushed.projects[title])["p1"]
    assert task["data"]["answer_a"] == "Restart the router."
    admin.call("POST", f"/api/tasks/{task['id']}/annotations/", json={
        "completed_by": admin.user("ann2@example.com"), "result": [{
            "from_name": "preference", "to_name": "prompt", "type": "choices", "value": {"choices": ["A"]}}]})
    frame = ls.pull_annotations(settings, root).poll.annotations
    assert frame.select("record_id", "annotator", "label", "source_file").rows() == [
        ("p1", "ann2@example.com", "A", f"label_studio/{title}")]


# ---- in a real browser: Debian's Chromium, driven over the DevTools protocol (no driver, no download)

CHROMIUM = "/usr/bin/chromium"


class _Browser:
    """Headless Chromium with one page, driven over the DevTools protocol (websockets)."""

    def __init__(self, profile):
        import subprocess
        import time
        import urllib.request

        self.port = _free_port()
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--window-size=1600,1000", f"--remote-debugging-port={self.port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as answer:
                    targets = json.load(answer)
                break
            except OSError:
                time.sleep(0.2)
        self.ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.n = 0

    async def send(self, ws, method, **params):
        self.n += 1
        await ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") == self.n:
                assert "error" not in message, message["error"]
                return message.get("result", {})

    async def js(self, ws, expression):
        answer = await self.send(ws, "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return answer.get("result", {}).get("value")

    async def wait_for(self, ws, expression, timeout=120):
        import asyncio
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if await self.js(ws, expression):
                return
            await asyncio.sleep(0.5)
        text = await self.js(ws, "document.body.innerText.slice(0, 500)")
        raise AssertionError(f"the page never showed {expression}; it shows: {text!r}")

    def close(self):
        self.proc.terminate()
        self.proc.wait(20)


def test_a_label_given_in_the_label_studio_ui_reaches_labeling_on_the_next_sensor_tick(server, root, tmp_path):
    """Chromium logs in, opens the task of r2 in its project, changes the pre-selected prediction (shipping)
    to billing and submits; the next sensor tick requests the run, and labeling labels r2 billing (human)."""
    import asyncio
    import time
    from pathlib import Path

    import websockets

    from finetune_pipeline.defs.automation import new_annotations
    from finetune_pipeline_tests.conftest import LABEL_STUDIO_STATE

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it"
    url, token = server
    settings = _settings(url)
    pushed, _ = _push_queue(settings, root)
    project = pushed.projects[f"{root.path.name}: label review"]
    admin = Admin(url, token)
    task = admin.tasks(project)["r2"]
    (root.path / "finetune.yaml").write_text(
        f"labels: {LABELS}\nreview: {{backend: label_studio, url: '{url}', token_env: {TOKEN_ENV}}}\n")

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources={"pipeline": PipelineResource(data_dir=str(root.path))})
        return new_annotations(context), context.cursor

    _, cursor = tick(None)
    email = (LABEL_STUDIO_STATE / "username").read_text()
    password = (LABEL_STUDIO_STATE / "password").read_text()

    async def annotate(browser):
        async with websockets.connect(browser.ws_url, max_size=2 ** 26) as ws:
            await browser.send(ws, "Page.enable")
            await browser.send(ws, "Page.navigate", url=f"{url}/user/login/")
            await browser.wait_for(ws, "document.querySelector('input[name=email]') !== null")
            await browser.js(ws, f"""(() => {{
                document.querySelector('input[name=email]').value = {json.dumps(email)};
                document.querySelector('input[name=password]').value = {json.dumps(password)};
                document.querySelector('form').submit(); return true; }})()""")
            await browser.wait_for(ws, "!location.pathname.startsWith('/user/login')")
            await browser.send(ws, "Page.navigate", url=f"{url}/projects/{project}/data?task={task['id']}")
            await browser.wait_for(ws, "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Submit')")
            choice = ("[...document.querySelectorAll('label')].find(e => e.textContent.trim()"
                      ".replace(/\\[\\d+\\]$/, '') === 'billing')")  # a choice's text ends with its hotkey
            # Choose billing and submit in one evaluation, and only once billing is the one checked choice: the
            # editor re-renders while it loads (a choice found by one evaluation can be gone by the next), and a
            # late load of the prediction can put shipping back after a click (CI on 442e4bb submitted shipping).
            # Until then each poll clicks billing again.
            await browser.wait_for(ws, f"""(() => {{
                const checked = e => {{ const i = e.querySelector('input');
                                       return i ? i.checked : /checked/.test(e.className); }};
                const billing = {choice};
                if (billing === undefined) return false;
                if (!checked(billing)) {{ billing.click(); return false; }}
                const names = {json.dumps(LABELS)};
                const others = [...document.querySelectorAll('label')].filter(e => e !== billing && checked(e)
                    && names.includes(e.textContent.trim().replace(/\\[\\d+\\]$/, '')));
                if (others.length) {{ others.forEach(e => e.click()); return false; }}
                const submit = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Submit');
                if (submit === undefined) return false;
                submit.click(); return true; }})()""")
            end = time.monotonic() + 60
            while not admin.call("GET", f"/api/tasks/{task['id']}/annotations/") and time.monotonic() < end:
                await asyncio.sleep(0.5)

    browser = _Browser(tmp_path / "profile")
    try:
        asyncio.run(annotate(browser))
    finally:
        browser.close()
    given = admin.call("GET", f"/api/tasks/{task['id']}/annotations/")
    assert [a["result"][0]["value"]["choices"] for a in given] == [["billing"]]

    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and "Label Studio" in result.tags["changes"]
    pulled = ls.pull_annotations(settings, root)
    assert (("r2", email, "billing") in pulled.poll.annotations.select("record_id", "annotator", "label").rows())
    labeled = apply_labels(_corpus_with_r9(), settings, pulled.poll.annotations, pulled.poll.problems,
                           labeler=_scripted_labeler)
    row = labeled.kept.filter(pl.col("record_id") == "r2").row(0, named=True)
    assert (row["label"], row["label_source"]) == ("billing", "human")


# ---- through Dagster: the labeling assets with review.backend: label_studio

def test_labeling_assets_push_the_queue_and_label_from_the_server_and_fail_on_a_dead_server_only_if_required(
        server, tmp_path):
    from finetune_pipeline.definitions import ALL_ASSETS, resources_for
    from finetune_pipeline_tests.test_labeling_asset import _deduplicated_root

    url, token = server
    data = _deduplicated_root(tmp_path)
    (data / "annotations" / "broken.json").unlink()
    data = data.rename(tmp_path / f"d-{uuid.uuid4().hex[:12]}")
    base = (data / "finetune.yaml").read_text()

    def materialize(review):
        (data / "finetune.yaml").write_text(base + f"review: {review}\n")
        return dg.materialize(ALL_ASSETS, resources=resources_for(PipelineResource(data_dir=str(data))),
                              selection=["labeled_corpus", "review_queue"], raise_on_error=False)

    up = f"{{backend: label_studio, url: '{url}', token_env: {TOKEN_ENV}}}"
    first = materialize(up)
    assert first.success
    meta = {m.asset_key.to_user_string(): m.metadata for m in first.asset_materializations_for_node("labeling")}
    queue = json.loads((data / "exports" / "review" / "tasks.json").read_text())
    assert meta["review_queue"]["label_studio_imported"].value == len(queue) > 0
    assert token not in json.dumps({k: str(v.value) for k, v in meta["review_queue"].items()})

    admin = Admin(url, token)
    project = next(p["id"] for p in admin.call("GET", "/api/projects/")["results"]
                   if p["title"] == f"{data.name}: label review")
    split = admin.tasks(project)["bill2"]  # 2:2 in annotations/crowd.csv: waits in review
    admin.annotate(split["id"], "lead@example.com", "shipping")  # the expert decides, in Label Studio
    second = materialize(up)
    assert second.success
    labeled = stored_frame(DataRoot(data), "labeled_corpus")
    row = labeled.filter(pl.col("record_id") == "bill2").row(0, named=True)
    assert (row["label"], row["label_source"]) == ("shipping", "human")
    meta = {m.asset_key.to_user_string(): m.metadata for m in second.asset_materializations_for_node("labeling")}
    assert meta["review_queue"]["label_studio_imported"].value == 0  # nothing imported twice

    dead = f"http://127.0.0.1:{_free_port()}"
    assert materialize(f"{{backend: label_studio, url: '{dead}', token_env: {TOKEN_ENV}, timeout_s: 5}}").success
    labeled = stored_frame(DataRoot(data), "labeled_corpus")
    assert labeled.filter(pl.col("record_id") == "bill2")["label"].to_list() == ["shipping"]  # the last poll
    required = materialize(f"{{backend: label_studio, url: '{dead}', token_env: {TOKEN_ENV}, timeout_s: 5, "
                           "required: true}")
    assert not required.success
    failures = [e.step_failure_data.error.to_string() for e in required.all_events if e.is_step_failure]
    assert failures and "does not answer" in failures[0] and dead in failures[0]
