"""RQ's cron as on-call reads it: schedulers, their cron jobs and how late each one is. Pure: no I/O here.

A CronScheduler heartbeats into `<prefix>:cron_schedulers` (a sorted set scored by the last heartbeat)
and keeps `<prefix>:cron_scheduler:<name>`, a hash whose `cron_jobs` field is the JSON list of its jobs
with `cron`/`interval`, `latest_enqueue_time` and `next_enqueue_time`. RQ refreshes that hash's TTL
(120 s) on each heartbeat, so a dead scheduler's jobs stay readable for about two minutes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rq
from croniter import croniter
from rqscope.monitor.names import from_json
from rqscope.monitor.snapshot import parse_time

# rq 3 heartbeats at least once a minute (its longest sleep); rq drops the hash 120 s after the last one
DEAD_AFTER_SECONDS = 90.0
# rq 3 reads cron strings in the local time of the scheduler's host; rq 2 read them in UTC
LOCAL_CRON = int(rq.__version__.split(".")[0]) >= 3
MAX_CRON_TEXT = 200  # longer is no cron string RQ would accept: shown, never parsed
MAX_TEXT = 1_000  # func, queue and cron as shown


@dataclass(frozen=True)
class CronRun:
    """One job a cron job enqueued, and how it went."""

    id: str
    status: str | None  # None: the job hash is gone (its result TTL passed)
    enqueued_at: float | None
    ended_at: float | None


@dataclass(frozen=True)
class CronSchedulerState:
    name: str
    hostname: str | None
    pid: int | None
    last_heartbeat: float | None
    alive: bool
    created_at: float | None = None
    listed: bool = True  # in RQ's registry; False: only rqscope remembers it (monitor/cron_memory.py)
    remembered: bool = False  # read from rqscope's copy: RQ no longer holds its hash
    raw_fields: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    raw_jobs: str | None = field(default=None, repr=False, compare=False)  # its cron_jobs JSON as read


@dataclass(frozen=True)
class CronJobState:
    name: str
    func: str | None
    queue: str | None
    cron: str | None
    interval: float | None
    last_enqueued_at: float | None
    next_enqueue_at: float | None
    overdue_seconds: float
    scheduler: str
    runs: tuple[CronRun, ...] = ()
    source: str = "rq"  # "rq-scheduler" for an entry of rq-scheduler's sorted set, listed read-only
    remembered: bool = False  # its scheduler is known only from rqscope's copy


@dataclass(frozen=True)
class CronState:
    """Every cron scheduler and cron job read at `read_at`; `up` False when Redis did not answer."""

    up: bool
    read_at: float
    schedulers: tuple[CronSchedulerState, ...] = ()
    jobs: tuple[CronJobState, ...] = ()
    truncated: bool = False  # a cap on schedulers, jobs or entries left some out
    error: str = ""

    @property
    def dead_schedulers(self) -> tuple[CronSchedulerState, ...]:
        return tuple(s for s in self.schedulers if not s.alive)


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _epoch(value: Any) -> float | None:
    moment = parse_time(value) if isinstance(value, str) else None
    try:
        return moment.timestamp() if moment is not None else None
    except (OverflowError, ValueError):
        return None


def next_cron_run(cron: str, after: float, local: bool = LOCAL_CRON) -> float | None:
    """The first run of `cron` strictly after `after`, read as RQ reads it; None for a string it cannot parse."""
    if len(cron) > MAX_CRON_TEXT:
        return None
    try:
        base = datetime.fromtimestamp(after, UTC)
        if not local:
            return float(croniter(cron, base).get_next(datetime).timestamp())
        # as rq 3 does: match in local time; a repeated local hour maps to its first occurrence, so skip back-steps
        found = croniter(cron, base.astimezone().replace(tzinfo=None))
        for _ in range(4):
            moment = found.get_next(datetime).replace(fold=0).timestamp()
            if moment > after:
                return float(moment)
    except (ValueError, KeyError, TypeError, OverflowError):  # croniter's errors are ValueErrors
        return None
    return None


def missed_run(cron: str | None, interval: float | None, last: float | None, started: float | None) -> float | None:
    """The run a stopped scheduler owed next: after its last enqueue, or from its start if it never enqueued."""
    if cron:
        base = last if last is not None else started
        return next_cron_run(cron, base) if base is not None else None
    if interval:
        # rq enqueues an interval job at once on start, then every `interval` after the last enqueue
        return last + interval if last is not None else started
    return None


def overdue_seconds(due: float | None, now: float) -> float:
    """0 when on time; else how long past `due`."""
    return max(0.0, now - due) if due is not None else 0.0


def shape_scheduler(
    name: str,
    heartbeat: float | None,
    fields: dict[str, Any],
    now: float,
    raw_jobs: str | None = None,
    listed: bool = True,
    remembered: bool = False,
) -> CronSchedulerState:
    pid = fields.get("pid")
    return CronSchedulerState(
        name=name,
        hostname=_text(fields.get("hostname")),
        pid=int(pid) if isinstance(pid, str) and pid.isdigit() and len(pid) < 10 else None,
        last_heartbeat=heartbeat,
        alive=listed and heartbeat is not None and now - heartbeat <= DEAD_AFTER_SECONDS,
        created_at=_epoch(fields.get("created_at")),
        listed=listed,
        remembered=remembered,
        raw_fields={k: v for k, v in fields.items() if isinstance(v, str)},
        raw_jobs=raw_jobs,
    )


def job_entries(raw: str | None) -> list[dict[str, Any]]:
    """The scheduler's `cron_jobs` JSON as a list of mappings; anything else reads as no jobs."""
    try:
        value = json.loads(raw, object_pairs_hook=_entry) if raw else []
    except ValueError:
        return []
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _entry(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose text values are names (monitor.names.from_json)."""
    return {key: from_json(value) if isinstance(value, str) else value for key, value in pairs}


def shape_job(entry: dict[str, Any], scheduler: CronSchedulerState, now: float) -> CronJobState | None:
    """One entry of a scheduler's `cron_jobs`; None when it names no job."""
    func = _text(entry.get("func_name"))
    name = entry.get("name") if isinstance(entry.get("name"), str) and entry.get("name") else func
    if name is None:
        return None
    cron = _text(entry.get("cron"))
    interval = None if cron else _seconds(entry.get("interval"))
    last, stored_next = _epoch(entry.get("latest_enqueue_time")), _epoch(entry.get("next_enqueue_time"))
    due = stored_next
    if due is None and not scheduler.alive:
        # the scheduler stored no next run and will store none now: work out the one it owed. The stored
        # time is preferred: the scheduler computed it in its own host's time zone, which may not be ours
        due = missed_run(cron, interval, last, scheduler.created_at)
    return CronJobState(
        name=name,
        func=func,
        queue=_text(entry.get("queue_name")),
        cron=cron,
        interval=interval,
        last_enqueued_at=last,
        next_enqueue_at=due,
        overdue_seconds=overdue_seconds(due, now),
        scheduler=scheduler.name,
        remembered=scheduler.remembered,
    )
