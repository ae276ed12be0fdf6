"""Queue depth and latency, one point a minute per queue, recorded by the alert leader.

Each queue has a list of "<minute> <queued> <latency seconds>" points (the key holds the queue
name's exact bytes, whatever they are), trimmed to MAX_POINTS and expiring HISTORY_TTL_SECONDS after
the last point, so a deleted queue's history goes away by itself. At most MAX_QUEUES queues are
recorded, those with the most queued jobs first, so that a flood of queue names cannot grow Redis
without bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from rqscope.monitor.alerts.keys import LEASE_KEY
from rqscope.monitor.names import exact
from rqscope.monitor.snapshot import QueueState
from rqscope.tasks.rq_internals.keys import OWN

QUEUE_HISTORY_PREFIX = (OWN + "history:queue:").encode()
LAST_MINUTE_KEY = OWN + "history:minute"  # the last minute recorded: a second leader in it adds nothing
MAX_QUEUES = 200
MAX_POINTS = 24 * 60 + 10
HISTORY_TTL_SECONDS = 25 * 3600
WINDOWS = {"1h": 60, "24h": 24 * 60}

# KEYS[1]: the alert lease, KEYS[2]: the last recorded minute, KEYS[3..]: one list per queue.
# ARGV[1]: the lease token, ARGV[2]: this minute, ARGV[3]: max points, ARGV[4]: TTL, ARGV[5..]: each
# queue's point, in KEYS order. Returns -1 when another process leads, 0 when this minute was recorded
# already, 1 when this call recorded it.
RECORD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if tonumber(redis.call('GET', KEYS[2]) or '-1') >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
for i = 3, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[i + 2])
  redis.call('LTRIM', KEYS[i], -tonumber(ARGV[3]), -1)
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return 1
"""


def history_key(queue: str) -> bytes:
    return QUEUE_HISTORY_PREFIX + exact(queue)


def record(pipe: Pipeline, token: str, queues: Sequence[QueueState], minute: int) -> None:
    """Queue this minute's point of each queue (the MAX_QUEUES deepest) on `pipe`."""
    chosen = sorted(queues, key=lambda q: (-q.queued, q.name))[:MAX_QUEUES]
    keys: list[str | bytes] = [LEASE_KEY, LAST_MINUTE_KEY, *(history_key(q.name) for q in chosen)]
    points = [f"{minute} {q.queued} {q.latency_seconds:.3f}" for q in chosen]
    pipe.eval(RECORD, len(keys), *keys, token, minute, MAX_POINTS, HISTORY_TTL_SECONDS, *points)


@dataclass
class QueueHistory:
    """One point per minute of the window, oldest first; None where nothing was recorded."""

    window: str
    t: list[int]
    queued: list[int | None]
    latency_seconds: list[float | None]


def _point(raw: bytes | str) -> tuple[int, int, float] | None:
    try:
        minute, queued, latency = raw.split()
        value = (int(minute), int(queued), float(latency))
    except ValueError:
        return None
    return value if math.isfinite(value[2]) and value[1] >= 0 else None


def read(redis: Redis, queue: str, window: str, now: float | None = None) -> QueueHistory:
    """The queue's points in the window (a key of WINDOWS), in one round trip."""
    count = WINDOWS[window]
    current = int((time.time() if now is None else now) // 60)
    first = current - count + 1
    minutes = list(range(first, current + 1))
    queued: list[int | None] = [None] * count
    latency: list[float | None] = [None] * count
    for raw in redis.lrange(history_key(queue), -count - 5, -1):  # type: ignore[union-attr]
        point = _point(raw)
        if point is not None and first <= point[0] <= current:
            queued[point[0] - first], latency[point[0] - first] = point[1], point[2]
    return QueueHistory(window, [m * 60 for m in minutes], queued, latency)
