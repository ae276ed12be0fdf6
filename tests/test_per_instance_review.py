"""RQSCOPE_PROCESS_PER_INSTANCE under mixed prefixes, Sentinel and hostile names; the rules' links for dot names;
an idle worker's left-behind execution."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import requests
from redis import Redis
from rqscope.monitor.alerts.notifiers import dashboard_link
from rqscope.monitor.alerts.rules import load_rules
from rqscope.monitor.alerts.runner import build_engine
from rqscope.monitor.alerts.state import Alert, Notification
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.monitor.names import decode_segment, encode_segment, label, metric_label
from rqscope.monitor.settings import Settings, from_env
from rqscope.monitor.shaping import worker_facts
from rqscope.monitor.snapshot import WORKER_FIELDS
from rqscope.tasks.errors import SettingsError
from rqscope.web import children as children_module
from rqscope.web.app import create_app
from rqscope.web.children import Children, plan, prefix_environ

from prometheus import annotate
from tests.conftest import redis_binary
from tests.helpers import rqscope_command, spawn, stop, wait_for
from tests.test_auth_caller import PASSWORD, USERS, csrf_of, plain_http, sidecar, sign_in
from tests.test_prefixes import _children_of, samples

BILLING = "{billing}"
OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
SECRET = "s" * 40


def _child_environ(children: Children, index: int) -> dict[str, str]:
    """What `Children._spawn` hands the child at `index`."""
    child = children.children[index]
    env = prefix_environ(children.environ, child.instances)
    env.update(
        {"RQSCOPE_FRONT_TOKEN": children.token, "RQSCOPE_FRONT_SOCKET": child.socket, "RQSCOPE_WEB_WORKERS": "1"}
    )
    return env


# -- plan: which process serves which instance


def test_mixed_prefixes_give_each_instance_after_the_first_its_own_process_under_its_own_prefix() -> None:
    urls = f"main=redis://a:1/0,east=redis://b:2/0,billing=redis://c:3/0#prefix={BILLING},pay=redis://c:3/0#prefix={BILLING}"
    environ = {"RQSCOPE_REDIS_URL": urls, "RQSCOPE_PROCESS_PER_INSTANCE": "true", "RQSCOPE_PORT": "9999"}
    children = plan(from_env(environ), environ)
    assert children is not None
    try:
        assert [c.names for c in children.children] == [("east",), ("billing",), ("pay",)]
        for index, (name, prefix) in enumerate((("east", "rq"), ("billing", BILLING), ("pay", BILLING))):
            env = _child_environ(children, index)
            assert env["RQ_KEY_PREFIX"] == prefix
            assert env["RQSCOPE_PROCESS_PER_INSTANCE"] == "true"
            # this process's RQ reads `rq`: a child under another prefix is started for real in `stack` below
            child = from_env(env) if prefix == "rq" else Settings(redis_url=env["RQSCOPE_REDIS_URL"])
            assert [(i.name, i.prefix) for i in child.instances] == [(name, prefix)]
            if prefix == "rq":
                assert plan(child, env) is None  # and it starts no grandchild
        assert set(children.by_name) == {"east", "billing", "pay"}  # the front serves `main` only
    finally:
        shutil.rmtree(children.directory)


def test_the_first_instance_must_still_be_under_the_front_s_prefix() -> None:
    settings = Settings(
        redis_url=f"billing=redis://c:3/0#prefix={BILLING},main=redis://a:1/0", process_per_instance=True
    )
    with pytest.raises(SettingsError, match="the first instance, 'billing'"):
        plan(settings, {})


def test_before_rq_3_only_instances_under_other_prefixes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(children_module, "rq_reads_prefix", lambda: False)
    same = Settings(redis_url="main=redis://a:1/0,east=redis://b:2/0", process_per_instance=True)
    children = plan(same, {})
    assert children is not None and [c.names for c in children.children] == [("east",)]
    shutil.rmtree(children.directory)
    mixed = Settings(
        redis_url=f"main=redis://a:1/0,east=redis://b:2/0,billing=redis://c:3/0#prefix={BILLING}",
        process_per_instance=True,
    )
    with pytest.raises(SettingsError, match=r"other RQ key prefixes \(\{billing\}\) need rq 3.0"):
        plan(mixed, {})


def test_a_url_instance_s_process_starts_while_sentinel_masters_are_watched_too() -> None:
    """Every child must be able to read the settings its front hands it: a child given a URL instance only must not
    be left with RQSCOPE_SENTINEL_HOSTS and no RQSCOPE_SENTINEL_MASTER, which it refuses at start (and, exiting, is
    started again and again while its instance shows down)."""
    environ = {
        "RQSCOPE_REDIS_URL": "main=redis://a:1/0,east=redis://b:2/0",
        "RQSCOPE_SENTINEL_HOSTS": "s1:26379",
        "RQSCOPE_SENTINEL_MASTER": "ops=master-b",
        "RQSCOPE_PROCESS_PER_INSTANCE": "true",
    }
    children = plan(from_env(environ), environ)
    assert children is not None
    try:
        assert [c.names for c in children.children] == [("east",), ("ops",)]
        started: dict[tuple[str, ...], object] = {}
        for index, child in enumerate(children.children):
            try:
                started[child.names] = [i.name for i in from_env(_child_environ(children, index)).instances]
            except SettingsError as exc:
                started[child.names] = str(exc)
        assert started == {("east",): ["east"], ("ops",): ["ops"]}
    finally:
        shutil.rmtree(children.directory)


@pytest.mark.parametrize(
    ("host", "base"),
    [("127.0.0.1", "http://127.0.0.1:8123/"), ("::", "http://[::]:8123/"), ("[::1]", "http://[::1]:8123/")],
)
def test_an_alert_of_a_child_s_instance_links_to_the_front_s_port(host: str, base: str) -> None:
    """Without RQSCOPE_PUBLIC_URL, an alert links to http://host:port/ of the sidecar: a child's alerts (each
    instance after the first, with process_per_instance) must link where the front listens, as the first's do,
    and a child of a front bound to an IPv6 address still starts."""
    environ = {
        "RQSCOPE_REDIS_URL": "main=redis://a:1/0,east=redis://b:2/0",
        "RQSCOPE_PROCESS_PER_INSTANCE": "true",
        "RQSCOPE_PORT": "8123",
        "RQSCOPE_HOST": host,
        **({"RQSCOPE_API_TOKEN": OPERATOR} if host == "::" else {}),  # beyond loopback, credentials are needed
    }
    front = from_env(environ)
    children = plan(front, environ)
    assert children is not None
    try:
        child = from_env(_child_environ(children, 0))
    finally:
        shutil.rmtree(children.directory)
    redis = fakeredis.FakeRedis()
    front_engine = build_engine(front, redis, lambda: None, instance="main")  # type: ignore[arg-type,return-value]
    child_engine = build_engine(child, redis, lambda: None, instance="east")  # type: ignore[arg-type,return-value]
    assert front_engine.base_url == base
    assert child_engine.base_url == front_engine.base_url


# -- the rules' links for dot names


HOSTILE_QUEUES = ["...", ".%2E", "%2E;", ";", ". ", " ..", "..;", "a\\x2e", "\udcff.", "./.."]


@pytest.mark.parametrize("queue", [".", "..", "", *HOSTILE_QUEUES])
def test_every_rule_link_names_the_queue_exactly_as_the_notifier_does(queue: str) -> None:
    labels = {"instance": "web:9190", "queue": metric_label(queue), "redis": "east"}
    for rule in (r for r in load_rules() if r.per_queue):
        link = annotate.render(annotate.annotation_parts(rule)["dashboard_url"], labels, 1.0)
        link = re.sub("%[0-9a-f]{2}", lambda escape: escape.group().upper(), link)
        alert = Alert(
            "f", rule.name, rule.kind, rule.severity, (("queue", queue), ("redis", "east")), "", 1.0, "firing", 0.0
        )
        assert link == dashboard_link("http://web:9190/", Notification("firing", alert)), rule.name
        segment = urllib.parse.urlsplit(link).path.split("/")[2]
        assert decode_segment(segment) == queue


# -- an idle worker's left-behind execution


def _row(state: str | None, execution: str | None) -> list[Any]:
    values: dict[str, Any] = {"state": state, "queues": "default", "last_heartbeat": "2024-01-01T00:00:00.000000Z"}
    return [values.get(f) for f in WORKER_FIELDS] + [execution, "1700000000.0" if execution else None]


@pytest.mark.parametrize(
    ("state", "shown"),
    [("busy", "job-1"), ("idle", None), ("started", None), ("suspended", None), (None, None), ("BUSY", None)],
)
def test_an_execution_names_the_running_job_of_a_busy_worker_only(state: str | None, shown: str | None) -> None:
    assert worker_facts(_row(state, "job-1:e1")).current_job == shown
    # rq 2's current_job is taken whatever the state
    row = _row(state, None)
    row[WORKER_FIELDS.index("current_job")] = "job-2"
    assert worker_facts(row).current_job == "job-2"


# -- one `rqscope serve --process-per-instance` over two Redis servers and two prefixes


HOSTILE = [b"..", b".", b"", b"a/b", b"100%", b"new\nline", b"\xff\xfe", b"%2E;", b"x?redis=main"]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    first = EmbeddedRedis(binary=redis_binary()).start()
    second = EmbeddedRedis(binary=redis_binary()).start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture(scope="module")
def stack(servers: tuple[EmbeddedRedis, EmbeddedRedis]) -> Iterator[dict[str, Any]]:
    first, second = servers
    main, east = Redis.from_url(first.url), Redis.from_url(second.url)
    for client in (main, east):
        client.flushall()
    main.sadd("rq:queues", "rq:queue:m")
    main.rpush("rq:queue:m", "m1")
    for index, name in enumerate(HOSTILE):  # under `rq` on the second server: east's
        east.sadd("rq:queues", b"rq:queue:" + name)
        east.rpush(b"rq:queue:" + name, *[f"j{index}-{i}" for i in range(index + 1)])
    east.sadd(f"{BILLING}:queues", f"{BILLING}:queue:bq")  # under {billing} on the same server: billing's
    east.rpush(f"{BILLING}:queue:bq", "b1", "b2", "b3")
    port = free_port()
    env = {
        "RQSCOPE_REDIS_URL": f"main={first.url},east={second.url},billing={second.url}#prefix={BILLING}",
        "RQSCOPE_PROCESS_PER_INSTANCE": "true",
        "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
        "RQSCOPE_API_TOKEN": OPERATOR,
        "RQSCOPE_VIEWER_TOKEN": VIEWER,
        "RQSCOPE_USERS": USERS,
        "RQSCOPE_SECRET_KEY": SECRET,
        "RQSCOPE_REDIS_TIMEOUT": "1",
        "RQSCOPE_REDIS_CONNECT_TIMEOUT": "1",
        "RQSCOPE_SNAPSHOT_TTL": "0.001",
        "RQSCOPE_LOG_LEVEL": "WARNING",
        "RQSCOPE_PORT": str(port),
    }
    serve = spawn(rqscope_command("serve"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(base, "/readyz", None)[0] == 200 and _ready(base), timeout=90)
        yield {"base": base, "serve": serve, "main": main, "east": east}
    finally:
        stop(serve)
        main.close()
        east.close()


def _get(base: str, path: str, token: str | None = VIEWER, **kwargs: Any) -> tuple[int, bytes]:
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        response = requests.get(base + path, headers=headers, timeout=kwargs.pop("timeout", 20), **kwargs)
    except requests.RequestException:
        return 0, b""
    return response.status_code, response.content


def _ready(base: str) -> bool:
    answer = json.loads(_get(base, "/readyz", None)[1] or b"{}")
    return answer.get("status") == "ok"


def _environ(pid: int) -> dict[str, str]:
    pairs = (e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
    return {key.decode(): value.decode() for key, value in pairs}


def _children(serve: subprocess.Popen[bytes]) -> dict[str, int]:
    """{the instances a child serves: its pid} of `serve`'s children."""
    found = {}
    for pid in _children_of(serve.pid):
        try:
            environ = _environ(pid)
        except OSError:
            continue
        if "RQSCOPE_FRONT_SOCKET" in environ:
            found[environ["RQSCOPE_REDIS_URL"].split("=", 1)[0]] = pid
    return found


