"""Deny by default: every route of the URL map needs a viewer unless it is declared open, an unusable
Authorization header is refused, and --no-auth with credentials does not start. On `rqscope serve`."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
from flask import Flask
from redis import Redis
from rq.job import Job
from rqscope.monitor.alerts import silences
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.settings import from_env
from rqscope.tasks.registry import enqueue
from rqscope.tasks.worker import InstrumentedWorker
from rqscope.web import create_app

from tests.helpers import rqscope_command, spawn
from tests.test_auth_caller import PASSWORD, TOKEN, USERS, VIEWER, Sidecar, sidecar, sign_in
from tests.test_retry import make_failed

pytestmark = pytest.mark.redis

METRICS_TOKEN = "metrics-token-0123456789abcdef"
SECURED_ENV = {
    "RQSCOPE_API_TOKEN": TOKEN,
    "RQSCOPE_VIEWER_TOKEN": VIEWER,
    "RQSCOPE_USERS": USERS,
    "RQSCOPE_METRICS_TOKEN": METRICS_TOKEN,
}
# the routes open to anyone (signing in and out still need the form's CSRF token); every other route
# must refuse an anonymous caller
OPEN = {
    "static",
    "health.healthz",
    "health.readyz",
    "session_views.login_form",
    "session_views.login",
    "session_views.logout",
}
ANSWERING = {"static", "health.healthz", "health.readyz", "session_views.login_form"}


@pytest.fixture(scope="module")
def secured(redis_server: EmbeddedRedis) -> Iterator[Sidecar]:
    with sidecar(redis_server.url, SECURED_ENV) as served:
        yield served


@pytest.fixture(scope="module")
def open_sidecar(redis_server: EmbeddedRedis) -> Iterator[Sidecar]:
    """No credentials, bound to 127.0.0.1."""
    with sidecar(redis_server.url) as served:
        yield served


@pytest.fixture(scope="module")
def url_map_app(redis_server: EmbeddedRedis) -> Flask:
    """The same app `rqscope serve` builds, for its URL map (the factory starts nothing)."""
    return create_app(from_env({"RQSCOPE_REDIS_URL": redis_server.url, **SECURED_ENV}))


def real_values(redis: Redis) -> dict[str, str]:
    """A real value for every path argument, so that a refusal is never a 404 in disguise."""
    [job_id] = make_failed(redis, 1)
    redis.sadd("rq:workers", "rq:worker:w1")
    redis.hset("rq:worker:w1", mapping={"state": "idle", "queues": "default", "last_heartbeat": "2020-01-01T00:00:00Z"})
    silence = silences.create(redis, {"queue": "default"}, time.time(), time.time() + 3600, "ops", "")
    return {
        "queue": "default",
        "state_name": "failed",
        "registry": "failed",
        "name": "w1",
        "silence_id": silence.id,
        "action": "retry",
        "filename": "rqscope.css",
        "job_id": job_id,
    }


def every_route(app: Flask, values: dict[str, str]) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) for every rule and method of the URL map, arguments filled in."""
    routes = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), values["job_id"]), rule.rule)
        routes.extend((rule.endpoint, method, path) for method in sorted(rule.methods or ()))
    return routes


def refused(response: requests.Response) -> bool:
    to_sign_in = response.status_code in (302, 303) and response.headers["Location"].startswith("/login")
    return response.status_code in (401, 403) or to_sign_in


def test_every_route_refuses_an_anonymous_caller_unless_declared_open(
    secured: Sidecar, url_map_app: Flask, real_redis: Redis
) -> None:
    values = real_values(real_redis)
    routes = every_route(url_map_app, values) + [("(no such route)", "GET", "/no/such/route")]
    assert len(routes) >= 40, routes
    digest = real_redis.execute_command("DEBUG", "DIGEST")
    answered = []
    for endpoint, method, path in routes:
        response = secured.open(method, path, json={})
        if not refused(response):
            answered.append((endpoint, method, path, response.status_code))
    answering = {endpoint for endpoint, *_ in answered}
    assert answering <= OPEN, "\n".join(map(str, answered))
    assert ANSWERING <= answering
    assert real_redis.execute_command("DEBUG", "DIGEST") == digest
    unknown = secured.get("/api/nothing-here")
    assert unknown.status_code == 401 and "credentials required" in unknown.json()["error"]


