"""The README's compose path signs in with the API token, and every mutating route writes an audit
entry: both on `rqscope serve` with a real Redis."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import yaml
from flask import Flask
from redis import Redis
from rq.job import Job, JobStatus
from rqscope.monitor.alerts import silences
from rqscope.monitor.audit import recent
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.monitor.settings import from_env
from rqscope.tasks.registry import REGISTRY, enqueue, enqueue_task
from rqscope.web import create_app

from tests.helpers import REPO
from tests.test_auth_caller import TOKEN, VIEWER, Sidecar, csrf_of, sidecar, sign_in
from tests.test_retry import make_failed

pytestmark = pytest.mark.redis


def compose_environment(redis_url: str, port: int) -> tuple[dict[str, str], list[str], str]:
    """The web service's environment and command from docker-compose.yml, filled from the README's .env."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"cat > \.env <<'ENV'\n(.*?)\nENV\n", readme, re.S)
    assert block, "the README's compose section writes a .env file"
    dotenv = dict(line.split("=", 1) for line in block.group(1).splitlines() if "=" in line)
    web = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["web"]

    def fill(value: str) -> str:  # compose's ${NAME:?message} and ${NAME:-default}
        return re.sub(r"\$\{(\w+)(?::[?-]([^}]*))?\}", lambda m: dotenv.get(m.group(1), ""), str(value))

    env = {name: fill(value) for name, value in web["environment"].items()}
    env.update(RQSCOPE_REDIS_URL=redis_url, RQSCOPE_PORT=str(port), RQSCOPE_TASK_MODULES="tests.sample_tasks")
    return env, [str(part) for part in web["command"]], dotenv["RQSCOPE_API_TOKEN"]


def test_the_readme_compose_path_signs_in_with_the_api_token(redis_server: EmbeddedRedis, real_redis: Redis) -> None:
    from tests.helpers import http_status, rqscope_command, spawn, stop, wait_for

    port = free_port()
    env, command, token = compose_environment(redis_server.url, port)
    assert env["RQSCOPE_HOST"] == "0.0.0.0" and env["RQSCOPE_USERS"] == "" and len(token) >= 16
    process = spawn(rqscope_command(*command), env)
    base = f"http://localhost:{port}"  # the README's http://localhost:9190/
    try:
        wait_for(
            lambda: process.poll() is not None or http_status(f"http://127.0.0.1:{port}/healthz") == 200, timeout=30
        )
        assert process.poll() is None
        [job_id] = make_failed(real_redis, 1)
        first = requests.get(base + "/", allow_redirects=False, timeout=10)
        assert first.status_code == 302 and first.headers["Location"].startswith("/login")
        served = Sidecar(base, port, REPO / "README.md")
        _, wrong = sign_in(served, token="not-the-token-0123456789")
        assert wrong.status_code == 401 and "wrong token" in wrong.text.lower()
        browser, response = sign_in(served, token=token)
        assert response.status_code in (302, 303) and response.headers["Location"] == "/"
        overview = browser.get(base + "/", timeout=10)
        assert overview.status_code == 200 and "api-token (operator)" in overview.text
        detail = browser.get(f"{base}/jobs/{job_id}", timeout=10)
        retried = browser.post(
            f"{base}/jobs/{job_id}/retry", data={"csrf_token": csrf_of(detail.text)}, allow_redirects=False, timeout=10
        )
        assert retried.status_code == 302 and real_redis.lrange("rq:queue:default", 0, -1) == [job_id.encode()]
        assert [(e.who, e.action, e.target) for e in recent(real_redis, 1)] == [("api-token", "retry", job_id)]
    finally:
        stop(process)


@pytest.fixture(scope="module")
def operated(redis_server: EmbeddedRedis) -> Iterator[Sidecar]:
    with sidecar(redis_server.url, {"RQSCOPE_API_TOKEN": TOKEN, "RQSCOPE_VIEWER_TOKEN": VIEWER}) as served:
        yield served