def test_each_instance_is_served_by_one_process_with_its_own_prefix(stack: dict[str, Any]) -> None:
    found = _children(stack["serve"])
    assert sorted(found) == ["billing", "east"]
    assert {name: _environ(pid)["RQ_KEY_PREFIX"] for name, pid in found.items()} == {"east": "rq", "billing": BILLING}
    status, body = _get(stack["base"], "/metrics", None)
    assert status == 200
    shown = samples(body)
    queued = {
        (dict(labels)["redis"], dict(labels)["queue"]): value
        for (name, labels), value in shown.items()
        if name == "rqscope_queue_jobs" and dict(labels)["state"] == "queued"
    }
    assert queued[("main", "m")] == 1 and queued[("billing", "bq")] == 3
    assert not any(redis == "billing" and queue != "bq" for redis, queue in queued)  # billing sees its prefix only
    assert ("east", "bq") not in queued and ("main", "bq") not in queued
    for name in ("main", "east", "billing"):
        assert body.count(f'rqscope_redis_up{{redis="{name}"}}'.encode()) == 1
    listed = json.loads(_get(stack["base"], "/api/instances")[1])["instances"]
    assert [(row["name"], row["up"], row["prefix"]) for row in listed] == [
        ("main", True, "rq"),
        ("east", True, "rq"),
        ("billing", True, BILLING),
    ]
    status, page = _get(stack["base"], "/instances", headers={"Accept": "text/html"})
    assert status == 200 and all(f">{name}<".encode() in page for name in ("main", "east", "billing")), page[:500]


