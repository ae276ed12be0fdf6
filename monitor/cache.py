"""Reads shared by every viewer, scrape and alert check for a short interval: the snapshot, the cron state and
Redis INFO each cost one read per interval, whatever the number of callers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from redis import Redis
from rqscope.monitor.reader import SnapshotReader
from rqscope.monitor.snapshot import DEFAULT_WORKER_TTL_SECONDS, Snapshot

T = TypeVar("T")


class TtlCache(Generic[T]):
    """Returns the last value of `read` while it is younger than `ttl`; one thread reads at a time, and the
    others take its answer instead of reading again. A read that reports an outage is cached like any other."""

    def __init__(self, read: Callable[[], T], ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self.fetches = 0
        self._lock = threading.Lock()
        self._value: T | None = None
        self._fetched_at = 0.0

    def _fresh(self) -> T | None:
        if self._value is not None and self.clock() - self._fetched_at < self.ttl:
            return self._value
        return None

    def invalidate(self) -> None:
        """Forget the value: this process just changed what it shows, and its next reader must see that."""
        with self._lock:
            self._value = None

    def get(self) -> T:
        value = self._fresh()
        if value is not None:
            return value
        with self._lock:
            value = self._fresh()  # another thread may have refreshed while this one waited
            if value is not None:
                return value
            value = self.read()
            self.fetches += 1
            self._value, self._fetched_at = value, self.clock()
            return value


class SnapshotCache(TtlCache[Snapshot]):
    """The Redis snapshot, read by a SnapshotReader (or `fetch`) at most once per `ttl`."""

    def __init__(
        self,
        redis: Redis,
        ttl: float,
        worker_ttl: float = DEFAULT_WORKER_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[], Snapshot] | None = None,
    ) -> None:
        super().__init__(fetch or SnapshotReader(redis, worker_ttl).fetch, ttl, clock)
