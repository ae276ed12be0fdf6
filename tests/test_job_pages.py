"""Job detail and scheduled list on a real Redis: every result, enqueue now, enqueue a copy, dependents, groups."""

from __future__ import annotations

import base64
import os
import pickle
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, Retry, get_current_job
from rq.group import Group
from rq.job import Job, JobStatus
from rq.results import Result
from rqscope.monitor import audit
from rqscope.monitor.settings import Settings
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.tasks.worker import InstrumentedWorker
from rqscope.web import create_app
from rqscope.web.jobs_views import when

from tests.helpers import rqscope_command, running
from tests.sample_tasks import t_fail, t_ok

pytestmark = pytest.mark.redis
HTML = {"Accept": "text/html"}
OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789ab"


def retried_twice(key: str) -> str:
    """Asks RQ for a retry on its first two runs (RQ keeps a `retried` result for each), then succeeds."""
    job = get_current_job()
    assert job is not None
    if job.connection.incr(key) <= 2:
        return Retry(max=2)  # type: ignore[return-value]
    return "third run ok"


def raises_twice(key: str) -> str:
    """Raises on its first two runs, which RQ retries under the job's Retry(max=2), then succeeds."""
    job = get_current_job()
    assert job is not None
    if job.connection.incr(key) <= 2:
        raise RuntimeError("not yet")
    return "third run ok"


