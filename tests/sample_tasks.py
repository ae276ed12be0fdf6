"""Tasks used by the tests; importable by forked horses and by worker subprocesses."""

from __future__ import annotations

import os
import signal
import time

from rq import Retry
from rqscope.tasks.registry import task


@task(queue="default", queues=("q1", "q2", "other"))
def t_ok(x: int = 0) -> int:
    return x * 2


@task(queue="default", queues=("q1", "q2"))
def t_fail(x: int = 0) -> None:
    raise KeyError(f"missing {x}")


@task(queue="default", retry=Retry(max=1))
def t_flaky() -> None:
    raise RuntimeError("always fails, retried once")


@task(queue="default")
def t_self_kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@task(queue="default", timeout=1)
def t_slow(seconds: float = 5.0) -> None:
    time.sleep(seconds)


@task(queue="default")
def t_sleep(seconds: float = 30.0) -> str:
    time.sleep(seconds)
    return "woke"


@task(queue="default")
def t_fail_first(key: str) -> str:
    """Fails on its first run and succeeds after a retry; the count lives in Redis."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    if job.connection.incr(key) == 1:
        raise RuntimeError("first run fails")
    return "second run ok"


def _mark_run() -> int:
    """Count this job's runs in the Redis named by RQSCOPE_TEST_MARK_URL, on a link of its own."""
    from redis import Redis
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    with Redis.from_url(os.environ["RQSCOPE_TEST_MARK_URL"]) as redis:
        return int(redis.incr(f"ran:{job.id}"))


@task(queue="default", queues=("high",))
def t_marked() -> str:
    _mark_run()
    return "ok"


@task(queue="default", retry=Retry(max=1))
def t_marked_fails_once() -> str:
    if _mark_run() == 1:
        raise RuntimeError("first run fails; RQ retries it")
    return "second run ok"
