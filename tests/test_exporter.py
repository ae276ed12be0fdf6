"""GET /metrics: content, escaping, promtool, and behaviour while Redis is down or hanging."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
import time

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.alerts.keys import COUNTS_KEY, count_field
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.monitor.names import metric_label
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import enqueue
from rqscope.tasks.worker import InstrumentedWorker
from rqscope.web import create_app

from tests.conftest import redis_binary

pytestmark = pytest.mark.redis


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample's value; every sample carries the instance it is from, `default` for a single Redis URL."""
    labels.setdefault("redis", "default")
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_metrics_cover_queues_workers_redis_and_tasks(real_client: FlaskClient, real_redis: Redis) -> None:
    for i in range(4):
        enqueue("t_ok", i, connection=real_redis)
    enqueue("t_fail", 0, connection=real_redis)
    InstrumentedWorker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    enqueue("t_ok", 99, connection=real_redis)
    response = real_client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert value(text, "rqscope_redis_up") == 1
    assert value(text, "rqscope_queue_jobs", queue="default", state="queued") == 1
    assert value(text, "rqscope_queue_jobs", queue="default", state="finished") == 4
    assert value(text, "rqscope_queue_jobs", queue="default", state="failed") == 1
    assert value(text, "rqscope_queue_jobs", queue="default", state="canceled") == 0
    assert value(text, "rqscope_task_runs_total", task="t_ok", queue="default", outcome="success") == 4
    assert value(text, "rqscope_task_enqueued_total", task="t_ok", queue="default") == 5
    assert value(text, "rqscope_redis_max_clients") == 10000
    assert (value(text, "rqscope_queue_latency_seconds", queue="default") or 0) >= 0
    assert value(text, "rqscope_snapshot_round_trips") == 2
    assert value(text, "rqscope_scrape_errors_total", cause="redis") == 0
    assert (value(text, "rqscope_scrape_duration_seconds") or 0) > 0


def test_worker_and_pool_metrics_carry_hostname_and_role_only(real_client: FlaskClient, real_redis: Redis) -> None:
    from rqscope.tasks.procstats import publish, sample

    publish(real_redis, sample(real_redis, "worker", name="w-123"), ttl=30)
    real_redis.sadd("rq:workers", "rq:worker:w-123")
    real_redis.hset("rq:worker:w-123", mapping={"state": "idle", "queues": "default", "hostname": "box-1",
                                                 "last_heartbeat": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z",
                                                                                 time.gmtime())})  # fmt: skip
    text = real_client.get("/metrics").get_data(as_text=True)
    assert "w-123" not in text
    assert value(text, "rqscope_workers", state="idle") == 1
    import socket

    host = socket.gethostname()
    assert (value(text, "rqscope_worker_resident_memory_bytes", hostname=host) or 0) > 0
    assert value(text, "rqscope_redis_pool_max_connections", role="worker", hostname=host) is not None
    assert value(text, "rqscope_redis_pool_connections", role="worker", hostname=host, state="in_use") is not None


def test_a_cold_scrape_is_the_snapshots_two_round_trips(real_settings: Settings, real_redis: Redis) -> None:
    from bench.common import CountingConnection, counting_client

    real_redis.hset(COUNTS_KEY, mapping={count_field("hook", "sent"): 2, count_field("hook", "garbage"): 1})
    enqueue("t_ok", 1, connection=real_redis)
    settings = dataclasses.replace(real_settings, snapshot_ttl=1e-9)  # every scrape reads Redis again
    client = create_app(settings, redis=counting_client(str(settings.redis_url)), testing=True).test_client()
    client.get("/metrics")  # the first also loads the read script and reads the cron state
    before = CountingConnection.sends
    text = client.get("/metrics").get_data(as_text=True)
    assert CountingConnection.sends - before == 2  # the alert notification counts come in the snapshot's first
    assert value(text, "rqscope_alert_notifications_total", receiver="hook", result="sent") == 2
    assert value(text, "rqscope_alert_notifications_total", receiver="hook", result="dropped") == 0
    assert value(text, "rqscope_queue_jobs", queue="default", state="queued") == 1


def test_hostile_queue_and_worker_names_are_escaped(real_client: FlaskClient, real_redis: Redis) -> None:
    evil = 'q"\\\n<script>alert(1)</script>é'
    real_redis.sadd("rq:queues", f"rq:queue:{evil}")
    real_redis.rpush(f"rq:queue:{evil}", "job-1")
    real_redis.sadd("rq:workers", 'rq:worker:w"\n')
    real_redis.hset('rq:worker:w"\n', mapping={"state": "busy", "queues": evil, "hostname": 'h"\n'})
    text = real_client.get("/metrics").get_data(as_text=True)
    # the label is the name with its backslash doubled (names.metric_label), then escaped for the text format
    assert value(text, "rqscope_queue_jobs", queue=metric_label(evil), state="queued") == 1
    assert 'queue="q\\"\\\\\\\\\\n<script>' in text


