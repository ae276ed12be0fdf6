"""Queue pause and worker suspension, end to end: a real `rqscope worker` (RQ's forking Worker) on a
real redis-server, driven by monitor.paused as the dashboard and the API drive it."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rqscope.monitor.audit import recent
from rqscope.monitor.names import as_name, label
from rqscope.monitor.paused import set_paused, set_suspended
from rqscope.monitor.reader import fetch_snapshot
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import REGISTRY, enqueue_task
from rqscope.tasks.rq_internals.queue import PAUSED_KEY
from rqscope.web import create_app, sessions

from tests.helpers import rqscope_command, running, wait_for
from tests.test_names import encoded

pytestmark = pytest.mark.redis


def put(redis: Redis, queue: str, x: int = 1) -> Job:
    return enqueue_task(REGISTRY.get("t_ok"), [x], {}, connection=redis, queue=queue)[0]


def status(job: Job) -> JobStatus | None:
    return job.get_status(refresh=True)


@contextmanager
def worker(settings: Settings, redis: Redis, name: str, *queues: str) -> Iterator[object]:
    """`rqscope worker` on these queues, yielded once it waits for a job."""
    env = {"RQSCOPE_REDIS_URL": settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with running(rqscope_command("worker", *queues, "--name", name, "--log-level", "WARNING"), env) as process:
        wait_for(lambda: redis.hget(f"rq:worker:{name}", "state") == b"idle", timeout=30)
        yield process


def commands(redis: Redis) -> dict[str, int]:
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def test_a_paused_queue_keeps_its_job_while_the_worker_runs_its_other_queues(
    real_redis: Redis, real_settings: Settings
) -> None:
    set_paused(real_redis, "q1", True, "ops")
    with worker(real_settings, real_redis, "pause-1", "q1", "default"):
        held = put(real_redis, "q1")
        ran = [put(real_redis, "default", x) for x in range(3)]
        wait_for(lambda: all(status(job) == JobStatus.FINISHED for job in ran), timeout=30)
        time.sleep(1.5)  # more than one claim and one blocking wait since the last job
        assert status(held) == JobStatus.QUEUED
        assert real_redis.lrange("rq:queue:q1", 0, -1) == [held.id.encode()]
        assert real_redis.llen("rq:queue:q1:intermediate") == 0  # skipped, not claimed
        assert fetch_snapshot(real_redis).paused == frozenset({"q1"})
        resumed = time.monotonic()
        set_paused(real_redis, "q1", False, "ops")
        wait_for(lambda: status(held) == JobStatus.FINISHED, timeout=10)
        assert time.monotonic() - resumed < 2.5  # the next claim, within about a second
    assert fetch_snapshot(real_redis).paused == frozenset()


def test_a_worker_on_paused_queues_only_idles_quietly_and_stops_on_sigterm(
    real_redis: Redis, real_settings: Settings
) -> None:
    for queue in ("q1", "q2"):
        set_paused(real_redis, queue, True, "ops")
    job = put(real_redis, "q2")
    with worker(real_settings, real_redis, "pause-2", "q1", "q2") as process:
        time.sleep(1.2)
        real_redis.config_resetstat()
        time.sleep(3)
        sent = commands(real_redis)
        claims = sent.get("evalsha", 0) + sent.get("eval", 0)
        assert 1 <= claims <= 5  # about one claim a second, no spinning
        assert "blmove" not in sent and "lmove" not in sent  # nothing to block on: it sleeps
        assert sum(sent.values()) < 40
        assert status(job) == JobStatus.QUEUED
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        assert process.wait(10) == 0  # type: ignore[attr-defined]
        assert time.monotonic() - stopping < 3
    assert real_redis.lrange("rq:queue:q2", 0, -1) == [job.id.encode()]


def test_suspended_workers_take_no_job_until_resumed(real_redis: Redis, real_settings: Settings) -> None:
    with worker(real_settings, real_redis, "suspend-1", "default"):
        time.sleep(0.3)  # inside its blocking wait, where RQ itself would not look at the suspension
        set_suspended(real_redis, True, "ops")
        assert fetch_snapshot(real_redis).suspended
        job = put(real_redis, "default")
        time.sleep(2.5)
        assert status(job) == JobStatus.QUEUED and real_redis.llen("rq:queue:default") == 1
        resumed = time.monotonic()
        set_suspended(real_redis, False, "ops")
        wait_for(lambda: status(job) == JobStatus.FINISHED, timeout=10)
        assert time.monotonic() - resumed < 2.5
    assert not fetch_snapshot(real_redis).suspended


def test_a_suspension_with_a_ttl_ends_by_itself(real_redis: Redis, real_settings: Settings) -> None:
    set_suspended(real_redis, True, "ops", ttl=2)
    assert 0 < real_redis.ttl("rq:suspended") <= 2
    with worker(real_settings, real_redis, "suspend-2", "default"):
        job = put(real_redis, "default")
        wait_for(lambda: status(job) == JobStatus.FINISHED, timeout=15)


def test_a_stock_rq_worker_ignores_the_pause(real_redis: Redis) -> None:
    """What the README says: only `rqscope worker` honours a pause."""
    set_paused(real_redis, "q1", True, "ops")
    job = put(real_redis, "q1")
    Worker([Queue("q1", connection=real_redis)], connection=real_redis).work(burst=True, logging_level="WARNING")
    assert status(job) == JobStatus.FINISHED


# -- the routes: API, dashboard, roles, CSRF, hostile names ------------------------------------------------

HTML = {"Accept": "text/html"}
OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789ab"
CSRF = "a-csrf-token"


@pytest.fixture
def app(real_settings: Settings, real_redis: Redis) -> Flask:
    settings = dataclasses.replace(real_settings, snapshot_ttl=0.0, api_token=OPERATOR, viewer_token=VIEWER)
    return create_app(settings, testing=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **HTML}


def browser(app: Flask) -> FlaskClient:
    """A signed-in browser: a session cookie carrying the operator's sign-in and a CSRF token."""
    client = app.test_client()
    record = sessions.SessionRecord("api-token", "operator", "token", sessions.fingerprint(OPERATOR))
    with client.session_transaction() as session:
        session[sessions.SID_FIELD] = sessions.create(app.extensions["rqscope"].redis, record)
        session["csrf_token"] = CSRF
    return client


