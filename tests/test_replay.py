"""Writes replayed after a lost reply: a connection dropped right after Redis ran a transaction.

A small TCP proxy sits between `rqscope worker` and redis-server and drops the link once the
transaction that records a job's outcome has reached Redis, before its reply gets back.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable

import pytest
from redis import Redis
from rqscope.monitor.reader import fetch_snapshot
from rqscope.tasks.registry import REGISTRY, enqueue, enqueue_task

from bench import ledger
from tests.helpers import rqscope_command, spawn, stop
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def outcome_transaction(data: bytes) -> bool:
    """The horse's transaction that records a job's outcome, which carries its run."""
    return b"EXEC" in data and b"rqscope:metrics" in data


def run_burst_through(proxy: TcpProxy, redis_server, *queues: str) -> None:  # type: ignore[no-untyped-def]
    env = {
        "RQSCOPE_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
        "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
        "RQSCOPE_TEST_MARK_URL": redis_server.url,
        "RQSCOPE_LOG_LEVEL": "WARNING",
    }
    worker = spawn(rqscope_command("worker", *queues, "--burst"), env, stdout=subprocess.DEVNULL)
    try:
        assert worker.wait(timeout=120) == 0
    finally:
        stop(worker)


def runs(redis: Redis) -> dict[str, int]:
    totals: dict[str, int] = {}
    for stats in fetch_snapshot(redis).tasks.values():
        for outcome, count in stats.outcomes.items():
            totals[outcome] = totals.get(outcome, 0) + count
    return {outcome: count for outcome, count in totals.items() if count}


def ran(redis: Redis, ids: list[str]) -> list[int]:
    return [int(redis.get(f"ran:{job_id}") or 0) for job_id in ids]


def test_a_success_whose_reply_is_lost_is_counted_once(redis_server, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    ids = [enqueue("t_marked", connection=real_redis).id for _ in range(20)]
    with TcpProxy(redis_server.port) as proxy:
        proxy.cut_after(outcome_transaction, times=4)
        run_burst_through(proxy, redis_server, "default")
        assert proxy.cuts == 4
    assert ran(real_redis, ids) == [1] * 20  # no job ran twice
    assert runs(real_redis) == {"success": 20}
    assert ledger.misplaced(real_redis, ids) == {}


def test_a_retried_failure_whose_reply_is_lost_is_requeued_once(redis_server, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    ids = [enqueue("t_marked_fails_once", connection=real_redis).id for _ in range(6)]
    with TcpProxy(redis_server.port) as proxy:
        # the first six outcome transactions are the failures that RQ retries: each pushes its job again
        proxy.cut_after(outcome_transaction, times=6)
        run_burst_through(proxy, redis_server, "default")
        assert proxy.cuts == 6
    assert ran(real_redis, ids) == [2] * 6  # the failed run and its one retry, never a third
    assert runs(real_redis) == {"retried": 6, "success": 6}
    assert ledger.misplaced(real_redis, ids) == {}


def every_other_dequeue() -> Callable[[bytes], bool]:
    """Every other time the worker takes a job off its queues (RQ's BLPOP or LPOP, or rqscope's claim)."""
    seen = itertools.count()

    def matches(data: bytes) -> bool:
        dequeue = any(command in data for command in (b"BLPOP", b"LPOP", b"LMOVE", b"rqscope-claim"))
        return dequeue and next(seen) % 2 == 0

    return matches


def test_a_dequeue_whose_reply_is_lost_keeps_the_job(redis_server, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    spec = REGISTRY.get("t_marked")
    ids = [enqueue_task(spec, (), {}, connection=real_redis, queue=queue)[0].id for queue in ("high", "default") * 10]
    with TcpProxy(redis_server.port) as proxy:
        proxy.cut_after(every_other_dequeue(), times=5)
        run_burst_through(proxy, redis_server, "high", "default")
        assert proxy.cuts == 5
    assert ran(real_redis, ids) == [1] * 20  # every job ran, once
    assert runs(real_redis) == {"success": 20}
    assert ledger.misplaced(real_redis, ids, queues=("high", "default")) == {}
    assert not real_redis.keys("rq:worker:*:rqscope-claim")  # every claim was cleared as its job started
