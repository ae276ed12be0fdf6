"""Faults injected into the running stack: real redis-server, `rqscope serve`, forking `rqscope worker`s.

Each scenario asserts invariants (where every job ended, what was counted, what on-call was sent),
never timings. The alert-delivery scenarios (receiver down for two minutes, leader killed) are in
tests/test_alert_e2e.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from bench.load import Scraper, Stack, enqueue_all, exported_runs, job_bodies, reconcile, settled
from monitor.embedded import EmbeddedRedis
from tests.conftest import redis_binary
from tests.helpers import wait_for
from tests.receivers import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]
REDIS_DOWN_RULE = """rules:
  - name: RedisDown
    kind: redis_down
    for: 1s
    severity: critical
    summary: Redis is unreachable
"""


@pytest.fixture
def persistent_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(binary=redis_binary(), extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    yield server
    server.stop()


def alert_env(tmp_path: Path, receiver: Receiver, rules: str) -> dict[str, str]:
    (tmp_path / "rules.yml").write_text(rules)
    return {"RQSCOPE_ALERT_RULES": str(tmp_path / "rules.yml"), "RQSCOPE_ALERT_INTERVAL": "0.5",
            "RQSCOPE_ALERT_WEBHOOK_URLS": receiver.url, "RQSCOPE_SNAPSHOT_TTL": "0.2"}  # fmt: skip


def finished_count(redis: Redis) -> int:
    return sum(redis.zcard(f"rq:finished:{q}") + redis.zcard(f"rq:failed:{q}") for q in ("high", "default", "low"))


@pytest.mark.timeout(300)
def test_redis_restarted_mid_load(persistent_redis: EmbeddedRedis, tmp_path: Path) -> None:
    redis = Redis.from_url(persistent_redis.url, socket_timeout=5)
    jobs = 1500
    with Receiver() as receiver, Stack(persistent_redis.url, 2, alert_env(tmp_path, receiver, REDIS_DOWN_RULE),
                                       logs=tmp_path) as stack:  # fmt: skip
        scraper = Scraper(stack, interval=0.25)
        scraper.start()
        results = []
        producer = threading.Thread(
            target=lambda: results.append(enqueue_all(stack.url, job_bodies(jobs, seconds=0.005), clients=4))
        )
        producer.start()
        wait_for(lambda: finished_count(redis) >= 200, timeout=60)
        persistent_redis.halt()
        wait_for(lambda: 0.0 in scraper.up, timeout=30)
        wait_for(lambda: receiver.statuses() == ["firing"], timeout=30)
        persistent_redis.start()
        producer.join(180)
        wait_for(lambda: settled(redis), timeout=120, interval=0.2)
        wait_for(lambda: len(receiver.statuses()) >= 2, timeout=30)
        wait_for(lambda: scraper.up[-1] == 1.0, timeout=10)
        scraper.stop()
        alive = {name: process.poll() is None for name, process in stack.workers.items()}
        # a scrape may serve a snapshot up to RQSCOPE_SNAPSHOT_TTL old
        wait_for(lambda: sum(exported_runs(stack.url).values()) >= jobs, timeout=10, interval=0.2)
        runs = exported_runs(stack.url)
        logs = stack.logs_text()
    reconciliation = reconcile(redis, [f"load-{n}" for n in range(jobs)])
    assert results and sorted(set(results[0].accepted)) == sorted(f"load-{n}" for n in range(jobs))
    assert (reconciliation.missing, reconciliation.duplicated, reconciliation.not_terminal) == ([], [], [])
    assert alive == {"load-0": True, "load-1": True}, logs[-3000:]
    assert sum(runs.values()) == jobs
    assert receiver.statuses() == ["firing", "resolved"], receiver.bodies
    assert [alert["labels"]["alertname"] for body in receiver.bodies for alert in body["alerts"]] == ["RedisDown"] * 2