def known(redis: Redis, raw: bytes = b"default") -> None:
    redis.sadd("rq:queues", b"rq:queue:" + raw)


def paused_metric(client: FlaskClient, queue: str) -> float | None:
    text = client.get("/metrics", headers=bearer(OPERATOR)).get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rqscope_queue_paused" and sample.labels.get("queue") == queue:
                return sample.value
    return None


def test_pause_and_resume_over_the_api_show_everywhere(app: Flask, real_redis: Redis) -> None:
    known(real_redis)
    client = app.test_client()
    assert paused_metric(client, "default") == 0
    first = client.post("/api/queues/default/pause", headers=bearer(OPERATOR))
    assert first.get_json() == {"queue": "default", "url_name": "default", "paused": True, "changed": True}
    assert client.post("/api/queues/default/pause", headers=bearer(OPERATOR)).get_json()["changed"] is False
    rows = client.get("/api/queues", headers=bearer(VIEWER)).get_json()["queues"]
    assert [(row["name"], row["paused"]) for row in rows] == [("default", True)]
    assert paused_metric(client, "default") == 1
    text = client.get("/metrics", headers=bearer(OPERATOR)).get_data()
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout and not checked.stderr, checked
    for page in ("/", "/queues/default/queued"):
        assert 'class="badge paused"' in client.get(page, headers=bearer(VIEWER)).get_data(as_text=True)
    client.post("/api/queues/default/resume", headers=bearer(OPERATOR))
    assert paused_metric(client, "default") == 0 and not real_redis.smembers(PAUSED_KEY)
    assert [(e.who, e.action, e.target) for e in recent(real_redis, 3)] == [
        ("api-token", "resume queue", "default"),
        ("api-token", "pause queue", "default"),
        ("api-token", "pause queue", "default"),
    ]
    assert client.post("/api/queues/nope/pause", headers=bearer(OPERATOR)).status_code == 404


def test_suspend_over_the_api_with_and_without_a_ttl(app: Flask, real_redis: Redis) -> None:
    client = app.test_client()
    for bad in (0, -1, 1.5, "1h", True, 10**9, None):
        refused = client.post(
            "/api/workers/suspend", json={"ttl": bad} if bad is not None else [], headers=bearer(OPERATOR)
        )
        assert refused.status_code == 400 and not real_redis.exists("rq:suspended"), bad
    answer = client.post("/api/workers/suspend", json={"ttl": 60}, headers=bearer(OPERATOR))
    assert answer.get_json() == {"suspended": True, "ttl": 60} and 0 < real_redis.ttl("rq:suspended") <= 60
    assert client.get("/api/workers", headers=bearer(VIEWER)).get_json()["suspended"] is True
    assert client.post("/api/workers/suspend", headers=bearer(OPERATOR)).get_json() == {"suspended": True, "ttl": None}
    assert real_redis.ttl("rq:suspended") == -1  # RQ's own flag, as `rq suspend` leaves it: until resumed
    assert 'id="suspended-banner"' in client.get("/tasks", headers=bearer(VIEWER)).get_data(as_text=True)
    client.post("/api/workers/resume", headers=bearer(OPERATOR))
    assert client.get("/api/workers", headers=bearer(VIEWER)).get_json()["suspended"] is False
    assert 'id="suspended-banner"' not in client.get("/tasks", headers=bearer(VIEWER)).get_data(as_text=True)
    assert [e.action for e in recent(real_redis, 3)] == ["resume workers", "suspend workers", "suspend workers"]