def test_a_viewer_token_signs_in_to_read_but_not_act(operated: Sidecar, real_redis: Redis) -> None:
    [job_id] = make_failed(real_redis, 1)
    browser, response = sign_in(operated, token=VIEWER)
    assert response.status_code in (302, 303)
    detail = browser.get(f"{operated.url}/jobs/{job_id}", timeout=10)
    assert detail.status_code == 200 and "viewer-token (viewer)" in detail.text
    refused = browser.post(
        f"{operated.url}/jobs/{job_id}/retry",
        data={"csrf_token": csrf_of(detail.text)},
        allow_redirects=False,
        timeout=10,
    )
    assert refused.status_code == 403 and real_redis.zcard("rq:failed:default") == 1


Scenario = Callable[[Redis], tuple[str, dict[str, str], Any]]  # (path, form, json body) for one route


def started_job(redis: Redis) -> str:
    job = enqueue("t_ok", 1, connection=redis)
    redis.lrem("rq:queue:default", 0, job.id)
    redis.hset(job.key, mapping={"status": JobStatus.STARTED.value, "worker_name": "w-busy"})
    return job.id


def dead_worker(redis: Redis) -> str:
    redis.sadd("rq:workers", "rq:worker:w-dead")
    redis.hset(
        "rq:worker:w-dead",
        mapping={"state": "idle", "queues": "default", "last_heartbeat": "2020-01-01T00:00:00.000000Z"},
    )
    return "w-dead"


def silence(redis: Redis) -> str:
    return silences.create(redis, {"queue": "default"}, time.time(), time.time() + 3600, "ops", "").id


def failed(redis: Redis) -> str:
    return make_failed(redis, 1)[0]


def scheduled(redis: Redis) -> str:
    later = datetime.now(UTC) + timedelta(hours=1)
    return enqueue_task(REGISTRY.get("t_ok"), [1], {}, connection=redis, at=later)[0].id


def queued(redis: Redis) -> str:
    return enqueue("t_ok", 1, connection=redis).id


# every mutating (endpoint, method), with each way it can succeed; a new route fails the test until it has one
SCENARIOS: dict[tuple[str, str], list[Scenario]] = {
    ("api_tasks.create", "POST"): [lambda r: ("/api/tasks", {}, {"task": "t_ok", "args": [1]})],
    ("api_tasks.batch", "POST"): [lambda r: ("/api/tasks/batch", {}, {"tasks": [{"task": "t_ok", "args": [1]}]})],
    ("api_tasks.cancel", "DELETE"): [
        lambda r: (f"/api/tasks/{queued(r)}", {}, None),
        lambda r: (f"/api/tasks/{started_job(r)}", {}, None),
    ],
    ("api.retry_queue", "POST"): [lambda r: (failed(r) and "/api/queues/default/retry", {}, {})],
    ("api.empty_registry", "DELETE"): [lambda r: (failed(r) and "/api/queues/default/registries/failed", {}, None)],
    ("api.retry_job", "POST"): [lambda r: (f"/api/jobs/{failed(r)}/retry", {}, {})],
    ("api.enqueue_job_now", "POST"): [lambda r: (f"/api/jobs/{scheduled(r)}/enqueue", {}, {})],
    ("api.copy_job", "POST"): [lambda r: (f"/api/jobs/{failed(r)}/copy", {}, {})],
    ("api.delete_job", "DELETE"): [lambda r: (f"/api/jobs/{failed(r)}", {}, None)],
    ("api.create_silence", "POST"): [lambda r: ("/api/silences", {}, {"matchers": {"queue": "default"}})],
    ("api.expire_silence", "DELETE"): [lambda r: (f"/api/silences/{silence(r)}", {}, None)],
    ("controls.api_pause_queue", "POST"): [lambda r: (queued(r) and "/api/queues/default/pause", {}, {})],
    ("controls.api_resume_queue", "POST"): [lambda r: (queued(r) and "/api/queues/default/resume", {}, {})],
    ("controls.api_suspend_workers", "POST"): [
        lambda r: ("/api/workers/suspend", {}, {"ttl": 60}),
        lambda r: ("/api/workers/suspend", {}, {}),
    ],
    ("controls.api_resume_workers", "POST"): [lambda r: ("/api/workers/resume", {}, {})],
    ("controls.pause_queue", "POST"): [lambda r: (queued(r) and "/queues/default/pause", {}, None)],
    ("controls.resume_queue", "POST"): [lambda r: (queued(r) and "/queues/default/resume", {}, None)],
    ("controls.suspend_workers", "POST"): [
        lambda r: ("/workers/suspend", {"ttl": "1h"}, None),
        lambda r: ("/workers/suspend", {}, None),
    ],
    ("controls.resume_workers", "POST"): [lambda r: ("/workers/resume", {}, None)],
    ("controls.enqueue_submit", "POST"): [
        lambda r: ("/enqueue", {"task": "t_ok", "arg.x": "1"}, None),
        lambda r: ("/enqueue", {"task": "t_ok", "arg.x": "2", "queue": "q1", "in": "5m"}, None),
    ],
    ("dashboard.forget_worker", "POST"): [lambda r: (f"/workers/{dead_worker(r)}/forget", {}, None)],
    ("dashboard.create_silence", "POST"): [lambda r: ("/alerts/silences", {"matchers": "queue=default"}, None)],
    ("dashboard.expire_silence", "POST"): [lambda r: (f"/alerts/silences/{silence(r)}/expire", {}, None)],
    ("jobs.bulk", "POST"): [
        lambda r: (failed(r) and "/queues/default/failed/bulk", {"action": "retry"}, None),
        lambda r: (failed(r) and "/queues/default/failed/bulk", {"action": "empty"}, None),
        lambda r: ("/queues/default/queued/bulk", {"action": "cancel", "ids": queued(r)}, None),
    ],
    ("jobs.job_action", "POST"): [
        lambda r: (f"/jobs/{failed(r)}/retry", {}, None),
        lambda r: (f"/jobs/{failed(r)}/delete", {}, None),
        lambda r: (f"/jobs/{queued(r)}/cancel", {}, None),
        lambda r: (f"/jobs/{started_job(r)}/stop", {}, None),
        lambda r: (f"/jobs/{scheduled(r)}/enqueue", {}, None),
        lambda r: (f"/jobs/{failed(r)}/copy", {}, None),
    ],
}
OWN_SESSION = {"session_views.login", "session_views.logout"}  # they change only the caller's own session


