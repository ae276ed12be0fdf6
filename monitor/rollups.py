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
from rqscope.monitor.names import exact
from rqscope.tasks.metrics import BUCKET_LABELS, OUTCOMES, ROLLUP_KEY_TEMPLATE, SEP, TaskStats, total_field
from rqscope.tasks.rq_internals.keys import OWN_FORMAT

HOURLY_KEY_TEMPLATE = OWN_FORMAT + "metrics:h:{hour}"
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


SEP_BYTES = SEP.encode()
OUTCOME_KINDS = {f"o:{o}".encode(): o for o in OUTCOMES}
BUCKET_KINDS = {f"b:{label}".encode(): label for label in BUCKET_LABELS}
TOTAL_FIELDS = [total_field(o) for o in OUTCOMES]


def _number(raw: bytes | str | None) -> float:
    """A count or sum from Redis; anything else (missing, malformed, negative, not finite) is 0."""
    if raw is None:
        return 0.0
    try:
        number = float(raw)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) and number >= 0 else 0.0


def add_totals(into: TaskStats, raw: list[bytes | str | None]) -> None:
    """Add a rollup's per-outcome totals (HMGET of TOTAL_FIELDS, in OUTCOMES order)."""
    for outcome, value in zip(OUTCOMES, raw, strict=True):
        into.outcomes[outcome] += int(_number(value))


def add_fields(
    into: TaskStats, raw: Mapping[bytes | str, bytes | str], task: bytes | None, queue: bytes | None
) -> None:
    """Add one rollup hash's fields for the matching (task, queue) pairs (exact bytes); malformed ones are skipped."""
    for key, value in raw.items():
        parts = (key if isinstance(key, bytes) else exact(key)).split(SEP_BYTES)
        if len(parts) != 3 or (task is not None and parts[0] != task) or (queue is not None and parts[1] != queue):
            continue
        kind = parts[2]
        if kind in OUTCOME_KINDS:
            into.outcomes[OUTCOME_KINDS[kind]] += int(_number(value))
        elif kind in BUCKET_KINDS:
            into.buckets[BUCKET_KINDS[kind]] += int(_number(value))
        elif kind == b"sum":
            into.duration_sum += _number(value)


def read_window(
    redis: Redis, name: str, task: str | None = None, queue: str | None = None, now: float | None = None
) -> Window:
    """The window `name` (a key of WINDOWS) for one task and/or queue (None: all), in one round trip.

    For all tasks and queues only the per-outcome totals are read (five fields a hash, whatever the
    number of tasks); for one task or queue, the whole hashes.
    """
    step, count = WINDOWS[name]
    now = time.time() if now is None else now
    current = int(now // step)
    starts = [(current - count + 1 + i) * step for i in range(count)]
    totals_only = task is None and queue is None
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
            if totals_only:
                pipe.hmget(key, TOTAL_FIELDS)
            else:
                pipe.hgetall(key)
            sources.append(index)
    bins = [TaskStats() for _ in starts]
    wanted_task = None if task is None else exact(task)
    wanted_queue = None if queue is None else exact(queue)
    for index, raw in zip(sources, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(raw, list):
            add_totals(bins[index], raw)
        elif isinstance(raw, dict):
            add_fields(bins[index], raw, wanted_task, wanted_queue)
    return Window(name, step, starts, bins, now)
