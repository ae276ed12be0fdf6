"""Run rollups over a chart window: per-minute hashes for the last hours, per-hour hashes before that.

Workers add each run to the hash of its minute (tasks/metrics.py); the alert leader folds every
finished hour into one hourly hash (monitor/compaction.py). A window is read in one pipelined round
trip, whatever its length: 15 min and 1 h from minutes, 24 h and 7 d as hours, the hours older than
the last two from the hourly hashes and those two (the current one, and the one just finished that may
not be folded yet) summed from their minutes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis
from rqscope.tasks.metrics import ROLLUP_KEY_TEMPLATE, SEP, TaskStats

HOURLY_KEY_TEMPLATE = "rqscope:metrics:h:{hour}"
HOURLY_TTL_SECONDS = 8 * 86400
# window name -> (bin seconds, number of bins); the last bin is the current, partial one
WINDOWS: dict[str, tuple[int, int]] = {"15m": (60, 15), "1h": (60, 60), "24h": (3600, 24), "7d": (3600, 168)}


@dataclass
class Window:
    """Rollups of one window: bins oldest first, each a TaskStats summed over the chosen tasks and queues."""

    name: str
    step: int
    starts: list[int]
    bins: list[TaskStats]
    now: float

    def seconds(self, index: int) -> float:
        """How long bin `index` has lasted: its step, or for the current bin the time elapsed in it."""
        if index < len(self.starts) - 1:
            return float(self.step)
        return min(max(self.now - self.starts[index], 1.0), float(self.step))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def add_fields(into: TaskStats, raw: Mapping[bytes | str, bytes | str], task: str | None, queue: str | None) -> None:
    """Add one rollup hash's fields for the matching (task, queue) pairs; malformed fields are skipped."""
    for raw_key, raw_value in raw.items():
        parts = _text(raw_key).split(SEP)
        if len(parts) != 3 or (task is not None and parts[0] != task) or (queue is not None and parts[1] != queue):
            continue
        try:
            number = float(_text(raw_value))
        except ValueError:
            continue
        if not math.isfinite(number) or number < 0:
            continue
        kind = parts[2]
        if kind.startswith("o:") and kind[2:] in into.outcomes:
            into.outcomes[kind[2:]] += int(number)
        elif kind.startswith("b:") and kind[2:] in into.buckets:
            into.buckets[kind[2:]] += int(number)
        elif kind == "sum":
            into.duration_sum += number


def read_window(
    redis: Redis, name: str, task: str | None = None, queue: str | None = None, now: float | None = None
) -> Window:
    """The window `name` (a key of WINDOWS) for one task and/or queue (None: all), in one round trip."""
    step, count = WINDOWS[name]
    now = time.time() if now is None else now
    current = int(now // step)
    starts = [(current - count + 1 + i) * step for i in range(count)]
    pipe = redis.pipeline(transaction=False)
    sources: list[int] = []  # for each command, the bin it adds to
    for index, start in enumerate(starts):
        if step == 60:
            keys = [ROLLUP_KEY_TEMPLATE.format(minute=start // 60)]
        elif index >= count - 2:
            keys = [ROLLUP_KEY_TEMPLATE.format(minute=start // 60 + m) for m in range(60)]
        else:
            keys = [HOURLY_KEY_TEMPLATE.format(hour=start // 3600)]
        for key in keys:
            pipe.hgetall(key)
            sources.append(index)
    bins = [TaskStats() for _ in starts]
    for index, raw in zip(sources, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(raw, dict):
            add_fields(bins[index], raw, task, queue)
    return Window(name, step, starts, bins, now)