def mutating_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"GET", "HEAD", "OPTIONS"}
        if rule.endpoint not in OWN_SESSION
    }


def test_every_mutating_route_writes_an_audit_entry(
    operated: Sidecar, redis_server: EmbeddedRedis, real_redis: Redis
) -> None:
    app = create_app(from_env({"RQSCOPE_REDIS_URL": redis_server.url, "RQSCOPE_API_TOKEN": TOKEN}))
    routes = mutating_routes(app)
    assert routes - SCENARIOS.keys() == set(), "give each new mutating route a scenario here"
    operator = {"Authorization": f"Bearer {TOKEN}"}
    silent = []
    for (endpoint, method), scenarios in sorted(SCENARIOS.items()):
        assert (endpoint, method) in routes, f"{endpoint} {method} is gone: drop its scenario"
        for scenario in scenarios:
            path, form, body = scenario(real_redis)
            before = real_redis.xlen("rqscope:audit")
            time.sleep(0.15)  # past the snapshot TTL, so that a worker planted just now is seen
            response = operated.open(method, path, headers=operator, data=form or None, json=body)
            assert response.status_code < 400, (endpoint, path, response.status_code, response.text[:300])
            entries = recent(real_redis, 1)
            if real_redis.xlen("rqscope:audit") != before + 1 or entries[0].who != "api-token":
                silent.append((endpoint, method, path))
    assert silent == [], silent
    actions = {entry.action for entry in recent(real_redis, 100)}
    assert {"enqueue", "cancel", "stop"} <= actions, actions


def test_an_enqueue_entry_names_the_task_and_the_job(operated: Sidecar, real_redis: Redis) -> None:
    response = operated.post("/api/tasks", headers={"Authorization": f"Bearer {TOKEN}"}, json={"task": "t_ok"})
    job_id = response.json()["id"]
    [entry] = recent(real_redis, 1)
    assert (entry.who, entry.action, entry.target, entry.count) == ("api-token", "enqueue", f"t_ok {job_id}", 1)
    again = operated.post(
        "/api/tasks", headers={"Authorization": f"Bearer {TOKEN}"}, json={"task": "t_ok", "job_id": job_id}
    )
    assert again.status_code == 200 and real_redis.xlen("rqscope:audit") == 1  # nothing new was enqueued
    assert Job.fetch(job_id, connection=real_redis).get_status() == JobStatus.QUEUED