def test_the_dashboard_confirms_then_acts_with_the_csrf_token(app: Flask, real_redis: Redis) -> None:
    known(real_redis)
    client = browser(app)
    overview = client.get("/", headers=HTML).get_data(as_text=True)
    assert 'href="/queues/default/pause/confirm"' in overview and 'href="/workers/suspend/confirm"' in overview
    confirm = client.get("/queues/default/pause/confirm", headers=HTML).get_data(as_text=True)
    assert 'action="/queues/default/pause"' in confirm and f'value="{CSRF}"' in confirm
    forged = client.post("/queues/default/pause", data={}, headers=HTML)
    assert forged.status_code == 403 and not real_redis.smembers(PAUSED_KEY)
    forged_api = client.post("/api/queues/default/pause", json={})
    assert forged_api.status_code == 403 and not real_redis.smembers(PAUSED_KEY)
    done = client.post("/queues/default/pause", data={"csrf_token": CSRF})
    assert done.status_code == 302 and done.headers["Location"] == "/queues/default/queued"
    page = client.get(done.headers["Location"], headers=HTML).get_data(as_text=True)
    assert "Queue default paused." in page and 'href="/queues/default/resume/confirm"' in page
    client.post("/queues/default/resume", data={"csrf_token": CSRF})
    assert not real_redis.smembers(PAUSED_KEY)
    assert 'name="ttl"' in client.get("/workers/suspend/confirm", headers=HTML).get_data(as_text=True)
    assert client.post("/workers/suspend", data={}, headers=HTML).status_code == 403
    assert client.post("/workers/suspend", data={"csrf_token": CSRF, "ttl": "2h"}).status_code == 302
    assert 7000 < real_redis.ttl("rq:suspended") <= 7200
    banner = client.get("/", headers=HTML).get_data(as_text=True)
    assert 'id="suspended-banner"' in banner and 'href="/workers/resume/confirm"' in banner
    client.post("/workers/resume", data={"csrf_token": CSRF})
    assert not real_redis.exists("rq:suspended")
    assert [e.action for e in recent(real_redis, 4)] == [
        "resume workers",
        "suspend workers",
        "resume queue",
        "pause queue",
    ]


CONTROL_POSTS = [
    ("/queues/default/pause", {}),
    ("/queues/default/resume", {}),
    ("/workers/suspend", {}),
    ("/workers/resume", {}),
    ("/api/queues/default/pause", None),
    ("/api/queues/default/resume", None),
    ("/api/workers/suspend", None),
    ("/api/workers/resume", None),
    ("/enqueue", {"task": "t_ok", "arg.x": "1", "queue": "default"}),
]


def test_a_viewer_sees_no_controls_and_is_refused(app: Flask, real_redis: Redis) -> None:
    known(real_redis)
    set_paused(real_redis, "default", True, "ops")
    set_suspended(real_redis, True, "ops")
    client = app.test_client()
    for page in ("/", "/queues/default/queued", "/tasks", "/enqueue?task=t_ok", "/workers"):
        html = client.get(page, headers=bearer(VIEWER)).get_data(as_text=True)
        controls = re.findall(r'(?:href|action)="(/[^"]*(?:/pause|/resume|/suspend|/enqueue)[^"]*)"', html)
        assert controls == [] and 'id="enqueue"' not in html, (page, controls)
        assert 'id="suspended-banner"' in html
    for path, form in CONTROL_POSTS:
        refused = client.post(path, data=form, json=None if form is not None else {}, headers=bearer(VIEWER))
        assert refused.status_code == 403, path
    confirmations = (
        "/queues/default/pause/confirm",
        "/queues/default/resume/confirm",
        "/workers/suspend/confirm",
        "/workers/resume/confirm",
        "/queues/default/queued/confirm?action=empty",
    )
    for page in confirmations:  # the step before a change shows a viewer no form either
        shown = client.get(page, headers={**bearer(VIEWER), **HTML})
        assert shown.status_code == 403 and 'method="post"' not in shown.get_data(as_text=True).lower(), page
    assert real_redis.smembers(PAUSED_KEY) == {b"rq:queue:default"} and real_redis.exists("rq:suspended")
    assert real_redis.llen("rq:queue:default") == 0


HOSTILE = [b"x\ny", b"team/a", b"..", b"%41", b"q" * 5000, b"q\xff", b"<b>bold</b>"]


