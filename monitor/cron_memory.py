"""What rqscope remembers of each cron scheduler, so that a dead one's jobs stay visible and keep alerting.

RQ drops a scheduler's hash, and with it the definitions of its jobs, 120 s after its last heartbeat, and
`CronScheduler.all(cleanup=True)` drops it from the registry too. A crashed scheduler's jobs would then
vanish before any overdue alert could fire. So the alert leader copies each live scheduler's hash into
`rqscope:cron:seen` (one field per scheduler) once an evaluation, and the reader falls back on that copy
for a scheduler whose hash is gone. A scheduler that leaves the registry while its heartbeat is fresh
stopped on purpose: it is forgotten. Anything not heard from for a week is forgotten too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rqscope.monitor.cron import DEAD_AFTER_SECONDS, CronState
from rqscope.monitor.names import as_name, exact

SEEN_KEY = "rqscope:cron:seen"
FORGET_AFTER_SECONDS = 7 * 86400.0
MAX_REMEMBERED_BYTES = 64 * 1024  # one scheduler's copy; a larger cron_jobs list is not remembered


@dataclass(frozen=True)
class Remembered:
    """A scheduler as last seen alive: its fields, its jobs' JSON, and its last heartbeat."""

    fields: dict[str, str]
    cron_jobs: str | None
    heartbeat: float


def parse(raw: bytes | str | None) -> Remembered | None:
    """One remembered scheduler; None for anything that is not what `remember` writes."""
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("heartbeat"), (int, float)):
        return None
    fields = {k: v for k, v in (value.get("fields") or {}).items() if isinstance(k, str) and isinstance(v, str)}
    jobs = value.get("cron_jobs")
    return Remembered(fields, jobs if isinstance(jobs, str) else None, float(value["heartbeat"]))


def remember(redis: Redis, state: CronState) -> None:
    """Copy every live scheduler's state; forget those stopped on purpose or silent for a week. One round trip."""
    if not state.up:
        return
    pipe = redis.pipeline(transaction=False)
    for scheduler in state.schedulers:
        if scheduler.alive and scheduler.listed and scheduler.raw_jobs is not None:
            if len(scheduler.raw_jobs) <= MAX_REMEMBERED_BYTES and scheduler.last_heartbeat is not None:
                copy = {
                    "fields": scheduler.raw_fields,
                    "cron_jobs": scheduler.raw_jobs,
                    "heartbeat": scheduler.last_heartbeat,
                }
                pipe.hset(SEEN_KEY, exact(scheduler.name), json.dumps(copy))
        elif not scheduler.listed and scheduler.last_heartbeat is not None:
            gone_while_alive = state.read_at - scheduler.last_heartbeat <= DEAD_AFTER_SECONDS
            if gone_while_alive or state.read_at - scheduler.last_heartbeat > FORGET_AFTER_SECONDS:
                pipe.hdel(SEEN_KEY, exact(scheduler.name))
    if pipe.command_stack:
        pipe.execute()


def remembered_names(raw: Any) -> list[str]:
    return [as_name(name) for name in raw or ()]
