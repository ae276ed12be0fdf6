"""Sessions on any instance under the front's prefix (State.homes), and the session-signing key they share."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator

import fakeredis
import pytest
from flask import Flask
from redis import ConnectionError
from rqscope.monitor.settings import from_env
from rqscope.web import app as app_module
from rqscope.web.app import create_app
from rqscope.web.children import plan
from rqscope.web.session_key import SECRET_KEY, keep_making, make_shared_secret, read_shared_secrets

from tests.test_auth_caller import PASSWORD, USERS

DOWN = "redis://127.0.0.1:1/0"  # refused at once: the first instance is away


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, Flask, fakeredis.FakeRedis]]:
    """Two gunicorn workers of one front (process_per_instance), started while the first instance is down;
    RQSCOPE_SECRET_KEY unset, the default: the session-signing key is shared through Redis."""
    east = fakeredis.FakeRedis()
    real = app_module.make_client

    def make_client(settings, config=None, **kwargs):  # type: ignore[no-untyped-def]
        return east if config is not None and config.name == "east" else real(settings, config, **kwargs)

    monkeypatch.setattr(app_module, "make_client", make_client)
    environ = {
        "RQSCOPE_REDIS_URL": f"main={DOWN},east=redis://127.0.0.1:2/0",
        "RQSCOPE_PROCESS_PER_INSTANCE": "true",
        "RQSCOPE_USERS": USERS,
        "RQSCOPE_REDIS_CONNECT_TIMEOUT": "0.3",
        "RQSCOPE_REDIS_TIMEOUT": "0.3",
        "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
    }
    settings = from_env(environ)
    children = plan(settings, environ)
    assert children is not None
    try:
        first = create_app(settings, children=children, testing=True)
        second = create_app(settings, children=children, testing=True)
        yield first, second, east
    finally:
        shutil.rmtree(children.directory, ignore_errors=True)


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
    """The sign-in lands on east (a home), and the cookie is signed with the key east holds, which every worker
    reads: not a key only the worker that signed it knows (with gunicorn's two workers, every other request
    of the signed-in user was refused)."""
    first, second, east = workers
    stopped = threading.Event()
    keep_making(list(first.extensions["rqscope"].homes.values()), stopped)  # as start() does in each worker
    stopped.set()
    cookie = _sign_in(first)
    assert east.keys("rqscope:session:*"), "the session lives on east"
    same = first.test_client()
    same.set_cookie("session", cookie)
    assert same.get("/api/instances").status_code == 200  # the worker that signed it accepts it
    other = second.test_client()
    other.set_cookie("session", cookie)
    assert other.get("/api/instances").status_code == 200


class Away:
    """A home that drops every connection."""

    def get(self, key: str) -> None:
        raise ConnectionError("away")

    def set(self, key: str, value: str, nx: bool = False) -> None:
        raise ConnectionError("away")


def test_one_key_is_spread_over_every_home_and_the_one_a_home_holds_wins() -> None:
    main, east = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    east.set(SECRET_KEY, "k-east")
    assert make_shared_secret([main, east]) is True
    assert main.get(SECRET_KEY) == east.get(SECRET_KEY) == b"k-east"
    fresh = fakeredis.FakeRedis()
    assert make_shared_secret([Away(), fresh]) is False  # a home away: the thread tries again
    made = fresh.get(SECRET_KEY)
    assert made and make_shared_secret([main, fresh]) is True
    assert read_shared_secrets([main, fresh]) == (["k-east", made.decode()], True)


def test_a_cookie_signed_during_the_first_home_s_outage_holds_once_it_is_back_with_a_key_of_its_own(
    workers: tuple[Flask, Flask, fakeredis.FakeRedis],
) -> None:
    """While main was away, east's key signed the cookie; main comes back holding an older key of its own. The
    cookie is signed with main's key from then on and east's is still accepted, so nobody is signed out."""
    first, second, east = workers
    stopped = threading.Event()
    try:
        thread = keep_making(list(first.extensions["rqscope"].homes.values()), stopped)
        assert thread is not None  # main is away: the key is on east, and main gets it once it answers
    finally:
        stopped.set()
    cookie = _sign_in(first)
    main = fakeredis.FakeRedis()
    main.set(SECRET_KEY, "main-s-own-older-key")
    for app in (first, second):
        homes = app.extensions["rqscope"].homes
        homes["main"] = main
        app.session_interface._next_read = 0.0  # type: ignore[attr-defined]  # the next read is due
    fresh = second.test_client()
    fresh.set_cookie("session", cookie)
    assert fresh.get("/api/instances").status_code == 200
    assert second.secret_key == "main-s-own-older-key"  # and new cookies are signed with main's
    signed_now = _sign_in(second)
    other = first.test_client()
    other.set_cookie("session", signed_now)
    assert other.get("/api/instances").status_code == 200
