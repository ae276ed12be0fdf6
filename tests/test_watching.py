"""Tries of a WATCH transaction: conflicts end it after a few, a slot migration only after a while."""

from __future__ import annotations

import time

from redis.exceptions import WatchError
from rqscope.tasks.errors import SlotMigratingError
from rqscope.tasks.watching import WatchTries


def test_keys_that_keep_changing_end_it_after_the_attempts() -> None:
    tries = WatchTries(5, seconds=60)
    ran = 0
    for _ in tries:
        ran += 1
        tries.failed(WatchError("a watched key changed"))
    assert ran == 5


def test_a_migration_is_waited_out_for_its_seconds_then_ends_it() -> None:
    tries = WatchTries(5, seconds=0.3)
    started, ran = time.monotonic(), 0
    for _ in tries:
        ran += 1
        tries.failed(SlotMigratingError("slot 1 is migrating"))
        time.sleep(0.01)
    assert ran > 5 and 0.3 <= time.monotonic() - started < 2


def test_a_success_ends_it_at_once_and_a_migration_then_a_conflict_still_count_right() -> None:
    tries = WatchTries(2, seconds=60)
    outcomes = iter([SlotMigratingError("moving"), WatchError("changed"), None])
    ran = 0
    for _ in tries:
        ran += 1
        error = next(outcomes)
        if error is None:
            break
        tries.failed(error)
    assert ran == 3 and tries.conflicts == 1
