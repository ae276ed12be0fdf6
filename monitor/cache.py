"""A snapshot shared by every viewer, scrape and alert check for a short interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from redis import Redis
from rqscope.monitor.reader import SnapshotReader
from rqscope.monitor.snapshot import DEFAULT_WORKER_TTL_SECONDS, Snapshot


class SnapshotCache:
    """Returns the last snapshot while it is younger than `ttl`; one thread refreshes at a time."""

    def __init__(
        self,
        redis: Redis,
        ttl: float,
        worker_ttl: float = DEFAULT_WORKER_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[], Snapshot] | None = None,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.fetch = fetch or SnapshotReader(redis, worker_ttl).fetch
        self.fetches = 0
        self._lock = threading.Lock()
        self._value: Snapshot | None = None
        self._fetched_at = 0.0

    def _fresh(self) -> Snapshot | None:
        if self._value is not None and self.clock() - self._fetched_at < self.ttl:
            return self._value
        return None

    def get(self) -> Snapshot:
        value = self._fresh()
        if value is not None:
            return value
        with self._lock:
            value = self._fresh()  # another thread may have refreshed while this one waited
            if value is not None:
                return value
            value = self.fetch()
            self.fetches += 1
            self._value, self._fetched_at = value, self.clock()
            return value
