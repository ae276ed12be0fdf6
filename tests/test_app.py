"""The app factory only builds: no thread, no Redis write, no demo state; start() and serve start the rest."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from redis import Redis
from rqscope.monitor.alerts.engine import LEASE_KEY
from rqscope.monitor.embedded import free_port
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.settings import Settings
from rqscope.tasks.procstats import PROCS_KEY
from rqscope.web import create_app
from rqscope.web.app import start
from rqscope.web.session_key import SECRET_KEY, keep_making
from rqscope.web.state import EXTENSION

from tests.helpers import http_status, spawn, stop, wait_for


def test_factory_starts_no_thread_and_writes_nothing(real_settings: Settings, real_redis: Redis) -> None:
    threads = set(threading.enumerate())
    before = real_redis.info("commandstats")
    create_app(real_settings)
    assert set(threading.enumerate()) == threads
    after = real_redis.info("commandstats")
    assert {k for k in after if after[k] != before.get(k)} <= {"cmdstat_info"}  # nothing sent but these reads
    assert real_redis.dbsize() == 0


def test_session_key_is_made_by_start_and_only_read_by_requests(real_settings: Settings, real_redis: Redis) -> None:
    first, second = create_app(real_settings), create_app(real_settings)
    first.test_client().get("/login")
    assert real_redis.get(SECRET_KEY) is None  # a request never writes it
    stop = start(first)
    try:
        second.test_client().get("/login")
        assert second.secret_key == real_redis.get(SECRET_KEY)
    finally:
        stop()


def test_session_key_is_made_once_redis_answers(real_settings: Settings, real_redis: Redis) -> None:
    stopped = threading.Event()
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    assert keep_making(real_redis, stopped) is None  # made at once
    real_redis.delete(SECRET_KEY)
    thread = keep_making(down, stopped)
    assert thread is not None and thread.is_alive()
    stopped.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_start_runs_the_publisher_and_the_alert_leader(real_settings: Settings, real_redis: Redis) -> None:
    app = create_app(real_settings.replace(alert_interval=0.2, publish_interval=0.2))
    stop = start(app)
    try:
        wait_for(lambda: real_redis.exists(LEASE_KEY) and real_redis.zcard(PROCS_KEY) >= 1, timeout=10)
    finally:
        stop()


def test_processes_forked_from_one_app_lead_as_themselves(
    real_settings: Settings, real_redis: Redis
) -> None:
    app = create_app(real_settings.replace(alert_interval=0.2, publish_interval=60))
    built = app.extensions[EXTENSION].alerts.holder
    reader, writer = os.pipe()
    child = os.fork()  # as gunicorn's preload_app forks its workers from one app
    if child == 0:
        stop = start(app)
        os.write(writer, app.extensions[EXTENSION].alerts.holder.encode())
        stop()
        os._exit(0)
    os.close(writer)
    stop = start(app)
    try:
        theirs = os.read(reader, 200).decode()
        ours = app.extensions[EXTENSION].alerts.holder
        assert len({built, theirs, ours}) == 3
        wait_for(lambda: real_redis.get(LEASE_KEY) in (ours.encode(), theirs.encode()), timeout=10)
    finally:
        stop()
        os.waitpid(child, 0)


def test_factory_never_reads_the_demos_redis_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    from rqscope.monitor.embedded import demo_state_dir, demo_url_file

    demo_state_dir().mkdir()
    demo_url_file().write_text("redis://127.0.0.1:6399/0")
    monkeypatch.delenv("RQSCOPE_REDIS_URL", raising=False)
    with pytest.raises(SettingsError, match="RQSCOPE_REDIS_URL is not set"):
        create_app()


@pytest.mark.slow
def test_plain_gunicorn_with_the_shipped_config_starts_alerting(redis_server, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {
        "RQSCOPE_REDIS_URL": redis_server.url,
        "RQSCOPE_ALERT_INTERVAL": "0.5",
        "RQSCOPE_NO_AUTH": "true",
        "RQSCOPE_PORT": str(port),
        "RQSCOPE_WEB_WORKERS": "1",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "python:rqscope.web.gunicorn_conf", "rqscope.web:create_app()"]
    process = spawn(command, env)
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, timeout=30)
        wait_for(lambda: real_redis.exists(LEASE_KEY), timeout=10)
    finally:
        stop(process)
