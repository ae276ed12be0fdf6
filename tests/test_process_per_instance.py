"""RQSCOPE_PROCESS_PER_INSTANCE: `rqscope serve` reads the first instance itself and each other one in a sidecar
process of its own, so that one instance's reads and shaping never share a process (nor a GIL) with another's.

Two real Redis servers under RQ's default prefix, `main` and `east`; one `rqscope serve` watches both.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.monitor.settings import Settings, from_env
from rqscope.tasks.errors import SettingsError
from rqscope.web.children import plan

from tests import test_instances
from tests.helpers import REPO, rqscope_command, spawn, stop, wait_for
from tests.test_prefixes import _child, _children_of, get, samples

west_server = test_instances.west_server  # a second redis-server, shared with the instance tests
OPERATOR = "operator-token-0123456789ab"
VIEWER = "viewer-token-0123456789ab"


def test_the_setting_is_a_boolean_named_in_its_error() -> None:
    assert from_env({"RQSCOPE_PROCESS_PER_INSTANCE": "yes"}).process_per_instance
    assert not from_env({}).process_per_instance
    with pytest.raises(SettingsError, match="RQSCOPE_PROCESS_PER_INSTANCE='maybe' must be true or false"):
        from_env({"RQSCOPE_PROCESS_PER_INSTANCE": "maybe"})


def test_each_instance_after_the_first_gets_a_process_of_its_own_whatever_its_prefix() -> None:
    urls = "main=redis://a:1/0,east=redis://b:2/0,west=redis://c:3/0"
    assert plan(Settings(redis_url=urls), {}) is None  # one prefix: one process, as before
    children = plan(Settings(redis_url=urls, process_per_instance=True), {})
    assert children is not None
    try:
        assert [child.names for child in children.children] == [("east",), ("west",)]
        assert [child.prefix for child in children.children] == ["rq", "rq"]
        assert len({child.socket for child in children.children}) == 2
        assert children.environ["RQSCOPE_FRONT_INSTANCES"] == "main,east,west"
    finally:
        shutil.rmtree(children.directory)
    assert plan(Settings(redis_url="redis://a:1/0", process_per_instance=True), {}) is None  # one instance


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, west_server: EmbeddedRedis) -> Iterator[dict[str, Any]]:
    main, east = Redis.from_url(redis_server.url), Redis.from_url(west_server.url)
    for client, jobs in ((main, 2), (east, 5)):
        client.flushall()
        for i in range(jobs):
            Queue("default", connection=client).enqueue("os.getpid", job_id=f"job-{i}")
    port = free_port()
    env = {
        "RQSCOPE_REDIS_URL": f"main={redis_server.url},east={west_server.url}",
        "RQSCOPE_PROCESS_PER_INSTANCE": "true",
        "RQSCOPE_TASK_MODULES": "rqscope.tasks.examples,tests.sample_tasks",
        "RQSCOPE_API_TOKEN": OPERATOR,
        "RQSCOPE_VIEWER_TOKEN": VIEWER,
        "RQSCOPE_REDIS_TIMEOUT": "1",
        "RQSCOPE_REDIS_CONNECT_TIMEOUT": "1",
        "RQSCOPE_SNAPSHOT_TTL": "0.001",
        "RQSCOPE_PORT": str(port),
    }
    serve = spawn(rqscope_command("serve"), env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: json.loads(get(base, "/readyz")[1] or b"{}").get("status") == "ok", timeout=60)
        yield {"base": base, "serve": serve, "main": main, "east": east}
    finally:
        stop(serve)
        main.close()
        east.close()


def _environ(pid: int) -> dict[str, str]:
    pairs = (entry.split(b"=", 1) for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in entry)
    return {key.decode(): value.decode() for key, value in pairs}


def test_the_second_instance_is_read_by_a_process_given_only_its_url(stack: dict[str, Any], west_server) -> None:
    found = _child(stack["serve"])
    assert found is not None
    environ = _environ(found[0])
    assert environ["RQSCOPE_REDIS_URL"] == f"east={west_server.url}#prefix=rq"
    assert environ["RQ_KEY_PREFIX"] == "rq"


def test_metrics_and_reads_of_both_are_true_to_each_redis(stack: dict[str, Any]) -> None:
    base = stack["base"]
    status, body = get(base, "/metrics", token=None)
    assert status == 200
    found = samples(body)
    assert body.count(b'rqscope_redis_up{redis="east"}') == 1  # read by its own process only, not by the front too
    for name, jobs in (("main", 2), ("east", 5)):
        assert found[("rqscope_redis_up", (("redis", name),))] == 1
        assert found[("rqscope_queue_jobs", (("queue", "default"), ("redis", name), ("state", "queued")))] == jobs
    queues = {name: json.loads(get(base, f"/api/queues?redis={name}")[1]) for name in ("main", "east")}
    assert [q["counts"]["queued"] for q in queues["main"]["queues"]] == [2]
    assert [q["counts"]["queued"] for q in queues["east"]["queues"]] == [5]
    listed = json.loads(get(base, "/api/instances")[1])["instances"]
    assert [(row["name"], row["up"]) for row in listed] == [("main", True), ("east", True)]


def test_an_api_enqueue_on_the_second_instance_lands_in_its_redis_only(stack: dict[str, Any]) -> None:
    body = json.dumps({"task": "t_ok", "args": [21], "queue": "q1"}).encode()
    request = urllib.request.Request(
        stack["base"] + "/api/tasks?redis=east",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        job = json.loads(response.read())["id"]
    assert stack["east"].lrange("rq:queue:q1", 0, -1) == [job.encode()]
    assert not stack["main"].exists("rq:queue:q1")


def test_the_second_instance_s_process_dying_leaves_the_first_served_then_it_is_started_again(
    stack: dict[str, Any],
) -> None:
    base = stack["base"]
    found = _child(stack["serve"])
    assert found is not None
    pid = found[0]
    for dead in (pid, *_children_of(pid)):  # its gunicorn master and worker, at once: a crash
        os.kill(dead, signal.SIGKILL)
    shown = samples(get(base, "/metrics", token=None)[1])
    assert shown[("rqscope_redis_up", (("redis", "east"),))] == 0
    assert shown[("rqscope_redis_up", (("redis", "main"),))] == 1
    assert get(base, "/api/queues?redis=east")[0] == 502
    assert get(base, "/api/queues?redis=main")[0] == 200
    wait_for(lambda: (_child(stack["serve"]) or (pid,))[0] != pid, timeout=20)
    wait_for(lambda: get(base, "/api/queues?redis=east")[0] == 200, timeout=60)


def test_plain_gunicorn_ignores_it_and_reads_both_itself(redis_server, west_server) -> None:
    """Only `rqscope serve` starts processes: the app factory, as plain gunicorn runs it, serves both instances."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RQSCOPE_REDIS_URL": f"main={redis_server.url},east={west_server.url}",
        "RQSCOPE_PROCESS_PER_INSTANCE": "1",
        "RQSCOPE_NO_AUTH": "1",
    }
    script = "from rqscope.web import create_app; print(sorted(create_app().extensions['rqscope'].instances))"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['east', 'main']"
