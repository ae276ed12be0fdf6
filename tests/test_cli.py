"""The rqscope command line: flags, help, bad values, and the demo end to end."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from redis import Redis
from rqscope.web.cli import build_parser, main, settings_from
from rqscope.web.serve import KEEPALIVE_REQUESTS
from werkzeug.security import generate_password_hash

from tests.helpers import http_status, rqscope_command, spawn, stop, wait_for


@pytest.mark.parametrize("command", [[], ["serve"], ["worker"], ["demo"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"], env={})
    assert info.value.code == 0
    assert "usage: rqscope" in capsys.readouterr().out


def test_flags_override_environment() -> None:
    args = build_parser().parse_args(["serve", "--port", "8000", "--redis-url", "redis://flag:1/0"])
    settings = settings_from(args, {"RQSCOPE_PORT": "7000", "RQSCOPE_REDIS_URL": "redis://env:1/0"})
    assert settings.port == 8000 and settings.redis_url == "redis://flag:1/0"


def test_environment_is_used_without_flags() -> None:
    args = build_parser().parse_args(["serve"])
    assert settings_from(args, {"RQSCOPE_PORT": "7000", "RQSCOPE_REDIS_URL": "redis://e:1"}).port == 7000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "99999", "--redis-url", "redis://h"], "RQSCOPE_PORT"),
        (["serve", "--redis-url", "mysql://h"], "RQSCOPE_REDIS_URL"),
        (["serve", "--redis-url", "redis://h", "--no-auth", "--host", "0.0.0.0"], "RQSCOPE_NO_AUTH"),
        (["worker", "--redis-timeout", "-3", "--redis-url", "redis://h"], "RQSCOPE_REDIS_TIMEOUT"),
        (["worker", "--log-level", "chatty", "--redis-url", "redis://h"], "RQSCOPE_LOG_LEVEL"),
        (["demo", "--workers", "0"], "--workers"),
        (["demo", "--rate", "1e9"], "--rate"),
        (["demo", "--duration", "-1"], "--duration"),
        (["demo", "--port", "70000"], "RQSCOPE_PORT"),
    ],
)
def test_bad_flags_exit_2_with_a_one_line_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("rqscope: error:") and message in err and err.count("\n") == 1


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["explode"], env={})
    assert info.value.code == 2


def test_password_in_bad_url_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--redis-url", "http://u:topsecret@h"], env={}) == 2
    assert "topsecret" not in capsys.readouterr().err


@pytest.mark.redis
@pytest.mark.slow
def test_serve_runs_under_gunicorn(redis_server) -> None:  # type: ignore[no-untyped-def]
    from rqscope.monitor.embedded import free_port

    port = free_port()
    env = {"RQSCOPE_REDIS_URL": redis_server.url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    process = spawn(rqscope_command("serve", "--port", str(port), "--web-workers", "2"), env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(url + "/readyz") == 200, timeout=30)
        request = urllib.request.Request(
            url + "/api/tasks", data=b'{"task": "t_ok"}', headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
        # a keep-alive connection is closed after KEEPALIVE_REQUESTS requests, so connections spread over workers
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        answers = []
        for _ in range(KEEPALIVE_REQUESTS):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            answers.append(response.getheader("Connection", ""))
        connection.close()
        assert answers[-1].lower() == "close" and "close" not in (a.lower() for a in answers[:-1])
    finally:
        stop(process)
    assert process.returncode is not None


@pytest.mark.slow
def test_demo_serves_processes_jobs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    from rqscope.monitor.embedded import free_port

    port = free_port()
    demo = spawn(
        rqscope_command("demo", "--port", str(port), "--rate", "20"),
        # credentials in the user's environment do not reach the demo's --no-auth sidecar
        {
            "TMPDIR": str(tmp_path),
            "RQSCOPE_VIEWER_TOKEN": "viewer-token-0123456789ab",
            "RQSCOPE_USERS": f"ops:operator:{generate_password_hash('pw')}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a terminal of its own: Ctrl-C signals the whole foreground group
    )
    try:
        assert demo.stdout is not None
        banner = demo.stdout.readline().decode()
        assert f"http://127.0.0.1:{port}/" in banner
        redis_url = re.search(r"Redis at (\S+)", demo.stdout.readline().decode())
        assert redis_url
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200, timeout=30)
        redis = Redis.from_url(redis_url.group(1), socket_timeout=2)
        wait_for(lambda: int(redis.hlen("rqscope:metrics")) > 0 and _finished(redis) >= 5, timeout=40)
        children = psutil.Process(demo.pid).children(recursive=True)
        assert len(children) >= 4  # redis, 2 workers, the sidecar (+ its gunicorn worker)
        os.killpg(demo.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert demo.wait(30) == 0
        time.sleep(0.5)
        assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
        # the workers stopped while Redis was still up: none waited for it or was killed
        logs = "".join(path.read_text() for path in tmp_path.glob("rqscope-demo-*/worker-*.log"))
        assert "Redis unavailable" not in logs and "could not connect" not in logs and "cold shut down" not in logs
    finally:
        stop(demo)


def _finished(redis: Redis) -> int:
    return sum(int(redis.zcard(f"rq:finished:{q}")) for q in ("high", "default", "low"))


@pytest.mark.redis
def test_info_shows_queues_latency_and_dead_workers(real_redis: Redis, redis_server, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from rqscope.tasks.registry import enqueue

    job = enqueue("t_ok", 1, connection=real_redis)
    real_redis.hset(job.key, "enqueued_at", "2020-01-01T00:00:00.000000Z")
    real_redis.sadd("rq:workers", "rq:worker:ghost", "rq:worker:\x1b[31mred")
    assert main(["info", "--redis-url", redis_server.url], env={}) == 0
    out = capsys.readouterr().out
    assert "default" in out and "! no workers" in out and "! dead" in out and "ghost" in out
    assert "\x1b" not in out  # terminal escapes from Redis data are neutralised
    assert main(["info", "--json", "--redis-url", redis_server.url], env={}) == 0
    data = json.loads(capsys.readouterr().out)
    queue = data["queues"][0]
    assert queue["name"] == "default" and queue["counts"]["queued"] == 1 and queue["no_workers"] is True
    assert queue["latency_seconds"] > 3600 * 24 * 300
    assert {w["name"] for w in data["workers"] if w["dead"]} == {"ghost", "\x1b[31mred"}


@pytest.mark.redis
def test_info_interval_repeats(redis_server, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["info", "--json", "--interval", "0.1", "--count", "3", "--redis-url", redis_server.url]
    assert main(argv, env={}) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


@pytest.mark.parametrize("argv", [["--interval", "0"], ["--interval", "nan"], ["--interval", "1", "--count", "0"]])
def test_info_rejects_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", *argv, "--redis-url", "redis://127.0.0.1:1"], env={}) == 2
    assert "rqscope: error:" in capsys.readouterr().err


def test_info_with_redis_down_says_so_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--redis-url", "redis://127.0.0.1:1", "--redis-connect-timeout", "0.5"], env={}) == 1
    assert "unreachable" in capsys.readouterr().out


def test_serve_refuses_a_bad_rules_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.yml"
    rules.write_text("rules:\n  - name: A\n    kind: queue_depth\n    for: later\n")
    argv = ["serve", "--redis-url", "redis://127.0.0.1:1", "--alert-rules", str(rules)]
    assert main(argv, env={}) == 2
    assert f"{rules}:4: for: 'later' is not a duration" in capsys.readouterr().err


def test_rqscope_processes_it_starts_import_the_installed_package_from_within_a_checkout(tmp_path: Path) -> None:
    from rqscope.web.children import cli_command

    # `pip install . && rqscope demo` in a checkout: its `rqscope/` folder is in the working directory, which
    # `python -m` would put first on the module path of the demo's, the front's and `info`'s processes
    (tmp_path / "rqscope").mkdir()
    (tmp_path / "rqscope" / "__init__.py").write_text("raise ImportError('the checkout, not the installed package')\n")
    done = subprocess.run(cli_command("info", "--help"), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--json" in done.stdout, done.stderr
