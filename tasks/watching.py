"""Tries of a WATCH transaction: a few conflicts, and any number of slot migrations for a while.

A transaction under WATCH fails with WatchError when a watched key changed, and is tried again from its
reads. Keys that keep changing end it after `attempts`. A slot migration on Redis Cluster fails the WATCH
too (SlotMigratingError) without any key changing: those tries do not count, for up to `seconds`, the
time a migration of one installation's slot takes (monitor.cluster FOLLOW_SECONDS).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from redis.exceptions import WatchError
from rqscope.tasks.errors import SlotMigratingError

MIGRATION_SECONDS = 10.0


class WatchTries:
    """`for _ in tries:` runs the transaction; `tries.failed(exc)` after each WatchError."""

    def __init__(self, attempts: int, seconds: float = MIGRATION_SECONDS) -> None:
        self.attempts = attempts
        self.seconds = seconds
        self.conflicts = 0

    def __iter__(self) -> Iterator[int]:
        deadline = time.monotonic() + self.seconds
        tried = 0
        while self.conflicts < self.attempts and (tried < self.attempts or time.monotonic() < deadline):
            tried += 1
            yield tried

    def failed(self, error: WatchError) -> None:
        if not isinstance(error, SlotMigratingError):
            self.conflicts += 1
