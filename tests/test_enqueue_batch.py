"""POST /api/tasks/batch and scheduled enqueue ("in"/"at"), on a real redis-server and a real worker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rqscope.monitor.audit import recent
from rqscope.monitor.settings import Settings
from rqscope.tasks.metrics import METRICS_KEY, field_name
from rqscope.web import create_app

from tests.helpers import rqscope_command, running, wait_for

pytestmark = pytest.mark.redis

HOSTILE = ["line\nbreak", "a/b", "..", "%2F", "x" * 5000, "<script>alert(1)</script>"]


def batch(client: FlaskClient, items: object, **kwargs: object):  # type: ignore[no-untyped-def]
    return client.post("/api/tasks/batch", json={"tasks": items}, **kwargs)


def enqueued(redis: Redis, task: str, queue: str) -> int:
    return int(redis.hget(METRICS_KEY, field_name(task, queue, "enqueued")) or 0)


def nothing_written(redis: Redis) -> bool:
    return not redis.keys("rq:*") and not redis.exists(METRICS_KEY)


def test_a_batch_is_enqueued_in_request_order_across_queues(real_client: FlaskClient, real_redis: Redis) -> None:
    items = [
        {"task": "send_email", "args": ["a@example.com", "Hi", "first"]},
        {"task": "t_ok", "args": [1], "queue": "q1"},
        {"task": "send_email", "kwargs": {"to": "b@example.com", "subject": "Hi", "body": "second"}},
        {"task": "t_ok", "args": [2], "job_id": "chosen-id", "queue": "q1"},
    ]
    response = batch(real_client, items)
    assert response.status_code == 202, response.text
    ids = response.get_json()["ids"]
    assert len(ids) == 4 and ids[3] == "chosen-id" and response.get_json()["created"] == 4
    assert Queue("high", connection=real_redis).job_ids == [ids[0], ids[2]]
    assert Queue("q1", connection=real_redis).job_ids == [ids[1], ids[3]]
    assert Job.fetch(ids[2], connection=real_redis).kwargs["body"] == "second"
    assert (enqueued(real_redis, "send_email", "high"), enqueued(real_redis, "t_ok", "q1")) == (2, 2)
    [entry] = recent(real_redis, 1)
    assert (entry.action, entry.count) == ("enqueue", 4) and "send_email" in entry.target


def test_a_batch_is_one_transaction(real_client: FlaskClient, real_redis: Redis) -> None:
    real_client.post("/api/tasks", json={"task": "t_ok"})  # RQ reads the server version once per connection
    real_redis.config_resetstat()
    items = [{"task": "t_ok", "args": [n], "queue": ("q1", "q2")[n % 2]} for n in range(200)]
    assert batch(real_client, items).status_code == 202
    stats = real_redis.info("commandstats")
    assert stats["cmdstat_multi"]["calls"] == 1 and stats["cmdstat_exec"]["calls"] == 1
    assert stats["cmdstat_hincrby"]["calls"] == 2  # one counter update per (task, queue), in the same EXEC
    assert enqueued(real_redis, "t_ok", "q1") == enqueued(real_redis, "t_ok", "q2") == 100


def test_an_enqueue_and_its_audit_entry_are_one_round_trip(real_settings: Settings, real_redis: Redis) -> None:
    from bench.common import CountingConnection, counting_client

    client = create_app(real_settings, redis=counting_client(str(real_settings.redis_url)), testing=True).test_client()
    client.post("/api/tasks", json={"task": "t_ok"})  # RQ reads the server version once per connection
    for body, path in (
        ({"task": "t_ok", "in": 60}, "/api/tasks"),
        ({"tasks": [{"task": "t_ok"}] * 50}, "/api/tasks/batch"),
    ):
        before = CountingConnection.sends
        assert client.post(path, json=body).status_code == 202
        assert CountingConnection.sends - before == 1, path
    assert [entry.action for entry in recent(real_redis, 5)] == ["enqueue"] * 3


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"task": "t_ok"}, {"task": "t_ok"}, {"task": "os.system", "args": ["id"]}], "tasks[2]: unknown task"),
        ([{"task": "t_ok"}, {"task": "t_ok", "args": [1, 2, 3]}], "tasks[1]: t_ok: too many positional"),
        ([{"task": "t_ok"}, "t_ok"], "tasks[1]: each item must be an object"),
        ([{"task": "t_ok", "bogus": 1}], "tasks[0]: unknown field(s): bogus"),
        ([{"task": "t_ok", "queue": "high"}], "tasks[0]: task 't_ok' may run on"),
        ([{"task": "t_ok", "queue": 3}], "tasks[0]: 'queue' must be a string"),
        ([{"task": "t_ok", "job_id": "x y"}], "tasks[0]: job_id"),
        ([{"task": "t_ok", "job_id": "same"}, {"task": "t_ok", "job_id": "same"}], "tasks[1]: job_id 'same' appears"),
        ([{"task": "t_ok", "in": "5 parsecs"}], "tasks[0]: 'in': '5 parsecs' is not seconds"),
        ([{"task": "t_ok", "in": 60, "at": "2030-01-01T00:00:00+00:00"}], "tasks[0]: give either 'in' or 'at'"),
        ([{"task": "t_ok", "at": "2030-01-01T00:00:00"}], "tasks[0]: 'at': '2030-01-01T00:00:00' has no UTC offset"),
        ([{"task": "t_ok", "at": "2001-01-01T00:00:00+00:00"}], "is in the past"),
        ([{"task": "t_ok", "at": "9999-12-31T23:00:00-05:00"}], "is out of range"),
        ([{"task": "t_ok", "at": "0001-01-01T00:30:00+01:00"}], "is out of range"),
        ([{"task": "t_ok", "at": "next tuesday"}], "is not an ISO 8601 time"),
        ([{"task": "t_ok", "at": 1767225600}], "'at' must be an ISO 8601 time"),
        ([{"task": "t_ok", "in": True}], "'in' must be seconds"),
        ([{"task": "t_ok", "in": "nan"}], "is not seconds"),
        ([{"task": "t_ok", "in": "9" * 5000}], "is not seconds"),
        ([{"task": "t_ok", "in": 2**1024}], "'in' must be a finite number of seconds"),
        ([{"task": "t_ok", "in": "\u0661\u0662"}], "is not seconds"),  # Arabic-Indic digits
        ([{"task": "t_ok", "in": "31d"}], "longer than the 2592000 s allowed"),
        ([{"task": "t_ok", "in": -5}], "'in' must be a finite number of seconds"),
        ([], "'tasks' must hold 1 to 1000 items"),
        ({"task": "t_ok"}, "'tasks' must be a list"),
        ([{"task": q, "queue": q} for q in HOSTILE], "tasks[0]: unknown task"),
        ([{"task": "t_ok", "queue": q} for q in HOSTILE], "tasks[0]: task 't_ok' may run on"),
    ],
)
def test_any_bad_item_refuses_the_whole_batch(
    real_client: FlaskClient, real_redis: Redis, items: object, message: str
) -> None:
    response = batch(real_client, items)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert nothing_written(real_redis)


def test_a_batch_over_the_limits_is_refused(real_settings: Settings, real_redis: Redis) -> None:
    client = create_app(real_settings.replace(max_batch=3, max_batch_bytes=2048), testing=True).test_client()
    assert "1 to 3 items (RQSCOPE_MAX_BATCH), not 4" in batch(client, [{"task": "t_ok"}] * 4).get_json()["error"]
    huge = batch(client, [{"task": "t_ok", "kwargs": {"x": "y" * 3000}}])
    assert huge.status_code == 400 and "(RQSCOPE_MAX_BATCH_BYTES)" in huge.get_json()["error"]
    assert nothing_written(real_redis)


def test_a_batch_may_be_larger_than_a_single_request_body(real_client: FlaskClient, real_redis: Redis) -> None:
    items = [{"task": "send_email", "args": [f"user{n}@example.com", "Notification", "x" * 100]} for n in range(1000)]
    assert len(json.dumps({"tasks": items})) > 64 * 1024
    response = batch(real_client, items)
    assert response.status_code == 202 and len(set(response.get_json()["ids"])) == 1000
    assert Queue("high", connection=real_redis).count == 1000


def test_replaying_a_batch_with_job_ids_enqueues_nothing_twice(real_client: FlaskClient, real_redis: Redis) -> None:
    items = [{"task": "t_ok", "args": [n], "job_id": f"notify-{n}"} for n in range(5)]
    first = batch(real_client, items).get_json()
    again = batch(real_client, [*items, {"task": "t_ok", "job_id": "notify-5"}])
    assert again.status_code == 202
    assert again.get_json() == {"ids": [*first["ids"], "notify-5"], "created": 1}
    assert Queue("default", connection=real_redis).job_ids == [f"notify-{n}" for n in range(6)]
    assert enqueued(real_redis, "t_ok", "default") == 6


def test_a_job_id_naming_another_tasks_job_is_a_conflict(real_client: FlaskClient, real_redis: Redis) -> None:
    report = real_client.post("/api/tasks", json={"task": "generate_report", "args": ["r1"], "job_id": "shared"})
    assert report.status_code == 202
    refused = batch(
        real_client, [{"task": "t_ok"}, {"task": "send_email", "args": ["a", "b", "c"], "job_id": "shared"}]
    )
    assert refused.status_code == 409
    assert "tasks[1]: job_id 'shared' already names a job that is not a run of send_email" in refused.text
    single = real_client.post("/api/tasks", json={"task": "t_ok", "job_id": "shared", "in": 60})
    assert single.status_code == 409
    assert Queue("default", connection=real_redis).count == 0 and Queue("high", connection=real_redis).count == 0
    same = real_client.post("/api/tasks", json={"task": "generate_report", "args": ["other"], "job_id": "shared"})
    assert same.status_code == 200 and same.get_json()["id"] == "shared"  # the same task: already enqueued


def test_non_json_and_unauthenticated_batches(real_settings: Settings, real_redis: Redis) -> None:
    client = create_app(real_settings.replace(api_token="operator-token-0123456789"), testing=True).test_client()
    assert batch(client, [{"task": "t_ok"}]).status_code == 401
    raw = client.post("/api/tasks/batch", data=b"tasks", headers={"Authorization": "Bearer operator-token-0123456789"})
    assert raw.status_code == 415
    assert nothing_written(real_redis)


@pytest.mark.parametrize(("when", "seconds"), [({"in": 90}, 90), ({"in": "5m"}, 300), ({"in": "2h"}, 7200)])
def test_in_schedules_the_job(real_client: FlaskClient, real_redis: Redis, when: dict, seconds: int) -> None:
    before = time.time()
    response = real_client.post("/api/tasks", json={"task": "t_ok", "args": [3], **when})
    assert response.status_code == 202 and response.get_json()["status"] == "scheduled"
    job_id = response.get_json()["id"]
    score = ScheduledJobRegistry("default", connection=real_redis).get_scheduled_time(job_id).timestamp()
    assert before + seconds - 1 <= score <= time.time() + seconds + 1
    assert Queue("default", connection=real_redis).count == 0
    shown = real_client.get(f"/api/tasks/{job_id}").get_json()
    assert shown["status"] == "scheduled"
    assert abs(datetime.fromisoformat(shown["scheduled_for"].replace("Z", "+00:00")).timestamp() - score) < 1


def test_at_with_any_offset_is_read_as_that_instant(real_client: FlaskClient, real_redis: Redis) -> None:
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    local = moment.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    tokyo = moment.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")).isoformat()
    response = batch(real_client, [{"task": "t_ok", "at": local}, {"task": "t_ok", "at": tokyo}])
    registry = ScheduledJobRegistry("default", connection=real_redis)
    for job_id in response.get_json()["ids"]:
        assert registry.get_scheduled_time(job_id) == moment


def test_in_zero_runs_now(real_client: FlaskClient, real_redis: Redis) -> None:
    response = real_client.post("/api/tasks", json={"task": "t_ok", "in": 0})
    assert response.get_json()["status"] == "queued"
    assert Queue("default", connection=real_redis).job_ids == [response.get_json()["id"]]


def test_max_delay_is_a_setting(real_settings: Settings, real_redis: Redis) -> None:
    client = create_app(real_settings.replace(max_delay=60.0), testing=True).test_client()
    response = client.post("/api/tasks", json={"task": "t_ok", "in": "2m"})
    assert response.status_code == 400 and "longer than the 60 s allowed" in response.get_json()["error"]
    assert client.post("/api/tasks", json={"task": "t_ok", "in": "1m"}).status_code == 202


def test_a_scheduled_job_runs_when_due_under_the_worker_with_scheduler(
    real_client: FlaskClient, real_redis: Redis, real_settings: Settings
) -> None:
    now = real_client.post("/api/tasks", json={"task": "t_ok", "args": [1]}).get_json()["id"]
    later = batch(real_client, [{"task": "t_ok", "args": [21], "in": 2}, {"task": "t_ok", "args": [5], "in": "1h"}])
    soon, far = later.get_json()["ids"]
    env = {"RQSCOPE_REDIS_URL": str(real_settings.redis_url), "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    started = time.time()
    with running(rqscope_command("worker", "default", "--with-scheduler", "--log-level", "WARNING"), env):
        wait_for(lambda: Job.fetch(soon, connection=real_redis).get_status() == JobStatus.FINISHED, timeout=30)
    assert Job.fetch(soon, connection=real_redis).return_value() == 42
    assert Job.fetch(soon, connection=real_redis).started_at.timestamp() >= started + 1  # type: ignore[union-attr]
    assert Job.fetch(now, connection=real_redis).get_status() == JobStatus.FINISHED
    assert Job.fetch(far, connection=real_redis).get_status() == JobStatus.SCHEDULED


def test_the_guides_notify_all_runs_every_email_without_failures(real_client: FlaskClient, real_redis: Redis) -> None:
    from rqscope.tasks.worker import InstrumentedWorker

    items = [
        {"task": "send_email", "args": [f"user{n}@example.com", "Notification", "hello"], "kwargs": {"duration": 0}}
        for n in range(60)
    ]
    ids = batch(real_client, items).get_json()["ids"]
    InstrumentedWorker(["high"], connection=real_redis).work(burst=True, logging_level="WARNING")
    jobs = Job.fetch_many(ids, connection=real_redis)
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * 60  # type: ignore[union-attr]
    assert jobs[7].return_value()["to"] == "user7@example.com"  # type: ignore[union-attr,index]
