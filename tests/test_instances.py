"""Several Redis instances in one sidecar: settings, scoping by ?redis=, labelled metrics, isolation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.settings import Settings, from_env
from rqscope.tasks.registry import enqueue
from rqscope.web.app import create_app

from tests.conftest import redis_binary
from tests.test_exporter import samples

pytestmark = pytest.mark.redis


def test_one_url_is_named_default_and_keeps_rqs_prefix() -> None:
    (only,) = from_env({"RQSCOPE_REDIS_URL": "redis://localhost:6379/0"}).instances
    assert (only.name, only.url, only.prefix, only.cluster) == ("default", "redis://localhost:6379/0", "rq", False)


def test_named_instances_keep_their_order_and_urls() -> None:
    settings = from_env({"RQSCOPE_REDIS_URL": "east=redis://a:1/0, west=rediss://:pw@b:2/3#prefix=rq"})
    assert [(i.name, i.url, i.prefix) for i in settings.instances] == [
        ("east", "redis://a:1/0", "rq"),
        ("west", "rediss://:pw@b:2/3", "rq"),
    ]


def test_sentinel_masters_are_named_the_same_way() -> None:
    settings = from_env(
        {"RQSCOPE_SENTINEL_HOSTS": "s1:26379", "RQSCOPE_SENTINEL_MASTER": "east=main-east,west=main-west"}
    )
    assert [(i.name, i.sentinel_master) for i in settings.instances] == [("east", "main-east"), ("west", "main-west")]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("east=redis://a/0,east=redis://b/0", "instance name 'east' appears twice"),
        ("east=redis://a/0,redis://b/0", "must be a database number"),
        ("east=redis://a/0,west=redis://b/0,redis://c/0", "must be a database number"),
        ("east=http://a/0", "must start with redis://"),
        ("east=redis://a/0#prefix=bad prefix", "RQ allows only letters"),
        ("east=redis://a/0#prefix=a\nb", "RQ allows only letters"),
        ("east=redis://a/0#db=3", "a fragment other than #prefix=P"),
        ("east=redis://:pa#ss@a/0", "a fragment other than #prefix=P"),
        ("ea st=redis://a/0,west=redis://b/0", "must be 1-64 letters"),
        ("e%2F=redis://a/0,w=redis://b/0", "must be 1-64 letters"),
        ("x" * 70 + "=redis://a/0", "must be 1-64 letters"),
        ("east=redis://:pw@a:zz/0", "has an invalid port"),
        ("east=redis+cluster://a:7000", "needs a hash tag"),
    ],
)
def test_bad_instances_fail_at_start_with_one_line_naming_the_variable(url: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        from_env({"RQSCOPE_REDIS_URL": url})
    assert message in str(raised.value) and "RQSCOPE_" in str(raised.value)
    assert "\n" not in str(raised.value).replace("\\n", "")


@pytest.mark.parametrize(
    "url",
    ["east=redis://:s3cret@a/0,nothing://:s3cret@b", "east=redis://a:zz/0?password=s3cret", "http://:s3cret@a/0"],
)
def test_a_password_never_appears_in_an_instance_error(url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        from_env({"RQSCOPE_REDIS_URL": url})
    assert "s3cret" not in str(raised.value)


@pytest.fixture(scope="module")
def west_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(binary=redis_binary(), extra_args=("--enable-debug-command", "local"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def west(west_server: EmbeddedRedis) -> Iterator[Redis]:
    client = Redis.from_url(west_server.url, socket_timeout=5)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def both(redis_server: EmbeddedRedis, west_server: EmbeddedRedis, real_redis: Redis, west: Redis) -> Flask:
    settings = Settings(
        redis_url=f"east={redis_server.url},west={west_server.url}",
        redis_timeout=0.5,
        redis_connect_timeout=0.5,
        snapshot_ttl=0.0,
        task_modules=("rqscope.tasks.examples", "tests.sample_tasks"),
    )
    return create_app(settings, testing=True)


def _fill(real_redis: Redis, west: Redis) -> None:
    """A queue of the same name on both instances, with different depths."""
    for i in range(2):
        enqueue("t_ok", i, connection=real_redis)
    for i in range(5):
        enqueue("t_ok", i, connection=west)


def test_every_sample_names_its_instance_and_same_named_queues_stay_apart(
    both: Flask, real_redis: Redis, west: Redis
) -> None:
    _fill(real_redis, west)
    got = samples(both.test_client().get("/metrics").get_data(as_text=True))
    assert got[("rqscope_queue_jobs", (("queue", "default"), ("redis", "east"), ("state", "queued")))] == 2
    assert got[("rqscope_queue_jobs", (("queue", "default"), ("redis", "west"), ("state", "queued")))] == 5
    assert got[("rqscope_redis_up", (("redis", "east"),))] == 1 == got[("rqscope_redis_up", (("redis", "west"),))]
    assert all(dict(labels).get("redis") in ("east", "west") for _, labels in got)


def test_json_routes_are_scoped_by_redis_and_default_to_the_first(both: Flask, real_redis: Redis, west: Redis) -> None:
    _fill(real_redis, west)
    client = both.test_client()

    def queued(query: str) -> int:
        body = client.get(f"/api/queues{query}").get_json()
        return next(q["counts"]["queued"] for q in body["queues"] if q["name"] == "default")

    assert (queued(""), queued("?redis=east"), queued("?redis=west")) == (2, 2, 5)
    listing = client.get("/api/queues/default/jobs?state=queued&redis=west").get_json()
    assert listing["total"] == 5


@pytest.mark.parametrize("name", ["north", "", "east\n", "../east", "e" * 5000, "%ff"])
def test_an_unknown_instance_is_404_on_pages_and_api(both: Flask, name: str) -> None:
    client = both.test_client()
    api = client.get("/api/queues", query_string={"redis": name})
    assert api.status_code == 404 and "no Redis instance named" in api.get_json()["error"]
    page = client.get("/", query_string={"redis": name}, headers={"Accept": "text/html"})
    assert page.status_code == 404 and "<script" not in page.get_data(as_text=True).lower().replace("script src", "")


def test_links_on_a_scoped_page_stay_on_that_instance(both: Flask, real_redis: Redis, west: Redis) -> None:
    _fill(real_redis, west)
    html = both.test_client().get("/?redis=west").get_data(as_text=True)
    assert "redis=west" in html and "/queues/default/queued?redis=west" in html
    first = both.test_client().get("/").get_data(as_text=True)
    assert "/queues/default/queued?redis" not in first  # the default instance's links are as they always were


def test_an_action_acts_on_the_scoped_instance_only(both: Flask, real_redis: Redis, west: Redis) -> None:
    client = both.test_client()
    response = client.post("/api/tasks?redis=west", json={"task": "t_ok", "args": [1]})
    assert response.status_code == 202, response.get_json()
    assert west.llen("rq:queue:default") == 1 and real_redis.llen("rq:queue:default") == 0
    status = client.get(f"/api/tasks/{response.get_json()['id']}?redis=west").get_json()
    assert status["status"] == "queued"
    assert client.get(f"/api/tasks/{response.get_json()['id']}").status_code == 404


def test_api_instances_lists_each_with_its_figures(both: Flask, real_redis: Redis, west: Redis) -> None:
    _fill(real_redis, west)
    body = both.test_client().get("/api/instances").get_json()
    assert body["default"] == "east"
    rows = {row["name"]: row for row in body["instances"]}
    assert list(rows) == ["east", "west"]
    assert (rows["east"]["queued"], rows["west"]["queued"]) == (2, 5)
    assert rows["west"]["up"] is True and rows["west"]["kind"] == "url" and rows["west"]["prefix"] == "rq"


def _sleeping(west: Redis, seconds: float) -> threading.Thread:
    """West answers nothing for `seconds` (DEBUG SLEEP blocks its one thread)."""
    sleeper = Redis(
        host=west.connection_pool.connection_kwargs["host"],
        port=west.connection_pool.connection_kwargs["port"],
        socket_timeout=seconds + 5,
    )
    thread = threading.Thread(target=sleeper.execute_command, args=("DEBUG", "SLEEP", seconds), daemon=True)
    thread.start()
    probe = Redis(
        host=sleeper.connection_pool.connection_kwargs["host"],
        port=sleeper.connection_pool.connection_kwargs["port"],
        socket_timeout=0.1,
        retry=Retry(NoBackoff(), 0),
    )
    for _ in range(100):  # until it is asleep: a probe goes unanswered
        try:
            probe.ping()
        except RedisError:
            break
        time.sleep(0.02)
    return thread


def test_a_paused_instance_is_down_in_metrics_while_the_other_is_served(
    both: Flask, real_redis: Redis, west: Redis
) -> None:
    _fill(real_redis, west)
    client = both.test_client()
    thread = _sleeping(west, 3)
    try:
        got = samples(client.get("/metrics").get_data(as_text=True))
        assert got[("rqscope_redis_up", (("redis", "west"),))] == 0
        assert got[("rqscope_redis_up", (("redis", "east"),))] == 1
        assert got[("rqscope_queue_jobs", (("queue", "default"), ("redis", "east"), ("state", "queued")))] == 2
        assert not any(dict(labels).get("redis") == "west" and name == "rqscope_queue_jobs" for name, labels in got)
        assert client.get("/api/queues").status_code == 200  # east's pages never wait on west
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["status"] == "degraded"
        assert ready.get_json()["instances"]["west"].startswith("unreachable")
        rows = {r["name"]: r for r in client.get("/api/instances").get_json()["instances"]}
        assert rows["west"]["up"] is False and rows["east"]["up"] is True
    finally:
        thread.join(10)
    got = samples(client.get("/metrics").get_data(as_text=True))
    assert got[("rqscope_redis_up", (("redis", "west"),))] == 1  # back within one read once it answers


def test_alerts_carry_the_instance_and_lead_in_each_instances_own_redis(
    both: Flask, real_redis: Redis, west: Redis
) -> None:
    state = both.extensions["rqscope"]
    east_engine, west_engine = (state.instances[name].alerts for name in ("east", "west"))
    assert east_engine is not None and west_engine is not None
    assert (east_engine.instance, west_engine.instance) == ("east", "west")
    east_engine.evaluate_once()
    west_engine.evaluate_once()
    from rqscope.monitor.alerts.keys import LEASE_KEY

    assert real_redis.get(LEASE_KEY).decode() == east_engine.holder
    assert west.get(LEASE_KEY).decode() == west_engine.holder


def test_info_reports_every_instance_and_fails_while_one_is_down(
    redis_server: EmbeddedRedis, west_server: EmbeddedRedis, real_redis: Redis, west: Redis, capsys
) -> None:  # type: ignore[no-untyped-def]
    import json

    from rqscope.web.cli import main

    _fill(real_redis, west)
    env = {"RQSCOPE_REDIS_URL": f"east={redis_server.url},west={west_server.url}"}
    assert main(["info", "--json"], env=env) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["east", "west"]
    queued = {name: sum(q["counts"]["queued"] for q in body["queues"]) for name, body in report.items()}
    assert queued == {"east": 2, "west": 5}
    assert main(["info"], env=env) == 0
    text = capsys.readouterr().out
    assert text.index("== east ==") < text.index("== west ==")
    down = {"RQSCOPE_REDIS_URL": f"east={redis_server.url},west=redis://127.0.0.1:1/0"}
    assert main(["info", "--json"], env=down) == 1
    assert json.loads(capsys.readouterr().out)["west"]["redis"]["up"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "--burst"], "names 2 instances (east, west): pick one with --redis NAME"),
        (["worker", "--burst", "--redis", "north"], "--redis 'north' is not an instance"),
    ],
)
def test_a_worker_serves_one_named_instance(argv: list[str], message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    from rqscope.web.cli import main

    env = {"RQSCOPE_REDIS_URL": "east=redis://127.0.0.1:1/0,west=redis://127.0.0.1:2/0"}
    assert main(argv, env=env) != 0
    assert message in capsys.readouterr().err


def test_a_worker_started_with_redis_name_works_that_instance(
    west_server: EmbeddedRedis, redis_server: EmbeddedRedis, real_redis: Redis, west: Redis
) -> None:
    from rqscope.web.cli import main

    enqueue("t_ok", 3, connection=west)
    env = {
        "RQSCOPE_REDIS_URL": f"east={redis_server.url},west={west_server.url}",
        "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
    }
    assert main(["worker", "default", "--burst", "--redis", "west"], env=env) == 0
    assert west.zcard("rq:finished:default") == 1 and real_redis.zcard("rq:finished:default") == 0


def test_sign_in_and_pages_of_one_instance_outlive_the_first_instances_outage(
    west_server: EmbeddedRedis, west: Redis
) -> None:
    """Sessions live on the first instance that answers: east going away locks nobody out of west."""
    from tests.test_auth_caller import PASSWORD, TOKEN, USERS, csrf_of, sidecar, sign_in

    east = EmbeddedRedis(binary=redis_binary()).start()
    try:
        env = {
            "RQSCOPE_USERS": USERS,
            "RQSCOPE_API_TOKEN": TOKEN,
            "RQSCOPE_REDIS_TIMEOUT": "0.5",
            "RQSCOPE_REDIS_CONNECT_TIMEOUT": "0.5",
            "RQSCOPE_SECRET_KEY": "k" * 32,
        }
        with sidecar(f"east={east.url},west={west_server.url}", env) as served:
            browser, response = sign_in(served, username="ops", password=PASSWORD)
            assert response.status_code in (302, 303)
            east.halt()
            # the session lived on east: the caller is asked to sign in again, and can
            page = browser.get(served.url + "/?redis=west", headers={"Accept": "text/html"}, timeout=10)
            assert page.status_code in (200, 302, 303) and "Redis is unavailable" not in page.text
            form = browser.get(served.url + "/login", timeout=10)
            credentials = {"csrf_token": csrf_of(form.text), "username": "ops", "password": PASSWORD}
            again = browser.post(served.url + "/login", data=credentials, allow_redirects=False, timeout=10)
            assert again.status_code in (302, 303), again.text[:300]
            overview = browser.get(served.url + "/?redis=west", headers={"Accept": "text/html"}, timeout=10)
            assert overview.status_code == 200 and "west" in overview.text
            assert [k for k in west.keys("rqscope:session:*")], "the new session lives on west"
            # signing out must reach every instance the session may live on: with east away it says so
            out = browser.post(
                served.url + "/logout?redis=west",
                timeout=10,
                allow_redirects=False,
                data={"csrf_token": csrf_of(overview.text)},
            )
            assert out.status_code == 503 and "sign out again" in out.text
            assert [k for k in west.keys("rqscope:session:*")] == []  # gone where it could be deleted
    finally:
        east.stop()
