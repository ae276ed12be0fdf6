"""Three `rqscope serve` processes evaluating alerts against one real Redis, with a real webhook receiver."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from redis import Redis
from rqscope.monitor.alerts.engine import LEASE_KEY
from rqscope.monitor.embedded import EmbeddedRedis, free_port

from tests.helpers import http_status, rqscope_command, spawn, stop, wait_for
from tests.receivers import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]
INTERVAL = 0.5
LEASE_SECONDS = 3 * INTERVAL
RULES = """rules:
  - name: Backlog
    kind: queue_depth
    threshold: 3
    for: 2s
    severity: critical
    summary: "{queue} has {value:.0f} waiting"
"""


REDIS_DOWN = """
  - name: RedisDown
    kind: redis_down
    for: 0s
    severity: critical
    summary: "Redis is down"
"""


@pytest.fixture
def sidecars(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, real_redis: Redis, tmp_path: Path
) -> Iterator[tuple[Receiver, list]]:
    """Three `rqscope serve` processes (two gunicorn workers each) and the webhook they page.

    Parametrize indirectly with extra rules (YAML list items) or extra environment to change them.
    """
    extra = getattr(request, "param", {})
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES + extra.get("rules", ""))
    with Receiver() as receiver:
        env = {
            "RQSCOPE_REDIS_URL": redis_server.url,
            "RQSCOPE_ALERT_RULES": str(rules),
            "RQSCOPE_ALERT_INTERVAL": str(INTERVAL),
            "RQSCOPE_ALERT_WEBHOOK_URLS": receiver.url,
            "RQSCOPE_SNAPSHOT_TTL": "0.1",
            "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
            "RQSCOPE_LOG_LEVEL": "WARNING",
            **extra.get("env", {}),
        }
        processes = []
        try:
            for _ in range(3):
                port = free_port()
                processes.append(spawn(rqscope_command("serve", "--port", str(port), "--web-workers", "2"), env))
                wait_for(lambda p=port: http_status(f"http://127.0.0.1:{p}/healthz") == 200, timeout=30)
            yield receiver, processes
        finally:
            for process in processes:
                stop(process)


def fill(redis: Redis, count: int) -> None:
    redis.sadd("rq:queues", "rq:queue:default")
    redis.rpush("rq:queue:default", *[f"job-{i}" for i in range(count)])


def leader_process(redis: Redis, processes: list) -> object:  # type: ignore[type-arg]
    holder = wait_for(lambda: redis.get(LEASE_KEY), timeout=10)
    pid = int(holder.decode().split(":")[1])  # type: ignore[union-attr]
    for process in processes:
        if pid == process.pid or pid in {c.pid for c in psutil.Process(process.pid).children(recursive=True)}:
            return process
    raise AssertionError(f"no serve process holds the lease {holder!r}")


def test_one_firing_one_resolved_across_a_leader_crash(sidecars, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    receiver, processes = sidecars
    fill(real_redis, 10)
    wait_for(lambda: receiver.statuses(), timeout=30)
    time.sleep(3)  # six more evaluation rounds across three processes and six gunicorn workers
    assert receiver.statuses() == ["firing"]
    leader = leader_process(real_redis, processes)
    holder = real_redis.get(LEASE_KEY)
    for child in psutil.Process(leader.pid).children(recursive=True):  # type: ignore[attr-defined]
        os.kill(child.pid, signal.SIGKILL)
    os.kill(leader.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    killed_at = time.monotonic()
    real_redis.delete("rq:queue:default")
    wait_for(lambda: real_redis.get(LEASE_KEY) not in (None, holder), timeout=10, interval=0.02)
    # the lease (3 intervals, 1.5 s) runs out, then the next tick of another process takes it
    assert time.monotonic() - killed_at < LEASE_SECONDS + INTERVAL + 1.0  # 1 s for a loaded CI machine
    wait_for(lambda: len(receiver.statuses()) == 2, timeout=30)
    time.sleep(2)
    assert receiver.statuses() == ["firing", "resolved"]
    assert receiver.bodies[0]["alerts"][0]["fingerprint"] == receiver.bodies[1]["alerts"][0]["fingerprint"]


@pytest.mark.timeout(400)
def test_receiver_down_for_two_minutes_gets_the_notification_once(sidecars, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    receiver, _ = sidecars
    receiver.down = True
    fill(real_redis, 10)
    wait_for(lambda: real_redis.zcard("rqscope:alerts:outbox") == 1, timeout=30)
    time.sleep(120)
    assert receiver.statuses() == []
    receiver.down = False
    wait_for(lambda: receiver.statuses(), timeout=90)
    time.sleep(3)
    assert receiver.statuses() == ["firing"] and real_redis.zcard("rqscope:alerts:outbox") == 0


BACKLOG = ("Backlog", (("alertname", "Backlog"), ("queue", "default"), ("redis", "default"), ("severity", "critical")))
DOWN = ("RedisDown", (("alertname", "RedisDown"), ("redis", "default"), ("severity", "critical")))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sidecars", [{"rules": REDIS_DOWN, "env": {"RQSCOPE_REDIS_TIMEOUT": "1"}}], indirect=True)
def test_redis_paused_longer_than_the_lease_pages_each_transition_once(sidecars, redis_server, real_redis) -> None:  # type: ignore[no-untyped-def]
    receiver, _ = sidecars
    sleeper = Redis.from_url(redis_server.url, socket_timeout=30)

    def ended(alert: tuple[str, tuple[tuple[str, str], ...]], count: int) -> bool:
        statuses = receiver.transitions().get(alert, [])
        return len(statuses) >= count and statuses[-1] == "resolved"

    fill(real_redis, 10)
    wait_for(lambda: receiver.statuses() == ["firing"], timeout=30)
    # the backlog clears, and every process's Redis stalls for more than three leases (1.5 s each)
    real_redis.delete("rq:queue:default")
    sleeper.execute_command("DEBUG", "SLEEP", 5)
    wait_for(lambda: ended(BACKLOG, 2) and ended(DOWN, 2), timeout=60)
    # a new backlog is pending (`for: 2s`) when Redis stalls again; it fires after, then clears
    fill(real_redis, 10)
    time.sleep(1.5)
    sleeper.execute_command("DEBUG", "SLEEP", 5)
    wait_for(lambda: receiver.transitions().get(BACKLOG, [])[2:] == ["firing"], timeout=60)
    real_redis.delete("rq:queue:default")
    wait_for(lambda: ended(BACKLOG, 4) and ended(DOWN, 4), timeout=60)
    time.sleep(3)  # six more evaluation and delivery rounds: nothing else arrives
    assert receiver.transitions() == {BACKLOG: ["firing", "resolved"] * 2, DOWN: ["firing", "resolved"] * 2}
    sleeper.close()