def test_promtool_check_metrics_reports_nothing(real_client: FlaskClient, real_redis: Redis) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; .ci/run installs Debian's prometheus package")
    for i in range(3):
        enqueue("t_ok", i, connection=real_redis)
    InstrumentedWorker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    text = real_client.get("/metrics").get_data()
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b""


def test_redis_stopped_then_restarted(real_settings: Settings) -> None:
    port = free_port()
    server = EmbeddedRedis(port=port, binary=redis_binary()).start()
    settings = real_settings.replace(redis_url=server.url, redis_timeout=1.0, redis_connect_timeout=1.0,
                                     snapshot_ttl=0.01)  # fmt: skip
    client = create_app(settings, testing=True).test_client()
    try:
        assert value(client.get("/metrics").get_data(as_text=True), "rqscope_redis_up") == 1
        server.stop()
        started = time.monotonic()
        response = client.get("/metrics")
        assert time.monotonic() - started < 2.0
        text = response.get_data(as_text=True)
        assert response.status_code == 200 and value(text, "rqscope_redis_up") == 0
        assert value(text, "rqscope_scrape_errors_total", cause="redis") == 1
        assert "rqscope_queue_jobs" not in text
        assert client.get("/readyz").status_code == 503
        server = EmbeddedRedis(port=port, binary=redis_binary()).start()
        time.sleep(0.05)
        assert value(client.get("/metrics").get_data(as_text=True), "rqscope_redis_up") == 1
        assert client.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_hanging_redis_gives_a_bounded_answer_and_no_thread_leak(
    real_settings: Settings, real_redis: Redis, redis_server: EmbeddedRedis
) -> None:
    settings = real_settings.replace(redis_timeout=1.0, snapshot_ttl=0.01)
    client = create_app(settings, testing=True).test_client()
    assert value(client.get("/metrics").get_data(as_text=True), "rqscope_redis_up") == 1
    threads_before = threading.active_count()
    sleeper = Redis.from_url(redis_server.url, socket_timeout=10)
    blocker = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", "3"))
    blocker.start()
    try:
        time.sleep(0.2)
        durations = []
        for _ in range(2):
            started = time.monotonic()
            text = client.get("/metrics").get_data(as_text=True)
            durations.append(time.monotonic() - started)
            assert value(text, "rqscope_redis_up") == 0
        assert max(durations) < 2.0
    finally:
        blocker.join(10)
        sleeper.close()
    time.sleep(0.05)
    assert value(client.get("/metrics").get_data(as_text=True), "rqscope_redis_up") == 1
    assert threading.active_count() == threads_before


def test_fast_exposition_is_byte_identical_to_prometheus_client(real_client: FlaskClient, real_redis: Redis) -> None:
    from prometheus_client import generate_latest
    from rqscope.monitor.exposition import render, render_labelled

    evil = 'q"\n<b>é'  # a backslash is doubled first (names.metric_label): see the test of hostile names
    real_redis.sadd("rq:queues", f"rq:queue:{evil}", "rq:queue:plain")
    real_redis.rpush(f"rq:queue:{evil}", "job-1")
    real_redis.sadd("rq:workers", "rq:worker:w1")
    real_redis.hset("rq:worker:w1", mapping={"state": "busy", "queues": evil, "hostname": 'h"\n'})
    enqueue("t_ok", 1, connection=real_redis)
    InstrumentedWorker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    registry = real_client.application.extensions["rqscope"].first.metrics
    real_client.application.extensions["rqscope"].first.snapshots.ttl = 60  # both renderings see one snapshot

    def without_duration(text: bytes) -> list[bytes]:  # the one sample each scrape sets anew
        return [line for line in text.splitlines() if not line.startswith(b"rqscope_scrape_duration_seconds ")]

    ours, reference = render(registry.collect()), generate_latest(registry)
    assert without_duration(ours) == without_duration(reference)
    assert len(ours.splitlines()) == len(reference.splitlines()) > 100

    # with an instance's label: the same samples, each with redis="east" in its sorted place, one header per family
    labelled = render_labelled([("east", registry.collect()), ("we%s\n", registry.collect())]).decode()
    expected = {
        (name, tuple(sorted({**dict(labels), "redis": "east"}.items()))): v
        for (name, labels), v in samples(reference.decode()).items()
    }
    got = samples(labelled)
    assert {k: v for k, v in got.items() if ("redis", "east") in k[1] and "duration" not in k[0]} == {
        k: v for k, v in expected.items() if "duration" not in k[0]
    }
    assert len([k for k in got if ("redis", "we%s\n") in k[1]]) == len(expected)
    assert labelled.count("# TYPE rqscope_queue_jobs gauge") == 1
    assert 'rqscope_redis_up{redis="east"} 1.0' in labelled
