"""Riding out a Redis outage: retry a step with a capped backoff, and keep a job popped as Redis went away."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue

REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
OUTAGE_BACKOFF_CAP = 30.0
T = TypeVar("T")
log = logging.getLogger(__name__)


def wait_out(step: Callable[..., T], *args: Any, log_as: str = "") -> T:
    """Run a Redis step, retrying with a capped backoff while Redis is unavailable."""
    wait = 0.5
    while True:
        try:
            return step(*args)
        except REDIS_UNAVAILABLE as exc:
            log.warning("%sRedis unavailable (%s); retrying in %.1f s", log_as, exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, OUTAGE_BACKOFF_CAP)


class ClaimingQueue(Queue):
    """A Queue whose dequeue keeps a job it has popped even when Redis goes away before the fetch.

    With more than one queue RQ pops the id (LPOP) and then reads the job; an outage between the
    two would leave the job in no queue and no registry. Here the fetch waits for Redis instead.
    """

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls, queues: Any, timeout: int | None, connection: Any, *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return super().dequeue_any(queues, timeout, connection, *args, **kwargs)
        except REDIS_UNAVAILABLE as exc:
            job_id, queue = getattr(exc, "job_id", None), getattr(exc, "queue", None)
            if job_id is None or queue is None:
                raise  # nothing was popped
            log.warning("Redis went away while job %s was being dequeued; keeping it", job_id)
            job = wait_out(queue.fetch_job, job_id, log_as=f"dequeued job {job_id}: ")
            return (job, queue) if job is not None else None
