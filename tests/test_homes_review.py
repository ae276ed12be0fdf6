"""Sessions on any instance under the front's prefix (State.homes), and the session-signing key they use."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator

import fakeredis
import pytest
from flask import Flask
from rqscope.monitor.settings import from_env
from rqscope.web import app as app_module
from rqscope.web.app import create_app
from rqscope.web.children import plan
from rqscope.web.hosts import exposure_warnings
from rqscope.web.session_key import SECRET_KEY, keep_making, make_shared_secret, read_shared_secret

from tests.test_auth_caller import PASSWORD, USERS

DOWN = "redis://127.0.0.1:1/0"  # refused at once: the first instance is away
SECRET = "s" * 40
ENVIRON = {
    "RQSCOPE_REDIS_URL": f"main={DOWN},east=redis://127.0.0.1:2/0",
    "RQSCOPE_PROCESS_PER_INSTANCE": "true",
    "RQSCOPE_USERS": USERS,
    "RQSCOPE_REDIS_CONNECT_TIMEOUT": "0.3",
    "RQSCOPE_REDIS_TIMEOUT": "0.3",
    "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
}


def _workers(monkeypatch: pytest.MonkeyPatch, **extra: str) -> Iterator[tuple[Flask, Flask, fakeredis.FakeRedis]]:
    """Two gunicorn workers of one front (process_per_instance), built while the first instance is down."""
    east = fakeredis.FakeRedis()
    real = app_module.make_client

    def make_client(settings, config=None, **kwargs):  # type: ignore[no-untyped-def]
        return east if config is not None and config.name == "east" else real(settings, config, **kwargs)

    monkeypatch.setattr(app_module, "make_client", make_client)
    environ = {**ENVIRON, **extra}
    settings = from_env(environ)
    children = plan(settings, environ)
    assert children is not None
    try:
        yield create_app(settings, children=children), create_app(settings, children=children), east
    finally:
        shutil.rmtree(children.directory, ignore_errors=True)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, Flask, fakeredis.FakeRedis]]:
    """RQSCOPE_SECRET_KEY set, as `serve` asks for when several instances are watched."""
    yield from _workers(monkeypatch, RQSCOPE_SECRET_KEY=SECRET)


@pytest.fixture
def keyless_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, Flask, fakeredis.FakeRedis]]:
    """RQSCOPE_SECRET_KEY unset, the default: the signing key is kept in Redis."""
    yield from _workers(monkeypatch)


def _sign_in(app: Flask) -> str:
    client = app.test_client()
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text[:300]
    done = client.post("/login", data={"csrf_token": token.group(1), "username": "ops", "password": PASSWORD})
    assert done.status_code in (302, 303), done.text[:300]
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_a_session_signed_in_during_the_first_instance_s_outage_holds_in_every_worker(
    workers: tuple[Flask, Flask, fakeredis.FakeRedis],
) -> None:
    first, second, east = workers
    cookie = _sign_in(first)
    assert east.keys("rqscope:session:*"), "the session lives on east"
    for app in (first, second):
        client = app.test_client()
        client.set_cookie("session", cookie)
        assert client.get("/api/instances").status_code == 200


def test_without_a_secret_key_no_other_instance_s_key_signs_and_serve_says_so(
    keyless_workers: tuple[Flask, Flask, fakeredis.FakeRedis],
) -> None:
    """The key lives on the first instance only: one planted on east (by anyone who can write there) signs
    nothing, and `serve` warns at start that sessions need RQSCOPE_SECRET_KEY to outlive the first's outage."""
    first, _, east = keyless_workers
    east.set(SECRET_KEY, "planted-by-a-writer-of-east")
    stopped = threading.Event()
    try:
        assert keep_making(first.extensions["rqscope"].first.redis, stopped) is not None  # main away: retried
    finally:
        stopped.set()
    _sign_in(first)  # signs with a process-local key meanwhile
    assert first.secret_key not in (b"planted-by-a-writer-of-east", "planted-by-a-writer-of-east")
    assert east.get(SECRET_KEY) == b"planted-by-a-writer-of-east"  # and nothing was copied there
    warned = exposure_warnings(from_env(ENVIRON))
    assert any("RQSCOPE_SECRET_KEY is not set: the key that signs session cookies" in w for w in warned)
    assert not any(
        "signs session cookies" in w for w in exposure_warnings(from_env({**ENVIRON, "RQSCOPE_SECRET_KEY": SECRET}))
    )


def test_a_stored_key_that_is_not_utf8_signs_and_an_empty_one_is_replaced() -> None:
    redis = fakeredis.FakeRedis()
    redis.set(SECRET_KEY, b"\xff\xfe" * 20)
    assert read_shared_secret(redis) == b"\xff\xfe" * 20  # bytes sign as they are: no UnicodeDecodeError
    redis.set(SECRET_KEY, "")
    assert read_shared_secret(redis) is None
    assert make_shared_secret(redis) is True
    assert len(read_shared_secret(redis) or b"") == 64
    kept = read_shared_secret(redis)
    assert make_shared_secret(redis) is True and read_shared_secret(redis) == kept  # a usable key stays
