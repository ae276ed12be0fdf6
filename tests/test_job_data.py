"""Job data is shown, never run: hostile pickles in args, results and meta, and unreadable job hashes."""

from __future__ import annotations

import base64
import json
import os
import pickle
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rqscope.tasks.registry import enqueue

from tests.test_browser import PASSWORD, sidecar  # noqa: F401 - a served sidecar
from tests.test_retry import make_failed

pytestmark = pytest.mark.redis
HTML = {"Accept": "text/html"}


class Boom:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def routes(job_id: str) -> list[tuple[str, dict[str, str]]]:
    return [(f"/jobs/{job_id}", HTML), (f"/api/jobs/{job_id}", {}), (f"/api/tasks/{job_id}", {})]


def hostile_job(redis: Redis, marker: Path) -> str:
    """A failed job whose args, kwargs, meta, legacy result field and result stream all hold a hostile pickle."""
    job = enqueue("t_ok", Boom(marker), connection=redis)
    evil = pickle.dumps(Boom(marker))
    job.meta = {"who": Boom(marker)}
    job.save_meta()
    redis.hset(job.key, "result", evil)
    redis.xadd(f"rq:results:{job.id}", {"type": 1, "return_value": base64.b64encode(evil), "worker_name": ""})
    return job.id


def test_hostile_pickles_are_shown_by_name_and_never_run(
    real_client: FlaskClient, real_redis: Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    job_id = hostile_job(real_redis, marker)
    for path, headers in routes(job_id):
        response = real_client.get(path, headers=headers)
        assert response.status_code == 200, path
        assert not marker.exists(), path
    body = real_client.get(f"/api/jobs/{job_id}").get_json()
    assert body["args"] == ["<posix.system object>"] and body["func"] == "tests.sample_tasks.t_ok"
    assert body["meta"] == {"who": "<posix.system object>"} and body["result"] == "<posix.system object>"
    assert real_client.get(f"/api/tasks/{job_id}").get_json()["result"] == "<posix.system object>"
    page = real_client.get(f"/jobs/{job_id}", headers=HTML).get_data(as_text=True)
    assert "&lt;posix.system object&gt;" in page
    assert not marker.exists()


def test_the_legacy_result_field_goes_through_the_same_decoder(
    real_client: FlaskClient, real_redis: Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    job = enqueue("t_ok", 1, connection=real_redis)
    real_redis.hset(job.key, mapping={"result": pickle.dumps(Boom(marker)), "status": "finished"})
    for path, headers in routes(job.id):
        assert real_client.get(path, headers=headers).status_code == 200, path
    assert real_client.get(f"/api/jobs/{job.id}").get_json()["result"] == "<posix.system object>"
    assert not marker.exists()


def test_plain_values_are_shown_as_they_are(real_client: FlaskClient, real_redis: Redis) -> None:
    import datetime
    import decimal
    import uuid

    when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    token = uuid.UUID("12345678-1234-5678-1234-567812345678")
    value = {"at": when, "price": decimal.Decimal("9.99"), "id": token, "tags": {"a"}}
    job = enqueue("t_ok", value, connection=real_redis)
    body = real_client.get(f"/api/jobs/{job.id}").get_json()
    assert body["args"] == [{"at": "2024-05-01T12:00:00+00:00", "price": "9.99", "id": str(token), "tags": ["a"]}]


@pytest.mark.parametrize(
    "data",
    [b"not a pickle at all", zlib.compress(b"\x80\x05garbage"), zlib.compress(pickle.dumps("a plain string")), b""],
)
def test_unreadable_job_data_is_marked_not_a_500(real_client: FlaskClient, real_redis: Redis, data: bytes) -> None:
    [job_id] = make_failed(real_redis, 1)
    real_redis.hset(f"rq:job:{job_id}", mapping={"data": data, "meta": b"\x80\x05junk", "result": b"\x80junk"})
    for path, headers in routes(job_id):
        response = real_client.get(path, headers=headers)
        assert response.status_code == 200, path
    body = real_client.get(f"/api/jobs/{job_id}").get_json()
    assert body["args"] is None and body["kwargs"] is None and body["func"] is None
    assert set(body["unreadable"]) >= {"func", "args", "kwargs", "meta"} and body["status"] == "failed"
    assert body["error"]["type"] == "RuntimeError"  # what could be read still is
    page = real_client.get(f"/jobs/{job_id}", headers=HTML).get_data(as_text=True)
    assert "unreadable" in page


def test_unreadable_results_are_marked(real_client: FlaskClient, real_redis: Redis) -> None:
    job = enqueue("t_ok", 1, connection=real_redis)
    real_redis.xadd(f"rq:results:{job.id}", {"type": 1, "return_value": b"!!not base64!!"})
    for path, headers in routes(job.id):
        assert real_client.get(path, headers=headers).status_code == 200, path
    body = real_client.get(f"/api/jobs/{job.id}").get_json()
    assert body["result"] is None and "result" in body["unreadable"]


@pytest.mark.slow
def test_no_action_on_a_hostile_job_runs_its_data_on_a_served_sidecar(
    sidecar: str,  # noqa: F811 - a real `rqscope serve` (gunicorn) with an operator user
    real_redis: Redis,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    operator = {"Authorization": "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()}

    def request(method: str, url: str, body: object = None, headers: dict[str, str] = operator) -> tuple[int]:
        data = json.dumps(body).encode() if body is not None else None
        call = urllib.request.Request(url, data, {**headers, "Content-Type": "application/json"}, method=method)
        try:
            with urllib.request.urlopen(call, timeout=10) as response:
                return (response.status,)
        except urllib.error.HTTPError as error:
            return (error.code,)

    running = hostile_job(real_redis, marker)
    real_redis.hset(f"rq:job:{running}", mapping={"status": "started", "worker_name": "w-1"})
    stopped = request("DELETE", f"{sidecar}/api/tasks/{running}")  # stop: RQ reads the job again
    assert stopped[0] == 202 and not marker.exists()
    again = request("POST", f"{sidecar}/api/tasks", {"task": "t_ok", "args": [1], "job_id": running})
    assert again[0] == 200 and not marker.exists()  # an existing job_id: the job is read, not enqueued
    failed = hostile_job(real_redis, marker)
    real_redis.hset(f"rq:job:{failed}", "status", "failed")
    real_redis.zadd("rq:failed:default", {failed: 1e10})
    assert request("POST", f"{sidecar}/api/jobs/{failed}/retry")[0] == 200
    assert request("DELETE", f"{sidecar}/api/jobs/{failed}")[0] == 200
    assert not marker.exists()


@pytest.mark.parametrize("timeout", [b"[1,", b"{}", b"nan", b"\xff\xfe", b"\x00"])
def test_a_field_rq_cannot_parse_is_no_500(real_client: FlaskClient, real_redis: Redis, timeout: bytes) -> None:
    job = enqueue("t_ok", 1, connection=real_redis)
    real_redis.hset(job.key, "timeout", timeout)
    shown = real_client.get(f"/api/tasks/{job.id}")
    assert shown.status_code == 200 and shown.get_json()["id"] == job.id
    assert real_client.get(f"/api/jobs/{job.id}").status_code == 200
    canceled = real_client.delete(f"/api/tasks/{job.id}")
    assert canceled.status_code == 422 and "cannot be read by RQ" in canceled.get_json()["error"]
