"""Sessions and sign-in limits across instances: a second instance must not widen who may act, nor how often."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.settings import from_env
from rqscope.web.app import create_app
from rqscope.web.ratelimit import LIMIT

from tests.test_auth_caller import PASSWORD, TOKEN, USERS, VIEWER
from tests.test_instances import _sleeping, west, west_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.redis


@pytest.fixture
def signed(redis_server: EmbeddedRedis, west_server: EmbeddedRedis, real_redis: Redis, west: Redis) -> Flask:  # noqa: F811
    env = {
        "RQSCOPE_REDIS_URL": f"east={redis_server.url},west={west_server.url}",
        "RQSCOPE_USERS": USERS,
        "RQSCOPE_API_TOKEN": TOKEN,
        "RQSCOPE_VIEWER_TOKEN": VIEWER,
        "RQSCOPE_SECRET_KEY": "k" * 32,
        "RQSCOPE_REDIS_TIMEOUT": "0.5",
        "RQSCOPE_REDIS_CONNECT_TIMEOUT": "0.5",
        "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
    }
    return create_app(from_env(env), testing=True)


@pytest.fixture
def east_full(real_redis: Redis) -> Iterator[Redis]:
    """East at maxmemory under noeviction (RQ's recommended policy): reads answer, writes get OOM errors."""
    real_redis.set("filler", "x" * 2_000_000)
    real_redis.config_set("maxmemory", "1mb")
    try:
        yield real_redis
    finally:
        real_redis.config_set("maxmemory", "0")


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:300]
    return match.group(1)


def _sign_in(client: FlaskClient, **form: str) -> int:
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"csrf_token": _csrf(page), **form}).status_code


def _who(client: FlaskClient, path: str = "/?redis=west") -> list[str]:
    return re.findall(r'class="who">([^<]*)', client.get(path).get_data(as_text=True))


def test_wrong_passwords_are_limited_while_the_first_instance_refuses_writes(signed: Flask, east_full: Redis) -> None:
    """The budget is read on east (which answers reads) but counted on west: guessing must still stop."""
    client = signed.test_client()
    codes = [_sign_in(client, username="ops", password=f"guess-{i}") for i in range(LIMIT + 5)]
    assert codes.count(401) <= LIMIT, codes


def test_a_sign_in_that_succeeds_while_the_first_refuses_writes_keeps_its_user_signed_in(
    signed: Flask, east_full: Redis
) -> None:
    """A 302 from /login promises a session: the next page must not ask to sign in again."""
    client = signed.test_client()
    status = _sign_in(client, username="ops", password=PASSWORD)
    assert status != 302 or _who(client) == ["ops (operator)"], "signed in, then at once signed out"


def test_a_record_copied_on_another_instance_does_not_raise_a_viewers_role(
    signed: Flask,
    real_redis: Redis,
    west: Redis,  # noqa: F811
) -> None:
    """Whoever can write west's Redis must not turn a viewer's cookie into an operator's while east is away."""
    operator = signed.test_client()
    pause = _sleeping(real_redis, 2)
    _sign_in(operator, token=TOKEN)  # east away: this operator's record lands on west (today)
    pause.join()
    if not west.keys("rqscope:session:*"):  # a sign-in refused while east was away: take the record from east
        assert _sign_in(operator, token=TOKEN) == 302
        (key,) = real_redis.keys("rqscope:session:*")
        west.set(key, real_redis.get(key) or b"")
    (operator_key,) = west.keys("rqscope:session:*")
    viewer = signed.test_client()
    assert _sign_in(viewer, username="watcher", password=PASSWORD) == 302
    with signed.test_request_context():
        serializer = signed.session_interface.get_signing_serializer(signed)  # type: ignore[attr-defined]
        sid = serializer.loads(viewer.get_cookie("session").value)["sid"]  # signed, not encrypted
    west.set("rqscope:session:" + hashlib.sha256(sid.encode()).hexdigest(), west.get(operator_key) or b"", ex=600)
    pause = _sleeping(real_redis, 3)
    try:
        who = _who(viewer)
        token = _csrf(viewer.get("/login").get_data(as_text=True))  # a real token: only the role may refuse
        suspend = viewer.post("/api/workers/suspend?redis=west", headers={"X-CSRF-Token": token})
        assert (who, suspend.status_code, west.exists("rq:suspended")) in (([], 401, 0), (["watcher (viewer)"], 403, 0))
    finally:
        pause.join()


def test_signing_in_again_during_an_outage_leaves_no_earlier_cookie_alive(signed: Flask, real_redis: Redis) -> None:
    """Signing out promises a copied cookie is worthless: also the one replaced by a sign-in while east was away."""
    user = signed.test_client()
    assert _sign_in(user, username="ops", password=PASSWORD) == 302
    copied = user.get_cookie("session").value
    pause = _sleeping(real_redis, 3)
    try:
        _sign_in(user, username="ops", password=PASSWORD)  # today: a new session on west replaces the cookie
    finally:
        pause.join()
    out = user.post("/logout", data={"csrf_token": _csrf(user.get("/login").get_data(as_text=True))})
    assert out.status_code == 302
    thief = signed.test_client()
    thief.set_cookie("session", copied)
    assert _who(thief, "/") == []


def test_a_record_copied_over_a_viewers_session_on_the_second_instance_does_not_raise_its_role(
    signed: Flask,
    real_redis: Redis,
    west: Redis,  # noqa: F811
) -> None:
    """The viewer's own session lives on west (east was away at sign-in): a record copied over it is refused."""
    operator, viewer = signed.test_client(), signed.test_client()
    pause = _sleeping(real_redis, 8)
    try:
        assert _sign_in(operator, token=TOKEN) == 302
        assert _sign_in(viewer, username="watcher", password=PASSWORD) == 302
    finally:
        pause.join()
    with signed.test_request_context():
        serializer = signed.session_interface.get_signing_serializer(signed)  # type: ignore[attr-defined]
        mine = serializer.loads(viewer.get_cookie("session").value)
        theirs = serializer.loads(operator.get_cookie("session").value)
    assert mine["sid_at"] == theirs["sid_at"] == "west", (mine, theirs)
    assert "sid_of" in mine, mine
    record = west.get("rqscope:session:" + hashlib.sha256(theirs["sid"].encode()).hexdigest())
    west.set("rqscope:session:" + hashlib.sha256(mine["sid"].encode()).hexdigest(), record or b"", ex=600)
    token = _csrf(viewer.get("/login").get_data(as_text=True))
    suspend = viewer.post("/api/workers/suspend?redis=west", headers={"X-CSRF-Token": token})
    assert suspend.status_code in (401, 403) and not west.exists("rq:suspended")
    assert "api-token (operator)" not in viewer.get("/?redis=west").get_data(as_text=True)
