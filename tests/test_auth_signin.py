"""Signing in and out on `rqscope serve`: redirect targets, server-side revocation, failed sign-in limits
kept in Redis, Basic credentials that cost no hash without users, the secret-key warning, and a Redis
outage that answers 503 with a message."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis

from tests.conftest import redis_binary
from tests.test_auth_caller import PASSWORD, TOKEN, USERS, Sidecar, csrf_of, sidecar, sign_in

pytestmark = pytest.mark.redis

LIMIT = 10  # failed sign-ins a minute, per client address and per user name
# a fixed key: each test flushes Redis, which would drop a key kept there between two workers' reads
SECRET_KEY = "a-fixed-session-signing-key-for-these-tests-0123456789"


@pytest.fixture(scope="module")
def secured(redis_server: EmbeddedRedis) -> Iterator[Sidecar]:
    """Two gunicorn workers (so that any state must live in Redis), behind one trusted proxy."""
    env = {
        "RQSCOPE_USERS": USERS,
        "RQSCOPE_API_TOKEN": TOKEN,
        "RQSCOPE_TRUSTED_PROXIES": "1",
        "RQSCOPE_SECRET_KEY": SECRET_KEY,
    }
    with sidecar(redis_server.url, env, workers=2) as served:
        yield served


def browser_view(location: str) -> str:
    """What a browser makes of a Location: tabs and newlines dropped, backslashes read as slashes."""
    return "".join(ch for ch in location if ch not in "\t\n\r").replace("\\", "/").lstrip("\x00 ")


HOSTILE_NEXT = [
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "http:evil.example",
    "java\tscript:alert(1)",
    " //evil.example",
    "\x00//evil.example",
    "/\x0b/evil.example",
    "///evil.example",
    "/%09/evil.example",
    "\t//evil.example",
    "/\u3000/evil.example",
]


@pytest.mark.parametrize("target", HOSTILE_NEXT, ids=repr)
def test_sign_in_never_redirects_off_site(secured: Sidecar, real_redis: Redis, target: str) -> None:
    form_page = secured.get("/login", params={"next": target})
    assert form_page.status_code == 200
    _, response = sign_in(secured, next_path=target, username="ops", password=PASSWORD)
    assert response.status_code in (302, 303), response.text[:300]
    location = response.headers["Location"]
    for seen in (location, browser_view(location)):
        parts = urlsplit(seen)
        assert not parts.scheme and not parts.netloc and seen.startswith("/") and not seen.startswith("//"), seen


def test_a_same_site_target_survives_sign_in(secured: Sidecar, real_redis: Redis) -> None:
    target = "/queues/default/failed?exc=KeyError&page=2"
    page = secured.get(target, headers={"Accept": "text/html"})
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=")
    _, response = sign_in(secured, next_path=target, username="ops", password=PASSWORD)
    assert response.headers["Location"] == target


def test_sign_out_revokes_the_session_on_the_server(secured: Sidecar, real_redis: Redis) -> None:
    browser, response = sign_in(secured, username="ops", password=PASSWORD)
    assert response.status_code in (302, 303)
    records = real_redis.keys("rqscope:session:*")
    assert len(records) == 1 and 0 < real_redis.ttl(records[0]) <= 12 * 3600
    saved = requests.utils.dict_from_cookiejar(browser.cookies)
    assert requests.get(secured.url + "/api/queues", cookies=saved, timeout=10).status_code == 200
    overview = browser.get(secured.url + "/", timeout=10)
    signed_out = browser.post(
        secured.url + "/logout", data={"csrf_token": csrf_of(overview.text)}, allow_redirects=False, timeout=10
    )
    assert signed_out.status_code in (302, 303) and real_redis.keys("rqscope:session:*") == []
    # the cookie saved before signing out is worth nothing now, on every gunicorn worker
    for _ in range(6):
        assert requests.get(secured.url + "/api/queues", cookies=saved, timeout=10).status_code == 401
    page = requests.get(secured.url + "/", cookies=saved, allow_redirects=False, timeout=10)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")


def attempt(served: Sidecar, address: str, username: str, password: str) -> requests.Response:
    _, response = sign_in(served, {"X-Forwarded-For": address}, username=username, password=password)
    return response


def test_failed_form_sign_ins_are_limited_per_address(secured: Sidecar, real_redis: Redis) -> None:
    for n in range(LIMIT):
        assert attempt(secured, "198.51.100.1", f"guess-{n}", "wrong").status_code == 401
    limited = attempt(secured, "198.51.100.1", "ops", PASSWORD)  # even the right password, from there
    assert limited.status_code == 429 and "Too many failed sign-ins" in limited.text
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert attempt(secured, "198.51.100.2", "ops", PASSWORD).status_code in (302, 303)
    counters = real_redis.keys("rqscope:signin-failures:*")
    assert counters and all(0 < real_redis.ttl(key) <= 60 for key in counters)


def test_failed_sign_ins_are_limited_per_user_name(secured: Sidecar, real_redis: Redis) -> None:
    for n in range(LIMIT):
        assert attempt(secured, f"203.0.113.{n}", "ops", "wrong").status_code == 401
    assert attempt(secured, "203.0.113.200", "ops", PASSWORD).status_code == 429
    assert attempt(secured, "203.0.113.200", "watcher", PASSWORD).status_code in (302, 303)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_failed_basic_credentials_are_limited_too(secured: Sidecar, real_redis: Redis) -> None:
    address = {"X-Forwarded-For": "192.0.2.77"}
    for _ in range(LIMIT):
        assert secured.get("/api/queues", headers={**address, **basic("ops", "wrong")}).status_code == 401
    limited = secured.get("/api/queues", headers={**address, **basic("ops", PASSWORD)})
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    assert secured.get("/api/queues", headers={**address, **basic("watcher", PASSWORD)}).status_code == 429
    assert secured.get("/api/queues", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.fixture(scope="module")
def token_only(redis_server: EmbeddedRedis) -> Iterator[Sidecar]:
    """Only an API token, bound to every address and without RQSCOPE_SECRET_KEY."""
    with sidecar(redis_server.url, {"RQSCOPE_API_TOKEN": TOKEN}, host="0.0.0.0") as served:
        yield served


def test_basic_credentials_cost_no_hash_without_users(token_only: Sidecar, real_redis: Redis) -> None:
    headers = basic("ops", "x" * 100)
    token_only.get("/api/queues", headers=headers)  # warm the connection path
    started = time.perf_counter()
    statuses = [token_only.get("/api/queues", headers=headers).status_code for _ in range(20)]
    elapsed = time.perf_counter() - started
    assert statuses == [401] * 20
    assert elapsed < 1.0, f"20 Basic attempts took {elapsed:.2f} s"  # one scrypt check costs about 0.1 s
    assert real_redis.keys("rqscope:signin-failures:*") == []


def test_binding_beyond_loopback_without_a_secret_key_warns(token_only: Sidecar, secured: Sidecar) -> None:
    warning = token_only.output()
    assert "RQSCOPE_SECRET_KEY" in warning and "WARNING" in warning
    assert "RQSCOPE_SECRET_KEY" not in secured.output()  # loopback: no warning


def test_a_redis_outage_is_a_503_with_a_message_for_sessions_and_sign_in() -> None:
    server = EmbeddedRedis(binary=redis_binary()).start()
    try:
        env = {
            "RQSCOPE_USERS": USERS,
            "RQSCOPE_API_TOKEN": TOKEN,
            "RQSCOPE_REDIS_TIMEOUT": "0.5",
            "RQSCOPE_REDIS_CONNECT_TIMEOUT": "0.5",
        }
        with sidecar(server.url, env) as served:
            browser, response = sign_in(served, username="ops", password=PASSWORD)
            assert response.status_code in (302, 303)
            form = browser.get(served.url + "/login", timeout=10)
            server.halt()
            started = time.monotonic()
            for path, accept in (("/api/queues", "application/json"), ("/", "text/html")):
                down = browser.get(served.url + path, headers={"Accept": accept}, allow_redirects=False, timeout=10)
                assert down.status_code == 503 and "Redis is unavailable" in down.text, (path, down.status_code)
            sign_in_form = {"csrf_token": csrf_of(form.text), "username": "ops", "password": PASSWORD}
            again = browser.post(served.url + "/login", data=sign_in_form, allow_redirects=False, timeout=10)
            assert again.status_code == 503 and "Redis is unavailable" in again.text
            assert served.get("/api/queues", headers=basic("ops", PASSWORD)).status_code == 503
            assert time.monotonic() - started < 10
            # a bearer token needs no Redis to be checked: a route that reads no Redis still answers
            assert served.get("/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
            assert served.get("/api/openapi.json", headers=basic("ops", PASSWORD)).status_code == 503
    finally:
        server.stop()


@pytest.mark.parametrize("method", ["pbkdf2:sha256:600000", "scrypt:32768:8:1"])
def test_an_unknown_user_costs_the_same_hash_as_a_known_one(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rqscope.monitor.settings import from_env
    from rqscope.web import auth
    from werkzeug.security import generate_password_hash

    settings = from_env({"RQSCOPE_USERS": f"ops:operator:{generate_password_hash('pw', method=method)}"})
    checked: list[str] = []
    real_check = auth.check_password_hash
    monkeypatch.setattr(auth, "check_password_hash", lambda h, p: checked.append(h) or real_check(h, p))
    assert auth.check_user(settings, "nobody", "pw") is None
    assert auth.check_user(settings, "ops", "wrong") is None
    assert [h.split("$", 1)[0] for h in checked] == [method, method]  # a decoy of the users' own method
