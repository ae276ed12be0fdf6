"""Queue pause and worker suspension, end to end: a real `rqscope worker` (RQ's forking Worker) on a
real redis-server, driven by monitor.paused as the dashboard and the API drive it."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rqscope.monitor.paused import set_paused, set_suspended
from rqscope.monitor.reader import fetch_snapshot
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import REGISTRY, enqueue_task

from tests.helpers import rqscope_command, running, wait_for

pytestmark = pytest.mark.redis


def put(redis: Redis, queue: str, x: int = 1) -> Job:
    return enqueue_task(REGISTRY.get("t_ok"), [x], {}, connection=redis, queue=queue)[0]


def status(job: Job) -> JobStatus | None:
    return job.get_status(refresh=True)


@contextmanager
def worker(settings: Settings, redis: Redis, name: str, *queues: str) -> Iterator[object]:
    """`rqscope worker` on these queues, yielded once it waits for a job."""
    env = {"RQSCOPE_REDIS_URL": settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with running(rqscope_command("worker", *queues, "--name", name, "--log-level", "WARNING"), env) as process:
        wait_for(lambda: redis.hget(f"rq:worker:{name}", "state") == b"idle", timeout=30)
        yield process


def commands(redis: Redis) -> dict[str, int]:
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def test_a_paused_queue_keeps_its_job_while_the_worker_runs_its_other_queues(
    real_redis: Redis, real_settings: Settings
) -> None:
    set_paused(real_redis, "q1", True, "ops")
    with worker(real_settings, real_redis, "pause-1", "q1", "default"):
        held = put(real_redis, "q1")
        ran = [put(real_redis, "default", x) for x in range(3)]
        wait_for(lambda: all(status(job) == JobStatus.FINISHED for job in ran), timeout=30)
        time.sleep(1.5)  # more than one claim and one blocking wait since the last job
        assert status(held) == JobStatus.QUEUED
        assert real_redis.lrange("rq:queue:q1", 0, -1) == [held.id.encode()]
        assert real_redis.llen("rq:queue:q1:intermediate") == 0  # skipped, not claimed
        assert fetch_snapshot(real_redis).paused == frozenset({"q1"})
        resumed = time.monotonic()
        set_paused(real_redis, "q1", False, "ops")
        wait_for(lambda: status(held) == JobStatus.FINISHED, timeout=10)
        assert time.monotonic() - resumed < 2.5  # the next claim, within about a second
    assert fetch_snapshot(real_redis).paused == frozenset()


def test_a_worker_on_paused_queues_only_idles_quietly_and_stops_on_sigterm(
    real_redis: Redis, real_settings: Settings
) -> None:
    for queue in ("q1", "q2"):
        set_paused(real_redis, queue, True, "ops")
    job = put(real_redis, "q2")
    with worker(real_settings, real_redis, "pause-2", "q1", "q2") as process:
        time.sleep(1.2)
        real_redis.config_resetstat()
        time.sleep(3)
        sent = commands(real_redis)
        claims = sent.get("evalsha", 0) + sent.get("eval", 0)
        assert 1 <= claims <= 5  # about one claim a second, no spinning
        assert "blmove" not in sent and "lmove" not in sent  # nothing to block on: it sleeps
        assert sum(sent.values()) < 40
        assert status(job) == JobStatus.QUEUED
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        assert process.wait(10) == 0  # type: ignore[attr-defined]
        assert time.monotonic() - stopping < 3
    assert real_redis.lrange("rq:queue:q2", 0, -1) == [job.id.encode()]


def test_suspended_workers_take_no_job_until_resumed(real_redis: Redis, real_settings: Settings) -> None:
    with worker(real_settings, real_redis, "suspend-1", "default"):
        time.sleep(0.3)  # inside its blocking wait, where RQ itself would not look at the suspension
        set_suspended(real_redis, True, "ops")
        assert fetch_snapshot(real_redis).suspended
        job = put(real_redis, "default")
        time.sleep(2.5)
        assert status(job) == JobStatus.QUEUED and real_redis.llen("rq:queue:default") == 1
        resumed = time.monotonic()
        set_suspended(real_redis, False, "ops")
        wait_for(lambda: status(job) == JobStatus.FINISHED, timeout=10)
        assert time.monotonic() - resumed < 2.5
    assert not fetch_snapshot(real_redis).suspended


def test_a_suspension_with_a_ttl_ends_by_itself(real_redis: Redis, real_settings: Settings) -> None:
    set_suspended(real_redis, True, "ops", ttl=2)
    assert 0 < real_redis.ttl("rq:suspended") <= 2
    with worker(real_settings, real_redis, "suspend-2", "default"):
        job = put(real_redis, "default")
        wait_for(lambda: status(job) == JobStatus.FINISHED, timeout=15)


def test_a_stock_rq_worker_ignores_the_pause(real_redis: Redis) -> None:
    """What the README says: only `rqscope worker` honours a pause."""
    set_paused(real_redis, "q1", True, "ops")
    job = put(real_redis, "q1")
    Worker([Queue("q1", connection=real_redis)], connection=real_redis).work(burst=True, logging_level="WARNING")
    assert status(job) == JobStatus.FINISHED
