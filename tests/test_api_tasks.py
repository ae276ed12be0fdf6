"""The enqueue API: POST /api/tasks, GET and DELETE /api/tasks/<id>, /healthz and /readyz."""

from __future__ import annotations

import json
import time

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rqscope.monitor.settings import Settings
from rqscope.tasks.metrics import METRICS_KEY, field_name
from rqscope.web import create_app

TOKEN = "operator-token-0123456789"


def post(client: FlaskClient, body: object, **kwargs: object):  # type: ignore[no-untyped-def]
    return client.post("/api/tasks", json=body, **kwargs)


def test_enqueue_happy_path(client: FlaskClient, redis: Redis) -> None:
    response = post(client, {"task": "t_ok", "args": [4], "kwargs": {}})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert body["status_url"] == f"/api/tasks/{body['id']}" == response.headers["Location"]
    assert Queue("default", connection=redis).job_ids == [body["id"]]
    job = Job.fetch(body["id"], connection=redis)
    assert job.func_name == "tests.sample_tasks.t_ok" and job.args == (4,)
    assert redis.hget(METRICS_KEY, field_name("t_ok", "default", "enqueued")) == b"1"


def test_enqueue_on_an_allowed_queue(client: FlaskClient, redis: Redis) -> None:
    response = post(client, {"task": "t_ok", "args": [], "kwargs": {"x": 1}, "queue": "q2"})
    assert response.status_code == 202
    assert Queue("q2", connection=redis).job_ids == [response.get_json()["id"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"task": "os.system", "args": ["id"]}, "unknown task 'os.system'"),
        ({"task": "tests.sample_tasks.t_ok"}, "unknown task"),
        ({"task": "t_ok", "queue": "high"}, "may run on"),
        ({"args": []}, "'task' is required"),
        ({"task": 5}, "'task' must be a string"),
        ({"task": "t_ok", "args": {"a": 1}}, "'args' must be a list"),
        ({"task": "t_ok", "kwargs": []}, "'kwargs' must be an object"),
        ({"task": "t_ok", "queue": 1}, "'queue' must be a string"),
        ({"task": "t_ok", "job_id": 7}, "'job_id' must be a string"),
        ({"task": "t_ok", "job_id": ""}, "'job_id' must be 1 to 128"),
        ({"task": "t_ok", "job_id": "../../etc"}, "job_id"),
        ({"task": "t_ok", "args": [1, 2, 3]}, "too many positional"),
        ({"task": "t_ok", "kwargs": {"y": 1}}, "unexpected keyword"),
        ({"task": "t_ok", "extra": 1}, "unknown field(s): extra"),
        (["t_ok"], "must be a JSON object"),
        ({"task": "t_ok", "args": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "nested"),
    ],
)
def test_bad_bodies_get_400_naming_the_problem_and_enqueue_nothing(
    client: FlaskClient, redis: Redis, body: object, message: str
) -> None:
    response = post(client, body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert message in response.get_json()["error"]
    assert redis.keys("rq:*") == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"task": "t_ok", "args": [1e400]}',
        b'{"task": "t_ok", "args": [NaN]}',
        b"\xff\xfe",
        b"",
        b'{"task": "t_ok"} trailing',
    ],
)
def test_malformed_json_is_400(client: FlaskClient, redis: Redis, raw: bytes) -> None:
    response = client.post("/api/tasks", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.get_json()
    assert redis.keys("rq:*") == []


def test_deep_nesting_that_breaks_the_parser_is_400(client: FlaskClient) -> None:
    raw = b'{"task": "t_ok", "args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.post("/api/tasks", data=raw, content_type="application/json")
    assert response.status_code == 400


def test_oversized_body_is_400(client: FlaskClient, redis: Redis) -> None:
    body = {"task": "t_ok", "args": ["x" * 70_000]}
    response = post(client, body)
    assert response.status_code == 400
    assert "larger than 65536 bytes" in response.get_json()["error"]
    assert redis.keys("rq:*") == []


def test_wrong_content_type_is_415(client: FlaskClient, redis: Redis) -> None:
    response = client.post("/api/tasks", data='{"task": "t_ok"}', content_type="text/plain")
    assert response.status_code == 415
    assert redis.keys("rq:*") == []


def test_job_id_makes_enqueue_idempotent(real_client: FlaskClient, real_redis: Redis) -> None:
    body = {"task": "t_ok", "args": [1], "job_id": "order-42-receipt"}
    first = post(real_client, body)
    second = post(real_client, body)
    assert first.status_code == 202 and second.status_code == 200
    assert first.get_json()["id"] == second.get_json()["id"] == "order-42-receipt"
    assert Queue("default", connection=real_redis).job_ids == ["order-42-receipt"]
    assert real_redis.hget(METRICS_KEY, field_name("t_ok", "default", "enqueued")) == b"1"


def test_status_of_a_queued_job(client: FlaskClient) -> None:
    job_id = post(client, {"task": "t_ok", "args": [2]}).get_json()["id"]
    body = client.get(f"/api/tasks/{job_id}").get_json()
    assert body["id"] == job_id and body["task"] == "t_ok" and body["queue"] == "default"
    assert body["status"] == "queued" and body["enqueued_at"].endswith("Z")
    assert body["started_at"] is None and body["result"] is None and body["error"] is None


@pytest.mark.parametrize("job_id", ["missing", "x" * 500, "%00", "<script>"])
def test_unknown_job_is_404(client: FlaskClient, job_id: str) -> None:
    response = client.get(f"/api/tasks/{job_id}")
    assert response.status_code == 404
    assert "<script>" not in response.get_data(as_text=True) or response.is_json


@pytest.mark.redis
def test_status_reports_result_and_error_after_a_real_worker_ran(real_client: FlaskClient, real_redis: Redis) -> None:
    from rqscope.tasks.worker import InstrumentedWorker

    ok = post(real_client, {"task": "t_ok", "args": [21]}).get_json()["id"]
    bad = post(real_client, {"task": "t_fail", "args": [3]}).get_json()["id"]
    InstrumentedWorker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    done = real_client.get(f"/api/tasks/{ok}").get_json()
    assert done["status"] == "finished" and done["result"] == 42 and done["ended_at"]
    failed = real_client.get(f"/api/tasks/{bad}").get_json()
    assert failed["status"] == "failed" and failed["error"] == {"type": "KeyError", "message": "'missing 3'"}


def test_cancel_a_queued_job(client: FlaskClient, redis: Redis) -> None:
    job_id = post(client, {"task": "t_ok"}).get_json()["id"]
    response = client.delete(f"/api/tasks/{job_id}")
    assert response.status_code == 200 and response.get_json()["status"] == "canceled"
    assert Queue("default", connection=redis).job_ids == []
    assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.CANCELED
    again = client.delete(f"/api/tasks/{job_id}")
    assert again.status_code == 409 and "canceled" in again.get_json()["error"]


@pytest.mark.redis
def test_cancel_a_running_job_stops_it(real_client: FlaskClient, real_redis: Redis, real_settings: Settings) -> None:
    from tests.helpers import rqscope_command, running, wait_for

    job_id = post(real_client, {"task": "t_sleep", "args": [30]}).get_json()["id"]
    env = {"RQSCOPE_REDIS_URL": real_settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with running(rqscope_command("worker", "default", "--burst", "--log-level", "WARNING"), env) as worker:
        job = Job.fetch(job_id, connection=real_redis)
        wait_for(lambda: job.get_status() == JobStatus.STARTED)
        time.sleep(0.3)  # the worker subscribes to its command channel just before forking
        response = real_client.delete(f"/api/tasks/{job_id}")
        assert response.status_code == 202 and response.get_json()["status"] == "stopping"
        assert worker.wait(30) == 0
    assert job.get_status() in (JobStatus.STOPPED, JobStatus.FAILED)


def test_cancel_unknown_job_is_404(client: FlaskClient) -> None:
    assert client.delete("/api/tasks/nope").status_code == 404


def test_get_never_enqueues(client: FlaskClient, redis: Redis) -> None:
    assert client.get("/api/tasks?task=t_ok").status_code == 405
    assert redis.keys("rq:*") == []


class TestAuth:
    @pytest.fixture
    def token_client(self, settings: Settings, redis: Redis) -> FlaskClient:
        return create_app(settings.replace(api_token=TOKEN), redis=redis, testing=True).test_client()

    def test_token_is_required_to_enqueue_and_cancel(self, token_client: FlaskClient, redis: Redis) -> None:
        assert post(token_client, {"task": "t_ok"}).status_code == 401
        bad = post(token_client, {"task": "t_ok"}, headers={"Authorization": "Bearer wrong-token-000000000"})
        assert bad.status_code == 401 and bad.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert redis.keys("rq:*") == []
        good = post(token_client, {"task": "t_ok"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 202
        job_id = good.get_json()["id"]
        assert token_client.delete(f"/api/tasks/{job_id}").status_code == 401
        ok = token_client.delete(f"/api/tasks/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200

    def test_without_token_a_non_loopback_caller_is_refused(self, settings: Settings, redis: Redis) -> None:
        # the caller's address decides, not the bound one (tests/test_auth_caller.py has the rest)
        client = create_app(settings.replace(host="0.0.0.0"), redis=redis, testing=True).test_client()
        client.environ_base["REMOTE_ADDR"] = "10.0.0.7"
        response = post(client, {"task": "t_ok"})
        assert response.status_code == 401 and "RQSCOPE_API_TOKEN" in response.get_json()["error"]
        assert redis.keys("rq:*") == []


def test_healthz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_with_redis_up(client: FlaskClient) -> None:
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_within_the_timeout_when_redis_is_stopped(settings: Settings) -> None:
    from rqscope.monitor.embedded import free_port

    down = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout=0.5)
    client = create_app(down, testing=True).test_client()
    started = time.monotonic()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert time.monotonic() - started < 2.0
    assert json.loads(response.data)["status"] == "unavailable"
    enqueue = post(client, {"task": "t_ok"})
    assert enqueue.status_code == 503 and "Redis is unavailable" in enqueue.get_json()["error"]


def test_readyz_never_shows_the_redis_password(settings: Settings) -> None:
    from rqscope.monitor.embedded import free_port

    down = settings.replace(redis_url=f"redis://user:hunter2@127.0.0.1:{free_port()}/0")
    client = create_app(down, testing=True).test_client()
    assert b"hunter2" not in client.get("/readyz").data
