"""Read several Redis instances at once, so that the slowest one, not the sum, sets the wait."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Fanout:
    """Runs one read per instance on a small thread pool and waits at most `timeout` for all of them.

    A read still running at the deadline is left to finish on its own (its Redis socket timeout ends it) and
    is reported as None; the callers show that instance as unreachable and every other as read.
    """

    def __init__(self, timeout: float, threads: int = 8) -> None:
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rqscope-fanout")

    def each(self, items: Mapping[str, T], read: Callable[[T], R]) -> dict[str, R | None]:
        """{name: read(item)} in the items' order; None where the read raised or did not finish in time."""
        if len(items) == 1:  # nothing to overlap: no thread hop on the common single-instance path
            ((name, item),) = items.items()
            return {name: _guarded(read, name, item)}
        futures = {name: self._pool.submit(_guarded, read, name, item) for name, item in items.items()}
        wait(futures.values(), timeout=self.timeout)
        results: dict[str, R | None] = {}
        for name, future in futures.items():
            if future.done():
                results[name] = future.result()
            else:
                log.warning("Redis instance %s did not answer within %.1f s", name, self.timeout)
                results[name] = None
        return results


def _guarded(read: Callable[[T], R], name: str, item: T) -> R | None:
    try:
        return read(item)
    except Exception:  # one instance's failure is its own: the others are still served
        log.exception("reading Redis instance %s failed", name)
        return None
