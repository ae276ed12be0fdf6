"""Riding out a Redis outage: a worker waits for Redis with a capped backoff instead of quitting.

A stop request is honoured between attempts (the `give_up` check), never in the middle of one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import StopRequested
from rqscope.tasks.backoff import backoff

REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
OUTAGE_BACKOFF_CAP = 30.0
STOP_CHECK_SECONDS = 1  # the longest a worker waiting for a job (or for Redis) takes to see a stop request
T = TypeVar("T")
log = logging.getLogger(__name__)


def never() -> bool:
    return False


def wait_out(step: Callable[..., T], *args: Any, log_as: str = "", give_up: Callable[[], bool] = never) -> T:
    """Run a Redis step, retrying with a capped backoff while Redis is unavailable.

    `give_up` is asked between attempts; when it answers True the wait ends with StopRequested.
    """
    attempt = 0
    while True:
        try:
            return step(*args)
        except REDIS_UNAVAILABLE as exc:
            if give_up():
                raise StopRequested() from exc
            wait = backoff(attempt, 0.5, OUTAGE_BACKOFF_CAP)
            attempt += 1
            log.warning("%sRedis unavailable (%s); retrying in %.1f s", log_as, exc, wait)
            resume = time.monotonic() + wait
            while (left := resume - time.monotonic()) > 0:
                time.sleep(min(left, STOP_CHECK_SECONDS))
                if give_up():
                    raise StopRequested() from exc