class Hostile:
    """Unpickling this would run a shell command; the sidecar must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def work(redis: Redis, *queues: str) -> None:
    worker = InstrumentedWorker(list(queues or ["default"]), connection=redis, name="pages-worker", publish_interval=60)
    assert worker.work(burst=True, logging_level="WARNING")


def csrf(client: FlaskClient, job_id: str) -> str:
    client.get(f"/jobs/{job_id}", headers=HTML)  # renders the forms: the session holds a token now
    with client.session_transaction() as session:
        return str(session["csrf_token"])


def test_every_result_of_a_retried_job_newest_first(real_client: FlaskClient, real_redis: Redis) -> None:
    queue = Queue("default", connection=real_redis)
    job = queue.enqueue(retried_twice, "runs")
    work(real_redis)
    assert job.get_status() == JobStatus.FINISHED
    body = real_client.get(f"/api/jobs/{job.id}").get_json()
    results = body["results"]
    assert [r["type"] for r in results] == ["success", "retried", "retried"]
    assert body["results_total"] == 3
    times = [r["created_at"] for r in results]
    assert times == sorted(times, reverse=True) and all(t.endswith("Z") for t in times)
    assert {r["worker_name"] for r in results} == {"pages-worker"}
    assert results[0]["return_value"] == "third run ok" and results[0]["exception"] is None
    assert "Retry" in results[1]["return_value"]  # RQ's Retry, shown by name: never rebuilt in the sidecar
    assert real_client.get(f"/api/tasks/{job.id}").get_json()["results"] == results
    page = real_client.get(f"/jobs/{job.id}", headers=HTML).get_data(as_text=True)
    rows = re.findall(r'<span class="badge result-(\w+)">', page)
    assert rows == ["success", "retried", "retried"]
    assert "third run ok" in page and "pages-worker" in page


def test_every_attempt_of_a_retried_job_has_a_result(real_client: FlaskClient, real_redis: Redis) -> None:
    queue = Queue("default", connection=real_redis)
    job = queue.enqueue(raises_twice, "raises", retry=Retry(max=2))
    failing = queue.enqueue(t_fail, 7)
    work(real_redis)
    body = real_client.get(f"/api/jobs/{job.id}").get_json()
    assert job.get_status() == JobStatus.FINISHED and real_redis.get("raises") == b"3"
    # RQ keeps no result for a failure it retries; rqscope's worker records each one as `retried`
    assert [r["type"] for r in body["results"]] == ["success", "retried", "retried"]
    assert [r["exception"]["type"] for r in body["results"][1:]] == ["RuntimeError", "RuntimeError"]
    assert len(Result.all(job)) == 3 and job.latest_result().type == Result.Type.SUCCESSFUL  # type: ignore[union-attr]
    failed = real_client.get(f"/api/jobs/{failing.id}").get_json()["results"]
    assert [r["type"] for r in failed] == ["failed"]
    assert failed[0]["exception"] == {"type": "KeyError", "message": "'missing 7'"}
    assert "Traceback" in failed[0]["traceback"] and failed[0]["return_value"] is None


def test_a_hostile_result_is_shown_never_run(real_client: FlaskClient, real_redis: Redis, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job = Queue("default", connection=real_redis).enqueue(t_ok, 1)
    hostile = base64.b64encode(pickle.dumps(Hostile(marker))).decode()
    real_redis.xadd(KEYS.results(job.id), {"type": "1", "worker_name": "w<b>", "return_value": hostile})
    real_redis.xadd(KEYS.results(job.id), {"type": "1", "return_value": "not base64!"})
    real_redis.xadd(KEYS.results(job.id), {"type": "9", "exc_string": "garbage"})
    body = real_client.get(f"/api/jobs/{job.id}").get_json()
    newest, garbled, shown = body["results"]
    assert newest["type"] == "unknown" and newest["traceback"] == "garbage"
    assert "return_value" in garbled["unreadable"] and garbled["return_value"] is None
    assert shown["return_value"] == "<posix.system object>" and not marker.exists()
    page = real_client.get(f"/jobs/{job.id}", headers=HTML).get_data(as_text=True)
    assert "w&lt;b&gt;" in page and "&lt;posix.system object&gt;" in page and not marker.exists()
    real_redis.delete(KEYS.results(job.id))
    real_redis.set(KEYS.results(job.id), "a string, not a stream")
    assert real_client.get(f"/api/jobs/{job.id}").get_json()["results"] == []


def test_ids_rq_refuses_name_no_job(real_client: FlaskClient) -> None:
    for job_id in ("has space", "..", "x" * 5000, "%2e%2e", "a:b"):
        for action in ("enqueue", "copy"):
            assert real_client.post(f"/api/jobs/{job_id}/{action}", json={}).status_code == 404, (job_id, action)
    assert real_client.post("/api/jobs/nope/enqueue", json={}).status_code == 404
    assert real_client.post("/api/jobs/nope/copy", json={}).status_code == 404


def test_enqueue_now_runs_a_scheduled_job_once(
    real_client: FlaskClient, real_redis: Redis, real_settings: Settings
) -> None:
    job = Queue("default", connection=real_redis).enqueue_in(timedelta(hours=1), t_ok, 21)
    before = real_client.get(f"/api/jobs/{job.id}").get_json()
    due = datetime.fromisoformat(before["scheduled_for"]).timestamp()
    assert before["status"] == "scheduled" and abs(due - (time.time() + 3600)) < 5
    answer = real_client.post(f"/api/jobs/{job.id}/enqueue", json={})
    assert answer.status_code == 200 and answer.get_json() == {"id": job.id, "status": "queued"}
    assert real_redis.zscore(KEYS.registry("scheduled", "default"), job.id) is None
    assert real_redis.lrange(KEYS.queue("default"), 0, -1) == [job.id.encode()]
    again = real_client.post(f"/api/jobs/{job.id}/enqueue", json={})
    assert again.status_code == 409 and "not in its queue's scheduled registry" in again.get_json()["error"]
    assert real_redis.lrange(KEYS.queue("default"), 0, -1) == [job.id.encode()]
    assert [(e.action, e.target) for e in audit.recent(real_redis, 5)] == [("enqueue now", job.id)]
    env = {"RQSCOPE_REDIS_URL": real_settings.redis_url or "", "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with running(rqscope_command("worker", "default", "--burst", "--log-level", "WARNING"), env) as worker:
        assert worker.wait(60) == 0
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == 42


def test_a_due_job_is_left_to_a_running_scheduler(real_client: FlaskClient, real_redis: Redis) -> None:
    queue = Queue("default", connection=real_redis)
    job = queue.enqueue_at(datetime.now(UTC) - timedelta(seconds=30), t_ok, 1, meta={"owner": "team-a"})
    real_redis.hset(KEYS.job(job.id), "meta", pickle.dumps({"owner": Hostile(Path("/nonexistent"))}))
    meta = real_redis.hget(KEYS.job(job.id), "meta")
    real_redis.set(KEYS.scheduler_lock("default"), "scheduler-host", ex=60)  # a live scheduler holds the queue
    refused = real_client.post(f"/api/jobs/{job.id}/enqueue", json={})
    assert refused.status_code == 409 and "scheduler is running" in refused.get_json()["error"]
    assert real_redis.zscore(KEYS.registry("scheduled", "default"), job.id) is not None
    real_redis.delete(KEYS.scheduler_lock("default"))  # no scheduler: nobody else will enqueue it
    assert real_client.post(f"/api/jobs/{job.id}/enqueue", json={}).status_code == 200
    assert real_redis.hget(KEYS.job(job.id), "meta") == meta  # the user's meta is not rewritten
    assert Job.fetch(job.id, connection=real_redis).get_status() == JobStatus.QUEUED
    assert real_redis.lrange(KEYS.queue("default"), 0, -1) == [job.id.encode()]


@pytest.fixture
def secured(real_settings: Settings, real_redis: Redis) -> Flask:
    return create_app(real_settings.replace(api_token=OPERATOR, viewer_token=VIEWER, host="0.0.0.0"), testing=True)


def test_enqueue_now_and_copy_need_an_operator_and_the_csrf_token(
    secured: Flask, real_client: FlaskClient, real_redis: Redis
) -> None:
    queue = Queue("default", connection=real_redis)
    scheduled = queue.enqueue_in(timedelta(hours=1), t_ok, 2)
    done = queue.enqueue(t_ok, 3)
    work(real_redis)
    viewer = secured.test_client()
    for job_id, action in ((scheduled.id, "enqueue"), (done.id, "copy")):
        path = f"/api/jobs/{job_id}/{action}"
        assert viewer.post(path, headers={"Authorization": f"Bearer {VIEWER}"}, json={}).status_code == 403
        assert real_client.post(f"/jobs/{job_id}/{action}", data={}).status_code == 403
        assert real_client.post(f"/jobs/{job_id}/{action}", data={"csrf_token": "forged"}).status_code == 403
    assert real_redis.zscore(KEYS.registry("scheduled", "default"), scheduled.id) is not None
    assert real_redis.llen(KEYS.queue("default")) == 0 and audit.recent(real_redis) == []
    page = real_client.get(f"/jobs/{scheduled.id}", headers=HTML).get_data(as_text=True)
    assert "Enqueue now" in page and "Enqueue a copy" not in page
    token = csrf(real_client, scheduled.id)
    moved = real_client.post(f"/jobs/{scheduled.id}/enqueue", data={"csrf_token": token})
    assert moved.status_code == 302 and real_redis.lrange(KEYS.queue("default"), 0, -1) == [scheduled.id.encode()]
    viewer_page = viewer.get(f"/jobs/{done.id}", headers={"Authorization": f"Bearer {VIEWER}", **HTML})
    assert viewer_page.status_code == 200 and "Enqueue a copy" not in viewer_page.get_data(as_text=True)


def test_a_copy_runs_the_same_task_with_the_same_arguments(real_client: FlaskClient, real_redis: Redis) -> None:
    queue = Queue("q1", connection=real_redis)
    original = queue.enqueue(t_ok, 5, job_id="original-1")
    work(real_redis, "q1")
    assert original.get_status() == JobStatus.FINISHED
    browser = real_client.application.test_client()  # a session of its own: the API caller has none
    page = browser.get(f"/jobs/{original.id}", headers=HTML).get_data(as_text=True)
    assert '<span class="badge status-finished" data-status>finished</span>' in page and "Enqueue a copy" in page
    answer = real_client.post(f"/api/jobs/{original.id}/copy", json={})
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["copy_of"] == original.id and body["status_url"] == f"/api/tasks/{body['id']}"
    copy = Job.fetch(body["id"], connection=real_redis)
    assert (copy.func_name, copy.args, copy.kwargs, copy.origin) == ("tests.sample_tasks.t_ok", (5,), {}, "q1")
    assert copy.id != original.id and copy.get_status() == JobStatus.QUEUED
    assert [(e.action, e.target) for e in audit.recent(real_redis, 5)] == [
        ("enqueue a copy", f"{original.id} -> {copy.id}")
    ]
    work(real_redis, "q1")
    assert copy.return_value() == 10
    token = csrf(browser, original.id)
    moved = browser.post(f"/jobs/{original.id}/copy", data={"csrf_token": token})
    assert moved.status_code == 302 and "/jobs/" in moved.location and original.id not in moved.location


def test_a_copy_is_refused_unless_it_can_be_exact(real_client: FlaskClient, real_redis: Redis, tmp_path: Path) -> None:
    queue = Queue("default", connection=real_redis)
    unregistered = queue.enqueue(retried_twice, "k")
    opaque = queue.enqueue(t_ok, 1)
    waiting = queue.enqueue(t_ok, 2)
    for job in (unregistered, opaque):
        real_redis.hset(KEYS.job(job.id), "status", "finished")
    marker = tmp_path / "ran"
    raw = pickle.dumps(("tests.sample_tasks.t_ok", None, (Hostile(marker),), {}))
    real_redis.hset(KEYS.job(opaque.id), "data", raw)
    refusals = {
        unregistered.id: "is not a registered task",
        opaque.id: "cannot be read as plain values (an argument is a posix.system",
        waiting.id: "this one is queued",
    }
    for job_id, reason in refusals.items():
        answer = real_client.post(f"/api/jobs/{job_id}/copy", json={})
        assert answer.status_code == 409 and reason in answer.get_json()["error"], answer.get_json()
    assert real_redis.llen(KEYS.queue("default")) == 3 and not marker.exists() and audit.recent(real_redis) == []


def test_detail_lists_dependents_and_the_group(real_client: FlaskClient, real_redis: Redis) -> None:
    queue = Queue("default", connection=real_redis)
    parent = queue.enqueue(t_ok, 1)
    children = [queue.enqueue(t_ok, i, depends_on=parent) for i in range(2)]
    body = real_client.get(f"/api/jobs/{parent.id}").get_json()
    assert body["dependents"] == sorted(c.id for c in children) and body["dependents_total"] == 2
    page = real_client.get(f"/jobs/{parent.id}", headers=HTML).get_data(as_text=True)
    for child in children:
        assert f'href="/jobs/{child.id}"' in page
    child_page = real_client.get(f"/jobs/{children[0].id}", headers=HTML).get_data(as_text=True)
    assert f'href="/jobs/{parent.id}"' in child_page and "status-deferred" in child_page
    real_redis.sadd(KEYS.dependents(parent.id), *[f"<b>{i}" for i in range(150)])
    many = real_client.get(f"/api/jobs/{parent.id}").get_json()
    assert len(many["dependents"]) == 100 and many["dependents_total"] == 152
    page = real_client.get(f"/jobs/{parent.id}", headers=HTML).get_data(as_text=True)
    assert "and 52 more" in page and "<b>" not in page
    group = Group.create(connection=real_redis, name="nightly-batch")
    grouped = group.enqueue_many(queue, [Queue.prepare_data(t_ok, args=(i,)) for i in range(3)])
    body = real_client.get(f"/api/jobs/{grouped[0].id}").get_json()
    assert body["group"] == {"id": "nightly-batch", "jobs": 3}
    page = real_client.get(f"/jobs/{grouped[0].id}", headers=HTML).get_data(as_text=True)
    assert "<code>nightly-batch</code> · 3 jobs" in page
    assert real_client.get(f"/api/jobs/{parent.id}").get_json()["group"] is None


def test_scheduled_list_shows_when_each_job_falls_due(real_client: FlaskClient, real_redis: Redis) -> None:
    queue = Queue("default", connection=real_redis)
    later = queue.enqueue_in(timedelta(hours=1), t_ok, 1)
    sooner = queue.enqueue_in(timedelta(minutes=5), t_ok, 2)
    score = real_redis.zscore(KEYS.registry("scheduled", "default"), later.id)
    rows = real_client.get("/api/queues/default/jobs?state=scheduled").get_json()["jobs"]
    assert [(r["id"], r["scheduled_for"]) for r in rows][0] == (later.id, score)
    page = real_client.get("/queues/default/scheduled", headers=HTML).get_data(as_text=True)
    exact = datetime.fromtimestamp(score, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert "<th>Scheduled for</th>" in page and f'<time title="{exact}">in 59 min</time>' in page
    assert re.search(r'<time title="[^"]+">in 4 min</time>', page)
    assert page.count(">Enqueue now</button>") == 2 and sooner.id in page
    failed_page = real_client.get("/queues/default/failed", headers=HTML).get_data(as_text=True)
    assert "Scheduled for" not in failed_page


def test_relative_times_read_both_ways() -> None:
    now = time.time()
    assert when(now + 3 * 3600 + 5) == "in 3 h" and when(now - 90) == "1 min ago"
    assert when(now - 2 * 86400) == "2 d ago" and when(None) == "" and when("garbage") == ""


@pytest.mark.skipif(not hasattr(Queue, "_enqueue_rate_limited_job"), reason="concurrency limits arrived in rq 3.0")
def test_enqueue_now_respects_a_concurrency_limit(real_client: FlaskClient, real_redis: Redis) -> None:
    from rq.rate_limit import RateLimit, RateLimitRegistry  # type: ignore[import-not-found]

    queue = Queue("default", connection=real_redis)
    jobs = [queue.enqueue_in(timedelta(hours=1), t_ok, i, rate_limit=RateLimit("partner", 1)) for i in range(2)]
    for job in jobs:
        assert real_client.post(f"/api/jobs/{job.id}/enqueue", json={}).status_code == 200
    limit = RateLimitRegistry("partner", connection=real_redis)
    assert limit.get_allowed_job_count() == 1 and limit.get_rate_limited_job_count() == 1
    assert real_redis.llen(KEYS.queue("default")) == 1  # one slot: one job on the queue, one held back
    work(real_redis)  # RQ's limiter promotes the held job when the slot frees
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert [job.return_value() for job in jobs] == [0, 2]


def test_concurrent_enqueue_now_moves_the_job_once(real_redis: Redis, redis_server) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    from rqscope.monitor.scheduled import enqueue_now

    job = Queue("default", connection=real_redis).enqueue_in(timedelta(hours=1), t_ok, 1)
    clients = [Redis.from_url(redis_server.url) for _ in range(8)]
    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = list(pool.map(lambda c: enqueue_now(c, job.id, "default").moved, clients))
    assert outcomes.count(True) == 1
    assert real_redis.lrange(KEYS.queue("default"), 0, -1) == [job.id.encode()]
    for client in clients:
        client.close()
