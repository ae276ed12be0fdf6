"""Riding out a Redis outage, and a blocking wait for a job that a stop request can end.

A worker waits for Redis with a capped backoff instead of quitting. A stop request is honoured
between attempts and between slices of the blocking wait for a job, never while a popped job is
in flight: RQ raised it from the signal handler wherever the worker was, including between the
pop and the fetch of a job, which then was in no queue and no registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import DequeueTimeout, StopRequested

REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
OUTAGE_BACKOFF_CAP = 30.0
STOP_CHECK_SECONDS = 1  # the longest a worker waiting for a job (or for Redis) takes to see a stop request
T = TypeVar("T")
log = logging.getLogger(__name__)
_stop_requested: ContextVar[Callable[[], bool] | None] = ContextVar("rqscope_stop_requested", default=None)


def never() -> bool:
    return False


def wait_out(step: Callable[..., T], *args: Any, log_as: str = "", give_up: Callable[[], bool] = never) -> T:
    """Run a Redis step, retrying with a capped backoff while Redis is unavailable.

    `give_up` is asked between attempts; when it answers True the wait ends with StopRequested.
    """
    wait = 0.5
    while True:
        try:
            return step(*args)
        except REDIS_UNAVAILABLE as exc:
            if give_up():
                raise StopRequested() from exc
            log.warning("%sRedis unavailable (%s); retrying in %.1f s", log_as, exc, wait)
            resume = time.monotonic() + wait
            while (left := resume - time.monotonic()) > 0:
                time.sleep(min(left, STOP_CHECK_SECONDS))
                if give_up():
                    raise StopRequested() from exc
            wait = min(wait * 2, OUTAGE_BACKOFF_CAP)


@contextmanager
def stoppable(stop_requested: Callable[[], bool]) -> Iterator[None]:
    """Within this block StoppableQueue's blocking wait for a job ends with StopRequested once
    `stop_requested()` answers True (checked at least every STOP_CHECK_SECONDS)."""
    token = _stop_requested.set(stop_requested)
    try:
        yield
    finally:
        _stop_requested.reset(token)


def in_slices(pop: Callable[[int | None], Any], timeout: int | None) -> Any:
    """RQ's blocking pop, as a series of short pops with a stop check before each one.

    A stop request only ever ends the wait before a pop is sent, so nothing popped is dropped.
    """
    stop_requested = _stop_requested.get()
    if timeout is None or stop_requested is None:
        return pop(timeout)
    deadline = time.monotonic() + timeout
    while True:
        if stop_requested():
            raise StopRequested()
        try:
            return wait_out(pop, STOP_CHECK_SECONDS, give_up=stop_requested)
        except DequeueTimeout:
            if time.monotonic() >= deadline:
                raise
