"""Per-minute task rollups: throughput, failures and mean duration over the last minutes."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from redis import Redis
from rqscope.tasks.metrics import OUTCOMES, ROLLUP_KEY_TEMPLATE, SEP

FAILED_OUTCOMES = ("failure", "timeout", "killed")


@dataclass
class Minute:
    """What finished during one minute, for one task (or all of them)."""

    start: int
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    duration_sum: float = 0.0

    @property
    def runs(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return sum(self.outcomes[o] for o in FAILED_OUTCOMES)


@dataclass
class Series:
    """Minutes oldest first, per task name and for all tasks together."""

    minutes: list[int]
    total: list[Minute]
    by_task: dict[str, list[Minute]]
    by_queue: dict[str, list[Minute]] = field(default_factory=dict)

    def window(self, task: str | None, last: int, now: float | None = None) -> tuple[int, int, float]:
        """(runs, failed, seconds) over the current minute and the `last` - 1 before it."""
        series = self.total if task is None else self.by_task.get(task, [])
        chosen = series[-last:]
        if not chosen:
            return 0, 0, 60.0
        elapsed = (time.time() if now is None else now) - chosen[-1].start
        seconds = 60.0 * (len(chosen) - 1) + min(max(elapsed, 1.0), 60.0)
        return sum(m.runs for m in chosen), sum(m.failed for m in chosen), seconds


def read_series(redis: Redis, minutes: int = 60, now: float | None = None) -> Series:
    """The last `minutes` minutes (the current, partial one last) in one round trip."""
    current = int((time.time() if now is None else now) // 60)
    starts = list(range(current - minutes + 1, current + 1))
    pipe = redis.pipeline(transaction=False)
    for minute in starts:
        pipe.hgetall(ROLLUP_KEY_TEMPLATE.format(minute=minute))
    total = [Minute(m * 60) for m in starts]
    by_task: dict[str, list[Minute]] = defaultdict(lambda: [Minute(m * 60) for m in starts])
    by_queue: dict[str, list[Minute]] = defaultdict(lambda: [Minute(m * 60) for m in starts])
    for index, raw in enumerate(pipe.execute(raise_on_error=False)):
        if not isinstance(raw, dict):
            continue
        for key, value in raw.items():
            parts = (key.decode("utf-8", "replace") if isinstance(key, bytes) else key).split(SEP)
            if len(parts) != 3:
                continue
            task, queue, kind = parts
            try:
                number = float(value)
            except ValueError:
                continue
            for bucket in (total[index], by_task[task][index], by_queue[queue][index]):
                if kind.startswith("o:") and kind[2:] in bucket.outcomes:
                    bucket.outcomes[kind[2:]] += int(number)
                elif kind == "sum":
                    bucket.duration_sum += number
    return Series([m * 60 for m in starts], total, dict(by_task), dict(by_queue))