def test_the_task_api_shows_a_result_only_to_a_viewer(secured: Sidecar, real_redis: Redis) -> None:
    job = enqueue("t_ok", 21, connection=real_redis)
    InstrumentedWorker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    assert Job.fetch(job.id, connection=real_redis).return_value() == 42
    anonymous = secured.get(f"/api/tasks/{job.id}")
    assert anonymous.status_code == 401 and "42" not in anonymous.text
    viewer = secured.get(f"/api/tasks/{job.id}", headers={"Authorization": f"Bearer {VIEWER}"})
    assert viewer.status_code == 200 and viewer.json()["result"] == 42


def test_metrics_need_the_metrics_token_once_it_is_set(secured: Sidecar, open_sidecar: Sidecar) -> None:
    assert open_sidecar.get("/metrics").status_code == 200  # open by default
    assert secured.get("/metrics").status_code == 401
    assert secured.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    scrape = secured.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scrape.status_code == 200 and "rqscope_redis_up" in scrape.text
    assert secured.get("/metrics", headers={"Authorization": f"Bearer {VIEWER}"}).status_code == 200
    # the metrics token reads metrics and nothing else
    assert secured.get("/api/queues", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 401
    for path in ("/healthz", "/readyz", "/login", "/static/rqscope.css"):
        assert secured.get(path).status_code == 200, path


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


UNUSABLE = [
    "Token abc",
    "Bearer",
    "Bearer    ",
    "bearer",
    "Basic",
    "Basic !!!not-base64",
    basic(b"no-colon"),
    basic(b"ops:wrong password"),
    "Bearer wrong-token-0123456789",
    f"Bearer {TOKEN} extra",
    "Digest x=1",
    basic(b"\xff\xfe:\x00"),
]


@pytest.mark.parametrize("header", UNUSABLE)
def test_an_unusable_authorization_header_is_refused_never_ignored(
    open_sidecar: Sidecar, secured: Sidecar, real_redis: Redis, header: str
) -> None:
    # an open loopback sidecar would let this caller in without the header: the header still counts
    response = open_sidecar.get("/api/queues", headers={"Authorization": header})
    assert response.status_code == 401, response.text
    # a signed-in session does not rescue a bad header either
    browser, signed = sign_in(secured, username="ops", password=PASSWORD)
    assert signed.status_code in (302, 303)
    assert browser.get(secured.url + "/api/queues", timeout=10).status_code == 200
    with_header = browser.get(secured.url + "/api/queues", headers={"Authorization": header}, timeout=10)
    assert with_header.status_code == 401
    page = browser.get(
        secured.url + "/", headers={"Authorization": header, "Accept": "text/html"}, allow_redirects=False, timeout=10
    )
    assert page.status_code == 401


@pytest.mark.parametrize("credential", ["RQSCOPE_API_TOKEN", "RQSCOPE_VIEWER_TOKEN", "RQSCOPE_USERS"])
def test_no_auth_with_credentials_is_a_contradiction(credential: str) -> None:
    value = USERS if credential == "RQSCOPE_USERS" else TOKEN
    with pytest.raises(SettingsError) as raised:
        from_env({"RQSCOPE_NO_AUTH": "true", credential: value})
    message = str(raised.value)
    assert "RQSCOPE_NO_AUTH" in message and credential in message and "\n" not in message


def test_serve_with_no_auth_and_a_token_refuses_to_start(redis_server: EmbeddedRedis) -> None:
    env = {"RQSCOPE_REDIS_URL": redis_server.url, "RQSCOPE_API_TOKEN": TOKEN}
    process = spawn(
        rqscope_command("serve", "--no-auth", "--port", str(free_port())),
        env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert process.returncode == 2 and out == b""
    assert len(lines) == 1 and "RQSCOPE_NO_AUTH" in lines[0] and "RQSCOPE_API_TOKEN" in lines[0], lines
