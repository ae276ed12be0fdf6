"""What rqscope remembers of each cron scheduler, so that a dead one's jobs stay visible and keep alerting.

RQ drops a scheduler's hash, and with it the definitions of its jobs, 120 s after its last heartbeat, and
`CronScheduler.all(cleanup=True)` drops it from the registry too. A crashed scheduler's jobs would then
vanish before any overdue alert could fire. So the alert leader copies each live scheduler's hash into
`rqscope:cron:seen:<name>` once an evaluation, indexed by its heartbeat in `rqscope:cron:seen`, and the
reader falls back on that copy for a scheduler whose hash is gone. A scheduler that leaves the registry
while its heartbeat is fresh stopped on purpose, and one whose jobs a live scheduler now runs (restarted
under a new name) was replaced: both are forgotten. Anything not heard from for a week is forgotten too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rqscope.monitor.cron import DEAD_AFTER_SECONDS, CronState, job_entries
from rqscope.monitor.names import exact
from rqscope.tasks.rq_internals.keys import OWN

SEEN_KEY = OWN + "cron:seen"  # a sorted set: scheduler name -> its last heartbeat, read capped
COPY_PREFIX = OWN + "cron:seen:"  # + the scheduler's name: its copy, JSON, expiring with FORGET_AFTER
FORGET_AFTER_SECONDS = 7 * 86400.0
MAX_REMEMBERED_BYTES = 64 * 1024  # one scheduler's copy; a larger cron_jobs list is not remembered


@dataclass(frozen=True)
class Remembered:
    """A scheduler as last seen alive: its fields, its jobs' JSON, and its last heartbeat."""

    fields: dict[str, str]
    cron_jobs: str | None
    heartbeat: float


def copy_key(name: str) -> bytes:
    return COPY_PREFIX.encode() + exact(name)


def parse(raw: bytes | str | None) -> Remembered | None:
    """One remembered scheduler; None for anything that is not what `remember` writes."""
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("heartbeat"), (int, float)):
        return None
    given = value.get("fields") if isinstance(value.get("fields"), dict) else {}
    fields = {k: v for k, v in given.items() if isinstance(k, str) and isinstance(v, str)}
    jobs = value.get("cron_jobs")
    return Remembered(fields, jobs if isinstance(jobs, str) else None, float(value["heartbeat"]))


def _forget(pipe: Any, name: str) -> None:
    pipe.zrem(SEEN_KEY, exact(name))
    pipe.delete(copy_key(name))


def remember(redis: Redis, state: CronState) -> None:
    """Copy every live scheduler; forget one stopped on purpose, replaced, or silent for a week. One round trip."""
    if not state.up:
        return
    served = {job.name for job in state.jobs if not job.remembered}  # run by a scheduler RQ still holds
    pipe = redis.pipeline(transaction=False)
    for scheduler in state.schedulers:
        jobs, heartbeat = scheduler.raw_jobs, scheduler.last_heartbeat
        if scheduler.alive and not scheduler.remembered and jobs is not None and heartbeat is not None:
            if len(jobs) <= MAX_REMEMBERED_BYTES:
                copy = {"fields": scheduler.raw_fields, "cron_jobs": jobs, "heartbeat": heartbeat}
                pipe.set(copy_key(scheduler.name), json.dumps(copy), ex=int(FORGET_AFTER_SECONDS))
                pipe.zadd(SEEN_KEY, {exact(scheduler.name): heartbeat})
        elif scheduler.remembered and heartbeat is not None:
            stopped = not scheduler.listed and state.read_at - heartbeat <= DEAD_AFTER_SECONDS
            names = {entry.get("name") or entry.get("func_name") for entry in job_entries(scheduler.raw_jobs)}
            replaced = bool(names) and names <= served  # restarted under a new name, which runs its jobs
            if stopped or replaced:
                _forget(pipe, scheduler.name)
    pipe.zremrangebyscore(SEEN_KEY, "-inf", state.read_at - FORGET_AFTER_SECONDS)
    pipe.execute()
