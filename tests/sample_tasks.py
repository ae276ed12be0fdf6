"""Tasks used by the tests; importable by forked horses and by worker subprocesses."""

from __future__ import annotations

import os
import signal
import time

from rq import Retry

from tasks.registry import task


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