@pytest.mark.parametrize("raw", HOSTILE, ids=["newline", "slash", "dotdot", "percent", "5000", "not-utf8", "markup"])
def test_hostile_queue_names_pause_resume_and_render_escaped(app: Flask, real_redis: Redis, raw: bytes) -> None:
    known(real_redis, raw)
    name = encoded(raw)
    api = app.test_client()
    assert api.post(f"/api/queues/{name}/pause", headers=bearer(OPERATOR)).get_json()["paused"] is True
    assert real_redis.smembers(PAUSED_KEY) == {b"rq:queue:" + raw}
    assert fetch_snapshot(real_redis).paused == {as_name(raw)}
    assert paused_metric(api, label(as_name(raw))) == 1
    page = api.get(f"/queues/{name}/queued", headers=bearer(VIEWER)).get_data(as_text=True)
    assert 'class="badge paused"' in page and "<b>bold" not in page
    client = browser(app)
    overview = client.get("/", headers=HTML).get_data(as_text=True)
    [resume] = re.findall(r'href="(/queues/[^"]+/resume/confirm)"', overview)
    confirm = client.get(unescape(resume), headers=HTML)
    assert confirm.status_code == 200 and "<b>bold" not in confirm.get_data(as_text=True)
    [target] = re.findall(r'action="(/queues/[^"]+/resume)"', confirm.get_data(as_text=True))
    done = client.post(unescape(target), data={"csrf_token": CSRF})
    assert done.status_code == 302 and not real_redis.smembers(PAUSED_KEY)
    assert client.get(done.headers["Location"], headers=HTML).status_code == 200
    assert recent(real_redis, 1)[0].target == label(as_name(raw))


def test_the_enqueue_form_validates_as_the_api_does_and_keeps_the_values(app: Flask, real_redis: Redis) -> None:
    client = browser(app)
    form = client.get("/enqueue?task=send_email", headers=HTML).get_data(as_text=True)
    assert all(f'name="arg.{p}"' in form for p in ("to", "subject", "body", "duration", "fail_rate"))
    assert "keyword only" in form and '<option value="high"' in form and '<option value="default"' in form
    values = {
        "csrf_token": CSRF,
        "task": "send_email",
        "arg.to": '"ops@example.com"',
        "arg.subject": "",
        "arg.body": "<script>x</script>",
        "arg.duration": "0.01",
        "queue": "high",
        "in": "",
    }
    for change, problem in (
        ({}, "missing a required argument: &#39;subject&#39;"),
        ({"arg.subject": "hi", "in": "5 weeks"}, "&#39;in&#39;: &#39;5 weeks&#39; is not seconds"),
        ({"arg.subject": "hi", "queue": "low"}, "may run on high, default, not &#39;low&#39;"),
        ({"arg.subject": "hi", "arg.duration": "[" * 40 + "]" * 40}, "nested deeper than 32 levels"),
        ({"arg.subject": "hi", "arg.duration": "1e999"}, "duration: numbers must be finite"),
        ({"arg.subject": "hi", "arg.duration": "[-1e400]"}, "duration: numbers must be finite"),
    ):
        refused = client.post("/enqueue", data={**values, **change})
        page = refused.get_data(as_text=True)
        assert refused.status_code == 400 and problem in page, (change, page[:2000])
        assert 'value="&#34;ops@example.com&#34;"' in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert real_redis.llen("rq:queue:high") == 0 and not real_redis.zcard("rq:scheduled:high")
    done = client.post("/enqueue", data={**values, "arg.subject": "42", "in": "5m"})
    assert done.status_code == 302
    job_id = done.headers["Location"].removeprefix("/jobs/")
    job = Job.fetch(job_id, connection=real_redis)
    assert job.args == ("ops@example.com", 42, "<script>x</script>") and job.kwargs == {"duration": 0.01}
    assert job.origin == "high" and real_redis.zscore("rq:scheduled:high", job_id) is not None
    detail = client.get(done.headers["Location"], headers=HTML).get_data(as_text=True)
    assert "Enqueued send_email on high, to run at" in detail
    assert (recent(real_redis, 1)[0].action, recent(real_redis, 1)[0].target) == ("enqueue", f"send_email {job_id}")
    forged = client.post("/enqueue", data={k: v for k, v in values.items() if k != "csrf_token"})
    assert forged.status_code == 403
    assert client.get("/enqueue?task=nope", headers=HTML).status_code == 404


def test_the_queue_chart_page_shows_the_pause_and_its_control(app: Flask, real_redis: Redis) -> None:
    known(real_redis)
    set_paused(real_redis, "default", True, "ops")
    client = app.test_client()
    operator = client.get("/queues/default", headers={**bearer(OPERATOR), **HTML}).get_data(as_text=True)
    assert 'class="badge paused"' in operator and 'href="/queues/default/resume/confirm"' in operator
    viewer = client.get("/queues/default", headers={**bearer(VIEWER), **HTML}).get_data(as_text=True)
    assert 'class="badge paused"' in viewer and "/resume/confirm" not in viewer
