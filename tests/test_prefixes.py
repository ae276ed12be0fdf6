"""One sidecar for installations under different RQ key prefixes: a sidecar process per other prefix, one front.

Two real Redis servers, `main` under RQ's default prefix and `billing` under `{billing}`, each worked by a real
`rqscope worker` started with its own RQ_KEY_PREFIX; one `rqscope serve` watches both.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.monitor.instances import by_prefix
from rqscope.monitor.names import encode_segment
from rqscope.monitor.settings import Settings, from_env
from rqscope.tasks.errors import RqscopeError, SettingsError
from rqscope.tasks.rq_internals.keys import rq_reads_prefix
from rqscope.web.app import create_app
from rqscope.web.children import UnixConnection, plan, prefix_environ

from tests import test_instances
from tests.helpers import REPO, rqscope_command, spawn, stop, wait_for

pytestmark = pytest.mark.redis
needs_rq_3 = pytest.mark.skipif(not rq_reads_prefix(), reason="RQ reads RQ_KEY_PREFIX from 3.0 on")
west_server = test_instances.west_server  # a second redis-server, shared with the instance tests
OPERATOR = "operator-token-0123456789ab"
VIEWER = "viewer-token-0123456789ab"
BILLING = "{billing}"
HOSTILE = "a/b %2F..\n<i>x</i>"
TASKS = "rqscope.tasks.examples,tests.sample_tasks"


def _env(main_url: str, billing_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RQSCOPE_REDIS_URL": f"main={main_url},billing={billing_url}#prefix={BILLING}",
        "RQSCOPE_TASK_MODULES": TASKS,
        "RQSCOPE_API_TOKEN": OPERATOR,
        "RQSCOPE_VIEWER_TOKEN": VIEWER,
        "RQSCOPE_REDIS_TIMEOUT": "1",
        "RQSCOPE_REDIS_CONNECT_TIMEOUT": "1",
        "RQSCOPE_SNAPSHOT_TTL": "0.001",
        **extra,
    }


def _under(prefix: str, script: str, env: dict[str, str]) -> None:
    """Run `script` in a process whose RQ reads `prefix` at import, as the installation's own code does."""
    subprocess.run([sys.executable, "-c", script], env={**env, "RQ_KEY_PREFIX": prefix}, check=True, timeout=60)


ENQUEUE = """
import os
from redis import Redis
from rqscope.tasks.registry import enqueue, import_task_modules
import_task_modules(("tests.sample_tasks",))
r = Redis.from_url(os.environ["URL"])
for i in range(int(os.environ["OK"])):
    enqueue("t_ok", i, connection=r)
for i in range(int(os.environ["FAIL"])):
    enqueue("t_fail", i, connection=r)
from rq import Queue
Queue(os.environ["HOSTILE"], connection=r).enqueue("os.getpid")
"""


def get(base: str, path: str, token: str | None = VIEWER, method: str = "GET", **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, method=method, headers=headers)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if method == "POST":
        request.add_header("Content-Type", "application/json")
        request.data = b"{}"
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:  # not listening yet, or gone
        return 0, b""


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def child_of(serve: subprocess.Popen[bytes]) -> tuple[int, str]:
    """(pid, socket) of the sidecar `serve` started for the other prefix, from its environment."""
    found = _child(serve)
    assert found is not None, "no child sidecar"
    return found


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if any(line.split() == ["PPid:", str(pid)] for line in status.splitlines()):
            found.append(int(entry.name))
    return found


def _child(serve: subprocess.Popen[bytes]) -> tuple[int, str] | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
        socket = next((v.split(b"=", 1)[1] for v in environ if v.startswith(b"RQSCOPE_FRONT_SOCKET=")), None)
        if ppid == serve.pid and socket:
            return int(entry.name), socket.decode()
    return None


