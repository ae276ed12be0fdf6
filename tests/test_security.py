"""The checks SECURITY.md lists that are not covered next to the feature they guard: every mutating
route against every kind of caller that must be refused, hostile job hashes on every page and in the
scrape, the enqueue API against names that are not registered tasks, and Redis passwords."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.settings import Settings, from_env
from rqscope.tasks.registry import REGISTRY, enqueue
from rqscope.web import create_app
from werkzeug.security import generate_password_hash

from bench.stack import request
from tests.test_retry import make_failed

OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789ab"
PASSWORD = "correct horse battery"
VALUES = {"queue": "default", "state_name": "failed", "registry": "failed", "name": "w1", "silence_id": "s1",
          "action": "retry"}  # fmt: skip


def mutating_routes(app: Flask, job_id: str) -> list[tuple[str, str]]:
    """Every (method, path) that can change something, with its arguments filled in."""
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"GET", "HEAD", "OPTIONS"}):
            if rule.endpoint in ("session_views.login", "session_views.logout"):
                continue  # signing in and out change only the caller's own session
            path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: VALUES.get(m.group(1), job_id), rule.rule)
            routes.append((method, path))
    return routes


@pytest.fixture
def secured(real_settings: Settings, real_redis: Redis) -> Flask:
    users = (f"ops:operator:{generate_password_hash(PASSWORD)},"
             f"watcher:viewer:{generate_password_hash(PASSWORD)}")  # fmt: skip
    settings = from_env({"RQSCOPE_REDIS_URL": real_settings.redis_url or "", "RQSCOPE_API_TOKEN": OPERATOR,
                         "RQSCOPE_VIEWER_TOKEN": VIEWER, "RQSCOPE_USERS": users, "RQSCOPE_HOST": "0.0.0.0",
                         "RQSCOPE_TASK_MODULES": "tests.sample_tasks"})  # fmt: skip
    return create_app(settings, testing=True)


def signed_in(app: Flask, user: str = "ops") -> FlaskClient:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    form = {"username": user, "password": PASSWORD, **({"csrf_token": token.group(1)} if token else {})}
    assert client.post("/login", data=form).status_code in (302, 303)
    return client


def test_every_mutating_route_refuses_every_caller_that_may_not_act(secured: Flask, real_redis: Redis) -> None:
    ids = make_failed(real_redis, 3)
    enqueue("t_ok", 1, connection=real_redis)
    real_redis.sadd("rq:workers", "rq:worker:w1")
    routes = mutating_routes(secured, ids[0])
    assert len(routes) >= 12, routes
    anonymous, browser = secured.test_client(), signed_in(secured)
    digest = real_redis.execute_command("DEBUG", "DIGEST")  # signing in stored a session record
    callers = {
        "anonymous": (anonymous, {}, {401, 403}),
        "viewer": (anonymous, {"Authorization": f"Bearer {VIEWER}"}, {403}),
        "cross-site operator": (anonymous, {"Authorization": f"Bearer {OPERATOR}", "Sec-Fetch-Site": "cross-site"},
                                {403}),
        "operator session without CSRF token": (browser, {}, {403}),
        "operator session with a forged CSRF token": (browser, {"X-CSRF-Token": "forged"}, {403}),
    }  # fmt: skip
    allowed = []
    for who, (client, headers, refusals) in callers.items():
        for method, path in routes:
            response = client.open(path, method=method, headers=headers, json={})
            to_login = response.status_code == 302 and "/login" in (response.location or "")
            if response.status_code not in refusals and not (who == "anonymous" and to_login):
                allowed.append((who, method, path, response.status_code))
    assert allowed == [], "\n".join(map(str, allowed))
    assert real_redis.execute_command("DEBUG", "DIGEST") == digest


HOSTILE_JOBS = {
    "long": {"description": "x" * 1_000_000, "exc_info": "E" * 500_000},
    "binary": {"data": b"\x80\x04\xff\xfe garbage pickle", "func_name": b"\xff\xfe\x00bad", "origin": "default",
               "description": b"\xc3\x28\xa0\xa1", "meta": b"\x00\x01"},
    "html": {"description": "<script>alert(1)</script>{{7*7}}", "func_name": "<img src=x onerror=alert(1)>"},
    "empty": {},
}  # fmt: skip


def plant_hostile_jobs(redis: Redis) -> list[str]:
    for job_id, fields in HOSTILE_JOBS.items():
        if fields:
            redis.hset(f"rq:job:{job_id}", mapping={"status": "failed", "origin": "default", **fields})
        redis.zadd("rq:failed:default", {job_id: 1e10})
    redis.rpush("rq:queue:default", *HOSTILE_JOBS)
    redis.sadd("rq:queues", "rq:queue:default", "rq:queue:\xff\xfe", "rq:queue:" + "q" * 10_000)
    redis.sadd("rq:workers", "rq:worker:\xffodd")
    redis.hset("rq:worker:\xffodd", mapping={"queues": "\x00,\xff" * 1000, "state": "<b>busy</b>",
                                              "hostname": "h" * 100_000, "last_heartbeat": "garbage"})  # fmt: skip
    redis.hset("rqscope:metrics", mapping={"garbage": "NaN", "runs|\xff|q|success": "1"})
    return list(HOSTILE_JOBS)


def test_over_long_and_binary_fields_break_no_page_and_no_scrape(real_client: FlaskClient, real_redis: Redis) -> None:
    ids = plant_hostile_jobs(real_redis)
    paths = ["/", "/workers", "/tasks", "/alerts", "/queues/default/failed", "/queues/default/queued",
             "/queues/default/failed?q=x", "/api/queues", "/api/workers", "/api/queues/default/jobs?state=failed",
             "/api/queues/default/jobs?state=queued"]  # fmt: skip
    paths += [f"/jobs/{job_id}" for job_id in ids] + [f"/api/jobs/{job_id}" for job_id in ids]
    for path in paths:
        response = real_client.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        if response.mimetype == "text/html":
            assert "<script>alert(1)" not in response.get_data(as_text=True), path
    scrape = real_client.get("/metrics")
    assert scrape.status_code == 200
    families = {f.name for f in text_string_to_metric_families(scrape.get_data(as_text=True))}
    assert "rqscope_queue_jobs" in families and "rqscope_redis_up" in families


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=80), st.sampled_from([
    "os.system", "subprocess.run", "builtins.eval", "__import__", "tests.sample_tasks.t_ok", "t_ok.__globals__",
    "rqscope.web.cli.main", "importlib.import_module", "pickle.loads", "../t_ok", "t_ok\x00", "T_OK", " t_ok",
])))  # fmt: skip
def test_enqueue_never_imports_or_runs_an_unregistered_name(client: FlaskClient, redis: Redis, name: str) -> None:
    modules = set(sys.modules)
    response = client.post("/api/tasks", json={"task": name, "args": [], "kwargs": {}})
    if name not in REGISTRY.names():
        assert response.status_code == 400 and redis.keys("rq:*") == []
    assert set(sys.modules) == modules


SECRET = "s3cr3t-Pa55word-never-shown"


def test_redis_password_appears_in_no_page_log_or_metric(tmp_path: Path) -> None:
    from rqscope.monitor.embedded import EmbeddedRedis, free_port

    from tests.conftest import redis_binary
    from tests.helpers import http_status, rqscope_command, spawn, stop, wait_for

    server = EmbeddedRedis(binary=redis_binary(), extra_args=("--requirepass", SECRET)).start()
    url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    port = free_port()
    env = {"RQSCOPE_REDIS_URL": url, "RQSCOPE_LOG_LEVEL": "DEBUG", "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
           "RQSCOPE_PUBLISH_INTERVAL": "1", "RQSCOPE_SNAPSHOT_TTL": "0.1"}  # fmt: skip
    log = (tmp_path / "out.log").open("wb")
    processes = [spawn(rqscope_command("serve", "--port", str(port)), env, stdout=log, stderr=log),
                 spawn(rqscope_command("worker", "default"), env, stdout=log, stderr=log)]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    bodies = []
    try:
        wait_for(lambda: http_status(base + "/healthz") == 200, timeout=30)
        redis = Redis.from_url(url)
        enqueue("t_fail", 1, connection=redis)
        wait_for(lambda: redis.zcard("rq:failed:default") == 1, timeout=30)
        pages = ["/", "/workers", "/tasks", "/alerts", "/audit", "/queues/default/failed", "/metrics", "/readyz",
                 "/api/queues", "/api/workers", "/api/alerts", "/api/queues/default/jobs?state=failed"]  # fmt: skip
        bodies += [fetch(base + page) for page in pages]
        server.halt()  # the outage: banners, error logs, rqscope_redis_up 0
        wait_for(lambda: 'rqscope_redis_up{redis="default"} 0' in fetch(base + "/metrics"), timeout=20)
        bodies += [fetch(base + page) for page in pages]
        wait_for(lambda: "Connection refused" in (tmp_path / "out.log").read_text(errors="replace"), timeout=20)
    finally:
        for process in processes:
            stop(process)
        log.close()
        server.stop()
    logs = (tmp_path / "out.log").read_text(errors="replace")
    assert "DEBUG" in logs and 'rqscope_redis_up{redis="default"} 0' in "".join(bodies)
    assert SECRET not in logs and all(SECRET not in body for body in bodies)


def fetch(url: str) -> str:
    """The body of a GET, whatever its status."""
    return request("GET", url, token="")[1].decode(errors="replace")
