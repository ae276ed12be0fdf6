"""The task the load test and the chaos scenarios run: a little work, an optional failure or sleep."""

from __future__ import annotations

import time

from rqscope.tasks.registry import task


@task(queue="default", queues=("high", "default", "low"))
def load_step(n: int, fail: bool = False, seconds: float = 0.0) -> int:
    if seconds:
        time.sleep(seconds)
    if fail:
        raise ValueError(f"step {n} failed on purpose")
    return sum(range(n % 1000))
