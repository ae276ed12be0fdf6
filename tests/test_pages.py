"""Server-rendered pages: security headers, roles, bad input, and Redis outages."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rqscope.monitor.embedded import free_port
from rqscope.monitor.settings import Settings, User
from rqscope.tasks.registry import enqueue
from rqscope.web import create_app
from werkzeug.security import generate_password_hash

from tests.test_retry import make_failed

HTML = {"Accept": "text/html"}
PAGES = ["/", "/workers", "/tasks", "/audit", "/alerts", "/queues/default/queued", "/queues/default/failed",
         "/queues/default/failed/confirm?action=retry", "/login"]  # fmt: skip


def test_every_page_renders_with_a_strict_csp(client: FlaskClient, redis: Redis) -> None:
    enqueue("t_ok", "<b>bold</b>", connection=redis)
    for path in PAGES:
        response = client.get(path, headers=HTML)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert b"<b>bold</b>" not in response.data


@pytest.mark.parametrize(
    "path",
    ["/queues/default/failed?page=0", "/queues/default/failed?per_page=100000", "/queues/default/failed?order=x",
     "/queues/default/failed?func=%01", "/tasks?sort=bogus", "/queues/default/failed/confirm?action=explode",
     "/queues/default/started/confirm?action=empty", "/jobs?id="],
)  # fmt: skip
def test_bad_page_parameters_are_400_pages(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers=HTML)
    assert response.status_code == 400 and b"<h1>400</h1>" in response.data


def test_unknown_registry_and_job_are_404(client: FlaskClient) -> None:
    assert client.get("/queues/default/bogus", headers=HTML).status_code == 404
    assert client.get("/jobs/<script>", headers=HTML).status_code == 404


def test_open_redirects_are_refused(client: FlaskClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        page = client.get(f"/login?next={target}").get_data(as_text=True)
        assert 'value="/"' in page


@pytest.mark.redis
def test_dashboard_forms_need_the_csrf_token(real_client: FlaskClient, real_redis: Redis) -> None:
    [job_id] = make_failed(real_redis, 1)
    real_client.get(f"/jobs/{job_id}", headers=HTML)  # renders the forms: the session holds a token now
    assert real_client.post(f"/jobs/{job_id}/retry", data={}).status_code == 403
    assert real_client.post(f"/jobs/{job_id}/retry", data={"csrf_token": "forged"}).status_code == 403
    with real_client.session_transaction() as session:
        token = session["csrf_token"]
    assert real_client.post(f"/jobs/{job_id}/retry", data={"csrf_token": token}).status_code == 302
    assert real_redis.lrange("rq:queue:default", 0, -1) == [job_id.encode()]


def test_pages_need_a_login_when_users_are_configured(settings: Settings, redis: Redis) -> None:
    user = User("ops", "operator", generate_password_hash("secret-password"))
    client = create_app(settings.replace(users=(user,), host="0.0.0.0"), redis=redis, testing=True).test_client()
    response = client.get("/queues/default/failed?exc=X", headers=HTML)
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    assert client.get("/api/queues").status_code == 401
    assert client.get("/api/queues", headers={"Authorization": "Basic b3BzOnNlY3JldC1wYXNzd29yZA=="}).status_code == 200
    for header in ("Basic !!!not-base64", "Basic b3BzOndyb25n", "Bearer wrong-token-0000000000"):
        assert client.get("/api/queues", headers={"Authorization": header}).status_code == 401, header


def test_outage_shows_a_banner_on_every_page_not_a_500(settings: Settings) -> None:
    down = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout=0.5)
    client = create_app(down, testing=True).test_client()
    for path in PAGES:
        started = time.monotonic()
        response = client.get(path, headers=HTML)
        assert time.monotonic() - started < 3
        assert response.status_code in (200, 503), path
        assert b"Redis is unreachable" in response.data, path


def test_forgetting_a_dead_worker_fails_the_job_it_held(real_client: FlaskClient, real_redis: Redis) -> None:
    from rq.job import Job
    from rqscope.tasks.metrics import METRICS_KEY, parse_metrics

    held, finished = enqueue("t_ok", 1, connection=real_redis), enqueue("t_ok", 2, connection=real_redis)
    real_redis.delete("rq:queue:default")
    held.set_status("started")
    real_redis.zadd("rq:wip:default", {f"{held.id}:exec-1": time.time() + 600})
    for name, job_id in (("gone", held.id), ("also-gone", finished.id)):  # the second job ended elsewhere
        real_redis.sadd("rq:workers", f"rq:worker:{name}")
        real_redis.hset(f"rq:worker:{name}", mapping={"state": "busy", "queues": "default", "current_job": job_id,
                                                      "last_heartbeat": "2020-01-01T00:00:00.000000Z"})  # fmt: skip
    real_client.get("/workers", headers=HTML)
    with real_client.session_transaction() as session:
        token = session["csrf_token"]
    for name in ("gone", "also-gone"):
        assert real_client.post(f"/workers/{name}/forget", data={"csrf_token": token}).status_code == 302
    assert real_redis.zrange("rq:failed:default", 0, -1) == [held.id.encode()]
    assert real_redis.zcard("rq:wip:default") == 0 and real_redis.smembers("rq:workers") == set()
    assert Job.fetch(held.id, real_redis).get_status() == "failed"
    assert Job.fetch(finished.id, real_redis).get_status() == "queued"  # not held in a started registry: untouched
    assert parse_metrics(real_redis.hgetall(METRICS_KEY))[("t_ok", "default")].outcomes["killed"] == 1


def test_forgetting_an_unknown_live_or_unreachable_worker_is_refused(
    real_client: FlaskClient, real_redis: Redis, settings: Settings
) -> None:
    real_redis.sadd("rq:workers", "rq:worker:alive")
    beat = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    real_redis.hset("rq:worker:alive", mapping={"state": "idle", "queues": "default", "last_heartbeat": beat})
    with real_client.session_transaction() as session:
        session["csrf_token"] = "a-session-token"
    token = {"csrf_token": "a-session-token"}
    assert real_client.post("/workers/nobody/forget", data=token).status_code == 404
    assert real_client.post("/workers/" + "x" * 5000 + "/forget", data=token).status_code == 404
    assert real_client.post("/workers/alive/forget", data=token).status_code == 409
    assert real_redis.sismember("rq:workers", "rq:worker:alive")
    down = create_app(settings.replace(redis_timeout=0.5, redis_connect_timeout=0.5), testing=True).test_client()
    with down.session_transaction() as session:
        session["csrf_token"] = "a-session-token"
    token = {"csrf_token": "a-session-token"}
    response = down.post("/workers/any/forget", data=token, headers=HTML)
    assert response.status_code == 503 and "Redis is unavailable" in response.get_data(as_text=True)
