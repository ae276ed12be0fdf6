"""Read several Redis instances at once, so that the slowest one, not the sum, sets the wait."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Fanout:
    """Runs one read per instance on a thread pool and waits at most `timeout` for all of them.

    At most one read of each kind is in flight per instance: a caller arriving while one runs waits for that
    one instead of queueing another. So a hung instance holds one thread per kind until its Redis socket
    timeout ends the read, and never a queue of reads that the other instances' reads would wait behind.
    A read still running at the deadline is reported as None (unreachable); every other instance is read.
    """

    def __init__(self, timeout: float, threads: int = 8) -> None:
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rqscope-fanout")
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], Future[Any]] = {}

    def each(self, items: Mapping[str, T], read: Callable[[T], R], kind: str = "") -> dict[str, R | None]:
        """{name: read(item)} in the items' order; None where the read raised or did not finish in time.

        `kind` names what `read` does (reads of one kind share an instance's running read).
        """
        if len(items) == 1:  # nothing to overlap: no thread hop on the common single-instance path
            ((name, item),) = items.items()
            return {name: _guarded(read, name, item)}
        futures = {name: self._start(kind, name, read, item) for name, item in items.items()}
        wait(futures.values(), timeout=self.timeout)
        results: dict[str, R | None] = {}
        for name, future in futures.items():
            if future.done():
                results[name] = future.result()
            else:
                log.warning("Redis instance %s did not answer within %.1f s", name, self.timeout)
                results[name] = None
        return results

    def calls(self, calls: Mapping[str, Callable[[], R]], kind: str = "") -> dict[str, R | None]:
        """{name: call()} of zero-argument reads of different sorts, at once, as `each` reads."""
        return self.each(calls, _call, kind)

    def _start(self, kind: str, name: str, read: Callable[[T], R], item: T) -> Future[R | None]:
        with self._lock:
            running = self._running.get((kind, name))
            if running is not None and not running.done():
                return running
            future = self._pool.submit(_guarded, read, name, item)
            self._running[(kind, name)] = future
            return future


def _call(read: Callable[[], R]) -> R:
    return read()


def _guarded(read: Callable[[T], R], name: str, item: T) -> R | None:
    try:
        return read(item)
    except Exception:  # one instance's failure is its own: the others are still served
        log.exception("reading Redis instance %s failed", name)
        return None