def emptied(redis_server: EmbeddedRedis, west_server: EmbeddedRedis) -> tuple[Redis, Redis]:
    """Clients of `main` and `billing`, both emptied; skips before rq 3, which reads no RQ_KEY_PREFIX."""
    if not rq_reads_prefix():
        pytest.skip("RQ reads RQ_KEY_PREFIX from 3.0 on")
    main, billing = Redis.from_url(redis_server.url), Redis.from_url(west_server.url)
    main.flushall()
    billing.flushall()
    return main, billing


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, west_server: EmbeddedRedis) -> Iterator[dict[str, Any]]:
    main, billing = emptied(redis_server, west_server)
    env = _env(redis_server.url, west_server.url)
    _under("rq", ENQUEUE, {**env, "URL": redis_server.url, "OK": "2", "FAIL": "0", "HOSTILE": "main-only"})
    _under(BILLING, ENQUEUE, {**env, "URL": west_server.url, "OK": "5", "FAIL": "1", "HOSTILE": HOSTILE})
    for prefix, name in (("rq", "main"), (BILLING, "billing")):
        worker = rqscope_command("worker", "--burst", "--redis", name, "default")
        subprocess.run(worker, env={**env, "RQ_KEY_PREFIX": prefix}, check=True, timeout=120, cwd=REPO)
    port = free_port()
    serve = spawn(rqscope_command("serve"), env={**env, "RQSCOPE_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: json.loads(get(base, "/readyz")[1] or b"{}").get("status") == "ok", timeout=60)
        yield {"base": base, "serve": serve, "main": main, "billing": billing}
    finally:
        stop(serve)
        main.close()
        billing.close()


def test_the_metrics_carry_both_installations_each_family_once(stack: dict[str, Any]) -> None:
    status, body = get(stack["base"], "/metrics", token=None)
    assert status == 200
    found = samples(body)
    jobs = "rqscope_queue_jobs"
    assert found[(jobs, (("queue", "default"), ("redis", "main"), ("state", "finished")))] == 2
    assert found[(jobs, (("queue", "default"), ("redis", "billing"), ("state", "finished")))] == 5
    assert found[(jobs, (("queue", "default"), ("redis", "billing"), ("state", "failed")))] == 1
    assert found[("rqscope_redis_up", (("redis", "main"),))] == 1
    assert found[("rqscope_redis_up", (("redis", "billing"),))] == 1
    helps = [line for line in body.splitlines() if line.startswith(b"# HELP ")]
    assert len(helps) == len(set(helps))
    # the installation's own keys: nothing was read or written under the other's prefix
    assert not stack["billing"].keys("rq:*") and not stack["main"].keys("{billing}:*")


def test_promtool_accepts_the_merged_exposition(stack: dict[str, Any]) -> None:
    promtool = "/usr/bin/promtool"
    if not os.access(promtool, os.X_OK):
        pytest.skip("promtool is not installed")
    body = get(stack["base"], "/metrics", token=None)[1]
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_instances_and_readiness_list_both_in_order(stack: dict[str, Any]) -> None:
    status, body = get(stack["base"], "/api/instances")
    assert status == 200
    listed = json.loads(body)
    assert listed["default"] == "main"
    rows = {row["name"]: row for row in listed["instances"]}
    assert [row["name"] for row in listed["instances"]] == ["main", "billing"]
    assert rows["billing"]["up"] and rows["billing"]["prefix"] == BILLING and rows["billing"]["failed"] == 1
    assert rows["main"]["prefix"] == "rq" and rows["main"]["failed"] == 0
    ready = json.loads(get(stack["base"], "/readyz", token=None)[1])
    assert ready["instances"] == {"main": "ok", "billing": "ok"}
    page = get(stack["base"], "/instances")[1].decode()
    assert 'data-instance="billing"' in page and "served by the sidecar of its RQ key prefix" in page


def test_pages_and_reads_of_the_other_prefix_are_served_read_only_behind_the_front_s_auth(
    stack: dict[str, Any],
) -> None:
    base = stack["base"]
    assert get(base, "/api/queues?redis=billing", token=None)[0] == 401  # judged at the front
    status, body = get(base, "/api/queues?redis=billing")
    assert status == 200
    queues = {q["name"]: q for q in json.loads(body)["queues"]}
    assert queues["default"]["counts"]["failed"] == 1 and HOSTILE in queues
    status, page = get(base, "/?redis=billing", Accept="text/html")
    assert status == 200
    text = page.decode()
    assert 'data-redis="billing"' in text and "?redis=main" not in text  # the default takes no ?redis=
    assert 'href="/?redis=billing"' in text and "main" in text  # the switcher names both
    # a hostile name's own page, relayed with its exact encoding
    status, page = get(base, f"/queues/{encode_segment(HOSTILE)}/queued?redis=billing", Accept="text/html")
    assert status == 200 and b"<i>x</i>" not in page and b"&lt;i&gt;x&lt;/i&gt;" in page


def test_an_action_on_the_other_prefix_runs_there_as_the_caller_with_its_message(stack: dict[str, Any]) -> None:
    base, billing = stack["base"], stack["billing"]
    failed = billing.zrange(f"{BILLING}:failed:default", 0, -1)
    assert len(failed) == 1
    job = failed[0].decode()
    assert get(base, f"/api/jobs/{job}/retry?redis=billing", method="POST")[0] == 403  # a viewer, judged here
    assert billing.zrange(f"{BILLING}:failed:default", 0, -1) == failed
    # a form from a browser signed in as an operator, its message shown on the page it lands on
    jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    sign_in = {"token": OPERATOR, "csrf_token": _csrf(jar.open(base + "/login", timeout=30).read())}
    assert jar.open(base + "/login", data=urllib.parse.urlencode(sign_in).encode(), timeout=30).status == 200
    form_page = jar.open(base + "/queues/default/failed?redis=billing", timeout=30).read()
    landed = jar.open(
        base + "/queues/default/failed/bulk?redis=billing",
        data=urllib.parse.urlencode({"action": "retry", "csrf_token": _csrf(form_page)}).encode(),
        timeout=30,
    )
    assert landed.status == 200 and "redis=billing" in landed.url
    assert "Retried 1 job." in landed.read().decode()
    assert billing.zrange(f"{BILLING}:failed:default", 0, -1) == []
    assert billing.lrange(f"{BILLING}:queue:default", 0, -1) == failed  # under its own prefix, by RQ's own retry
    entry = billing.xrevrange(f"{BILLING}:rqscope:audit", count=1)[0][1]
    assert entry[b"action"] == b"retry" and entry[b"who"] != b"front"
    assert not stack["main"].exists("rqscope:audit") or not any(
        e[1][b"action"] == b"retry" for e in stack["main"].xrange("rqscope:audit")
    )
    # the same signed-in browser, a form without the CSRF token: refused at the front, nothing emptied
    with pytest.raises(urllib.error.HTTPError) as refused:
        jar.open(base + "/queues/default/queued/bulk?redis=billing", data=b"action=empty", timeout=30)
    assert refused.value.code == 403
    assert billing.llen(f"{BILLING}:queue:default") == 1


def test_an_api_enqueue_on_the_other_prefix_lands_under_it(stack: dict[str, Any]) -> None:
    base, billing = stack["base"], stack["billing"]
    body = json.dumps({"task": "t_ok", "args": [21], "queue": "q1"}).encode()
    request = urllib.request.Request(
        base + "/api/tasks?redis=billing",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202 and "Set-Cookie" not in response.headers  # a script's call opens no session
        job = json.loads(response.read())["id"]
    assert billing.lrange(f"{BILLING}:queue:q1", 0, -1) == [job.encode()]
    assert not stack["main"].exists("rq:queue:q1")
    status, found = get(base, f"/api/tasks/{job}?redis=billing")
    assert status == 200 and json.loads(found)["status"] == "queued"
    assert get(base, f"/api/tasks/{job}")[0] == 404  # not a job of the default instance


def test_a_batch_larger_than_the_default_body_limit_is_relayed_whole(stack: dict[str, Any]) -> None:
    items = [{"task": "send_email", "args": [f"u{i}@example.com", "report", "x" * 900]} for i in range(100)]
    body = json.dumps({"tasks": items}).encode()
    assert 64 * 1024 < len(body) < 4 * 1024 * 1024  # over RQSCOPE_MAX_BODY_BYTES, under RQSCOPE_MAX_BATCH_BYTES
    request = urllib.request.Request(
        stack["base"] + "/api/tasks/batch?redis=billing",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        ids = json.loads(response.read())["ids"]
    assert len(ids) == 100 and all(stack["billing"].exists(f"{BILLING}:job:{job}") for job in ids)


def _csrf(page: bytes) -> str:
    found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "no form on the page"
    return found.group(1).decode()


def test_the_child_serves_only_its_front(stack: dict[str, Any]) -> None:
    _, socket_path = child_of(stack["serve"])
    assert os.stat(os.path.dirname(socket_path)).st_mode & 0o077 == 0  # no other user may reach the socket
    for headers in ({}, {"X-Rqscope-Front": "guess"}):
        connection = UnixConnection(socket_path, 30)
        connection.request("GET", "/metrics", headers=headers)
        assert connection.getresponse().status == 403
        connection.close()
    # a caller cannot pass itself off as the front through the front
    status, _ = get(stack["base"], "/api/queues?redis=billing", token=None, **{"X-Rqscope-Front": "guess"})
    assert status == 401


def test_a_child_that_dies_is_shown_down_alone_then_started_again(stack: dict[str, Any]) -> None:
    base = stack["base"]
    pid, _ = child_of(stack["serve"])
    for dead in (pid, *_children_of(pid)):  # its gunicorn master and worker, at once: a crash
        os.kill(dead, signal.SIGKILL)
    found = samples(get(base, "/metrics", token=None)[1])
    assert found[("rqscope_redis_up", (("redis", "billing"),))] == 0
    assert found[("rqscope_redis_up", (("redis", "main"),))] == 1
    assert get(base, "/api/queues?redis=billing")[0] == 502
    assert get(base, "/api/queues")[0] == 200
    wait_for(lambda: (_child(stack["serve"]) or (pid,))[0] != pid, timeout=20)
    wait_for(lambda: get(base, "/api/queues?redis=billing")[0] == 200, timeout=60)


def test_info_reads_each_installation_under_its_own_prefix(stack: dict[str, Any], redis_server, west_server) -> None:
    env = _env(redis_server.url, west_server.url)
    done = subprocess.run(rqscope_command("info", "--json"), env=env, capture_output=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert set(shown) == {"main", "billing"}
    billing = {q["name"]: q["counts"] for q in shown["billing"]["queues"]}
    truth = stack["billing"]
    assert billing["default"]["finished"] == truth.zcard(f"{BILLING}:finished:default") == 5
    assert billing["default"]["failed"] == truth.zcard(f"{BILLING}:failed:default")
    assert billing["default"]["queued"] == truth.llen(f"{BILLING}:queue:default")
    assert {q["name"]: q["counts"]["finished"] for q in shown["main"]["queues"]} == {"default": 2, "main-only": 0}


def test_info_asks_every_other_prefix_at_once_and_shows_them_in_order(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rqscope.web import cli

    both = threading.Barrier(2, timeout=30)

    def elsewhere(args: Any, environ: Any, settings: Settings, members: tuple[Any, ...]) -> tuple[str, bool]:
        both.wait()  # breaks unless the two other prefixes' processes are asked at the same time
        return f"== {members[0].name} ==\n", True

    monkeypatch.setattr(cli, "_info_elsewhere", elsewhere)
    url = redis_server.url
    env = {"RQSCOPE_REDIS_URL": f"main={url},b={url}#prefix={{b}},a={url}#prefix={{a}}"}
    assert cli.main(["info"], env=env) == 0
    shown = capsys.readouterr().out
    assert shown.index("== main ==") < shown.index("== b ==") < shown.index("== a ==")


@needs_rq_3
def test_a_worker_refuses_an_instance_under_another_prefix(redis_server, west_server) -> None:
    env = _env(redis_server.url, west_server.url)
    done = subprocess.run(
        rqscope_command("worker", "--burst", "--redis", "billing"), env=env, capture_output=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 2 and b"start the worker with RQ_KEY_PREFIX={billing}" in done.stderr


@needs_rq_3
def test_the_first_instance_is_this_process_s_and_plain_app_building_refuses_other_prefixes(
    redis_server, west_server
) -> None:
    env = _env(redis_server.url, west_server.url)
    env["RQSCOPE_REDIS_URL"] = f"billing={west_server.url}#prefix={BILLING},main={redis_server.url}"
    done = subprocess.run(rqscope_command("serve"), env=env, capture_output=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and b"the first instance, 'billing'" in done.stderr
    settings = Settings(redis_url=f"main={redis_server.url},billing={west_server.url}#prefix={BILLING}")
    with pytest.raises(RqscopeError, match="rqscope serve"):
        create_app(settings, testing=True)


@needs_rq_3
def test_the_sidecars_stop_with_the_front(redis_server, west_server) -> None:
    port = free_port()
    serve = spawn(rqscope_command("serve"), env=_env(redis_server.url, west_server.url, RQSCOPE_PORT=str(port)))
    try:
        wait_for(lambda: _child(serve), timeout=30)
        pid, socket_path = child_of(serve)
    finally:
        stop(serve)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes(), 20)
    assert not os.path.exists(os.path.dirname(socket_path))


@pytest.mark.skipif(rq_reads_prefix(), reason="this RQ reads RQ_KEY_PREFIX")
def test_before_rq_3_other_prefixes_are_refused_at_start(redis_server, west_server) -> None:
    settings = Settings(redis_url=f"main={redis_server.url},billing={west_server.url}#prefix={BILLING}")
    with pytest.raises(RqscopeError, match="need rq 3.0 or later"):
        plan(settings, {})


def test_a_prefix_s_process_is_given_exactly_its_instances_urls_and_sentinel_masters_alike() -> None:
    urls = f"main=redis://a:1/0,billing=redis://:p%23w,1@b:2/0#prefix={BILLING},pay=redis://c:3/0#prefix={BILLING}"
    masters = f"audit=master-a#prefix={BILLING},ops=master-b"
    environ = {
        "RQSCOPE_REDIS_URL": urls,
        "RQSCOPE_SENTINEL_HOSTS": "s1:26379",
        "RQSCOPE_SENTINEL_MASTER": masters,
        "RQSCOPE_PORT": "9999",
        "RQSCOPE_API_TOKEN": OPERATOR,
    }
    settings = Settings(redis_url=urls, sentinel_hosts=(("s1", 26379),), sentinel_master=masters)
    _, groups = by_prefix("RQSCOPE_REDIS_URL", settings.instances, "rq")
    assert list(groups) == [BILLING] and [i.name for i in groups[BILLING]] == ["billing", "pay", "audit"]
    env = prefix_environ(environ, groups[BILLING])
    assert env["RQ_KEY_PREFIX"] == BILLING and "RQSCOPE_PORT" not in env and env["RQSCOPE_API_TOKEN"] == OPERATOR
    child = Settings(
        redis_url=env["RQSCOPE_REDIS_URL"],
        sentinel_hosts=(("s1", 26379),),
        sentinel_master=env["RQSCOPE_SENTINEL_MASTER"],
    )
    assert child.instances == groups[BILLING]  # the password's '#' and ',' survive, each prefix with its instance


def test_the_settings_a_front_hands_its_child_are_checked() -> None:
    with pytest.raises(SettingsError, match="RQSCOPE_FRONT_TOKEN and RQSCOPE_FRONT_SOCKET are set together"):
        from_env({"RQSCOPE_REDIS_URL": "redis://a:1/0", "RQSCOPE_FRONT_TOKEN": "t"})
    with pytest.raises(SettingsError, match="a child sidecar serves one RQ prefix only"):
        from_env(
            {
                "RQSCOPE_REDIS_URL": f"a=redis://a:1/0,b=redis://b:1/0#prefix={BILLING}",
                "RQSCOPE_FRONT_TOKEN": "t",
                "RQSCOPE_FRONT_SOCKET": "/tmp/x.sock",
            }
        )
    child = from_env({"RQSCOPE_REDIS_URL": "b=redis://b:1/0", "RQSCOPE_FRONT_INSTANCES": " main, b ,,"})
    assert child.front_instances == ("main", "b")