def test_the_merged_exposition_of_every_process_passes_promtool(stack: dict[str, Any], tmp_path: Path) -> None:
    body = _get(stack["base"], "/metrics", None)[1]
    (tmp_path / "metrics.txt").write_bytes(body)
    binary = shutil.which("promtool")
    assert binary is not None
    with (tmp_path / "metrics.txt").open("rb") as exposition:
        result = subprocess.run([binary, "check", "metrics"], stdin=exposition, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    names = [(s.name, tuple(sorted(s.labels.items()))) for s in samples_of(body.decode())]
    assert len(names) == len(set(names))  # no sample twice, whichever process exported it


def samples_of(text: str) -> Iterator[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        yield from family.samples


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_queue_names_of_a_child_s_instance_are_served_through_the_front(
    stack: dict[str, Any], raw: bytes
) -> None:
    name = raw.decode("utf-8", "surrogateescape")
    segment = encode_segment(name)
    count = HOSTILE.index(raw) + 1
    status, body = _get(stack["base"], f"/api/queues/{segment}/jobs?state=queued&redis=east")
    assert status == 200, body[:300]
    assert json.loads(body)["total"] == count
    status, page = _get(stack["base"], f"/queues/{segment}/queued?redis=east", headers={"Accept": "text/html"})
    assert status == 200, page[:300]
    shown = label(name).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert shown.encode() in page
    # the main instance has no such queue: the front answers for it itself
    assert _get(stack["base"], f"/api/queues/{segment}/jobs?state=queued")[0] == 404


def test_a_form_action_on_a_child_s_instance_needs_the_front_s_csrf_token_and_lands_there(
    stack: dict[str, Any],
) -> None:
    base, east, main = stack["base"], stack["east"], stack["main"]
    raw = b"\xff\xfe"
    segment = encode_segment(raw.decode("utf-8", "surrogateescape"))
    browser = requests.Session()
    form = browser.get(base + "/login", timeout=20)
    plain_http(browser)
    signed = browser.post(
        base + "/login",
        data={"csrf_token": csrf_of(form.text), "username": "ops", "password": PASSWORD},
        allow_redirects=False,
        timeout=20,
    )
    assert signed.status_code in (302, 303), signed.text[:300]
    plain_http(browser)
    east.delete("rq:rqscope:paused")
    forged = browser.post(f"{base}/queues/{segment}/pause?redis=east", data={"csrf_token": "x" * 40}, timeout=20)
    assert forged.status_code == 403 and not east.exists("rq:rqscope:paused")
    confirm = browser.get(f"{base}/queues/{segment}/pause/confirm?redis=east", timeout=20)
    assert confirm.status_code == 200, confirm.text[:300]
    done = browser.post(
        f"{base}/queues/{segment}/pause?redis=east",
        data={"csrf_token": csrf_of(confirm.text)},
        allow_redirects=False,
        timeout=20,
    )
    assert done.status_code in (302, 303), done.text[:300]
    assert east.smembers("rq:rqscope:paused") == {b"rq:queue:" + raw}
    assert not main.exists("rq:rqscope:paused")
    page = browser.get(base + done.headers["Location"], timeout=20)
    assert "paused" in page.text  # the child's flashed message reaches the caller through the front
    east.delete("rq:rqscope:paused")


def test_a_hung_child_costs_its_instance_only_and_within_the_bound(stack: dict[str, Any]) -> None:
    base, serve = stack["base"], stack["serve"]
    pid = _children(serve)["east"]
    stopped = [pid, *_children_of(pid)]  # its gunicorn master and worker: it accepts, never answers
    for each in stopped:
        os.kill(each, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, body = _get(base, "/metrics", None)
        took = time.monotonic() - started
        shown = samples(body)
        assert status == 200 and took < 1 + 1 + 0.5 + 1.5, took  # the fan-out's bound, plus the front's own work
        assert shown[("rqscope_redis_up", (("redis", "east"),))] == 0
        assert shown[("rqscope_redis_up", (("redis", "main"),))] == 1
        assert shown[("rqscope_redis_up", (("redis", "billing"),))] == 1
        started = time.monotonic()
        assert _get(base, "/api/queues?redis=main")[0] == 200
        assert _get(base, "/api/queues?redis=billing")[0] == 200
        assert time.monotonic() - started < 3
        status, _ = _get(base, "/api/queues?redis=east")
        assert status == 502
        listed = json.loads(_get(base, "/api/instances")[1])["instances"]
        assert [(row["name"], row["up"]) for row in listed] == [("main", True), ("east", False), ("billing", True)]
    finally:
        for each in stopped:
            os.kill(each, signal.SIGCONT)
    wait_for(lambda: _get(base, "/api/queues?redis=east")[0] == 200, timeout=30)


def test_sessions_live_only_on_instances_under_the_front_s_own_prefix() -> None:
    """A child under another prefix keeps its keys under that prefix (one cluster slot): the front writes no
    session there. Under the front's prefix, a child's instance is a home, in the configured order."""
    urls = f"main=redis://a:1/0,billing=redis://c:3/0#prefix={BILLING},east=redis://b:2/0"
    environ = {"RQSCOPE_REDIS_URL": urls, "RQSCOPE_PROCESS_PER_INSTANCE": "true"}
    settings = from_env(environ)
    children = plan(settings, environ)
    assert children is not None
    try:
        app = create_app(settings, children=children, testing=True)
        homes = app.extensions["rqscope"].homes
        assert list(homes) == ["main", "east"]
        assert homes["main"] is app.extensions["rqscope"].instances["main"].redis
    finally:
        shutil.rmtree(children.directory)


def test_sign_in_outlives_the_first_instance_s_outage_with_a_process_per_instance(
    servers: tuple[EmbeddedRedis, EmbeddedRedis],
) -> None:
    """Sessions live on the first instance that answers: with the first away, a user signs in again and keeps
    using the second (as without process_per_instance, tests/test_instances.py)."""
    _, second = servers
    first = EmbeddedRedis(binary=redis_binary()).start()
    try:
        env = {
            "RQSCOPE_USERS": USERS,
            "RQSCOPE_API_TOKEN": OPERATOR,
            "RQSCOPE_REDIS_TIMEOUT": "0.5",
            "RQSCOPE_REDIS_CONNECT_TIMEOUT": "0.5",
            "RQSCOPE_SECRET_KEY": SECRET,
            "RQSCOPE_PROCESS_PER_INSTANCE": "true",
        }
        with sidecar(f"main={first.url},west={second.url}", env) as served:
            wait_for(lambda: _ready(served.url), timeout=60)
            browser, response = sign_in(served, username="ops", password=PASSWORD)
            assert response.status_code in (302, 303)
            first.halt()
            form = browser.get(served.url + "/login", timeout=10)
            assert form.status_code == 200, form.text[:300]
            credentials = {"csrf_token": csrf_of(form.text), "username": "ops", "password": PASSWORD}
            again = browser.post(served.url + "/login", data=credentials, allow_redirects=False, timeout=10)
            assert again.status_code in (302, 303), (again.status_code, again.text[:300])
            plain_http(browser)
            page = browser.get(served.url + "/?redis=west", headers={"Accept": "text/html"}, timeout=10)
            assert page.status_code == 200 and "west" in page.text
    finally:
        first.stop()


def test_each_instance_s_alerts_are_evaluated_by_the_process_that_serves_it(
    stack: dict[str, Any], servers: tuple[EmbeddedRedis, EmbeddedRedis]
) -> None:
    serve, main, east = stack["serve"], stack["main"], stack["east"]
    found = _children(serve)
    leases = {"main": (main, "rqscope:alerts:leader"), "east": (east, "rqscope:alerts:leader")}
    leases["billing"] = (east, f"{BILLING}:rqscope:alerts:leader")
    wait_for(lambda: all(client.get(key) for client, key in leases.values()), timeout=30)
    holders = {name: int(client.get(key).decode().split(":")[1]) for name, (client, key) in leases.items()}
    front_workers = set(_children_of(serve.pid)) - set(found.values())
    assert holders["main"] in front_workers
    assert holders["east"] in _children_of(found["east"])
    assert holders["billing"] in _children_of(found["billing"])
    assert not main.exists(f"{BILLING}:rqscope:alerts:leader")  # no process reads billing on main's server


def test_instance_names_that_differ_only_in_case_are_refused() -> None:
    with pytest.raises(SettingsError, match="appears twice"):
        from_env({"RQSCOPE_REDIS_URL": "east=redis://a:1/0,East=redis://b:2/0", "RQSCOPE_PROCESS_PER_INSTANCE": "1"})
