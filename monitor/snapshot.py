"""One read of the whole RQ state, in at most three pipelined round trips, never writing."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rqscope.tasks.metrics import TaskStats, parse_metrics
from rqscope.tasks.procstats import LIVENESS_FIELD, ProcessSample
from rqscope.tasks.rq_internals.keys import KEYS, REGISTRY_NAMES

# RQ's key names follow its key prefix (RQ_KEY_PREFIX), as RQ's own classes do
QUEUES_KEY = KEYS.queues
WORKERS_KEY = KEYS.workers
QUEUE_KEY_PREFIX = KEYS.queue_prefix
WORKER_KEY_PREFIX = KEYS.worker_prefix
CRON_SCHEDULERS_KEY = KEYS.cron_schedulers
# templates for str.format: a prefix such as `{rq}` (a Redis Cluster hash tag) has its braces doubled
JOB_KEY_TEMPLATE = KEYS.for_format().job("{id}")
RESULTS_KEY_TEMPLATE = KEYS.for_format().results("{id}")
SCHEDULER_LOCK_TEMPLATE = KEYS.for_format().scheduler_lock("{queue}")
REGISTRY_KEY_TEMPLATES = {state: KEYS.for_format().registry(state, "{queue}") for state in REGISTRY_NAMES}
JOB_STATES = ("queued", *REGISTRY_KEY_TEMPLATES)
WORKER_STATES = ("idle", "busy", "suspended", "unknown", "dead")
# RQ expires a worker's key worker_ttl + 60 s after its last heartbeat (420 + 60 by default)
DEFAULT_WORKER_TTL_SECONDS = 480.0
# The worker hash fields the snapshot reads, in the order monitor.shaping unpacks them
WORKER_FIELDS = (
    "state",
    "queues",
    "hostname",
    "pid",
    "last_heartbeat",
    "birth",
    "current_job",
    "successful_job_count",
    "failed_job_count",
    "total_working_time",
    "current_job_working_time",
    "death",
    LIVENESS_FIELD,
)
# what the snapshot reads beside those fields: one of RQ 3's executions set, and when it was created
EXECUTION_VALUES = 2
REDIS_INFO_FIELDS = (
    "connected_clients",
    "blocked_clients",
    "maxclients",
    "rejected_connections",
    "used_memory",
    "maxmemory",
)


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    queued: int
    registries: Mapping[str, int]
    oldest_enqueued_at: datetime | None
    latency_seconds: float
    scheduler_locked: bool
    workers: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {"queued": self.queued, **self.registries}


@dataclass(frozen=True, slots=True)
class WorkerState:
    name: str
    hostname: str
    pid: int | None
    state: str
    queues: tuple[str, ...]
    current_job: str | None
    heartbeat_age: float | None
    birth_text: str | None
    successful_jobs: int
    failed_jobs: int
    working_seconds: float
    current_job_seconds: float
    dead: bool
    process: ProcessSample | None = None

    @property
    def birth(self) -> datetime | None:
        return parse_time(self.birth_text)


@dataclass(frozen=True)
class RateLimitState:
    """One RQ 3 concurrency limit: its slots, the jobs let through and the jobs held back."""

    key: str
    concurrency: int
    allowed: int
    held: int
    oldest_held_seconds: float


@dataclass(frozen=True)
class RedisState:
    up: bool
    error: str = ""
    version: str = ""
    info: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The RQ state at one moment, as plain data."""

    taken_at: float
    redis: RedisState
    queues: tuple[QueueState, ...] = ()
    workers: tuple[WorkerState, ...] = ()
    processes: tuple[ProcessSample, ...] = ()
    tasks: Mapping[tuple[str, str], TaskStats] = field(default_factory=dict)
    # alert delivery outcomes per (receiver, result); None when Redis would not give them (no value, not 0)
    notifications: Mapping[tuple[str, str], float] | None = None
    cron_schedulers: int = 0
    rate_limits: tuple[RateLimitState, ...] = ()
    paused: frozenset[str] = frozenset()  # names of the queues `rqscope worker` skips (monitor.paused)
    suspended: bool = False  # RQ's suspension (`rq suspend`): workers take no new job
    round_trips: int = 0
    duration_seconds: float = 0.0

    @property
    def live_workers(self) -> tuple[WorkerState, ...]:
        return tuple(w for w in self.workers if not w.dead)

    @property
    def dead_workers(self) -> tuple[WorkerState, ...]:
        return tuple(w for w in self.workers if w.dead)

    def with_cost(self, round_trips: int, seconds: float) -> Snapshot:
        return dataclasses.replace(self, round_trips=round_trips, duration_seconds=seconds)

    def queue(self, name: str) -> QueueState | None:
        return next((q for q in self.queues if q.name == name), None)

    def is_paused(self, name: str) -> bool:
        return name in self.paused


def as_text(value: Any) -> str:
    """Redis bytes (or anything) as text; None as the empty string."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def whole(text: str) -> int:
    """An integer from text; 0 for garbage."""
    try:
        return int(text) if text.isdigit() else int(float(text))
    except (ValueError, OverflowError):
        return 0


def number(value: Any) -> float:
    """A finite float from Redis bytes; 0.0 for garbage, inf and nan."""
    try:
        result = float(as_text(value))
    except ValueError:
        return 0.0
    return result if math.isfinite(result) else 0.0


def parse_time(value: Any) -> datetime | None:
    """RQ's UTC timestamps ('2024-01-01T00:00:00.123456Z'); None when absent or garbage."""
    text = as_text(value).strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _redis_state(info: Mapping[str, Any]) -> RedisState:
    if not info:
        return RedisState(up=True, error="INFO unavailable")
    return RedisState(
        up=True,
        version=as_text(info.get("redis_version")),
        info={name: number(info.get(name, 0)) for name in REDIS_INFO_FIELDS},
    )


def build_snapshot(
    now: float,
    info: Mapping[str, Any],
    queues: tuple[QueueState, ...],
    workers: tuple[WorkerState, ...],
    samples: list[ProcessSample],
    metrics: Mapping[bytes | str, bytes | str],
    cron: int,
    notifications: Mapping[tuple[str, str], float] | None = None,
    rate_limits: Sequence[tuple[str, Sequence[Any]]] = (),
    paused: frozenset[str] = frozenset(),
    suspended: bool = False,
) -> Snapshot:
    """Assemble a Snapshot from shaped queues and workers (monitor.shaping) and the other raw replies."""
    return Snapshot(
        taken_at=now,
        redis=_redis_state(info),
        queues=queues,
        workers=workers,
        processes=tuple(samples),
        tasks=parse_metrics(metrics),
        notifications=notifications,
        cron_schedulers=int(cron or 0),
        rate_limits=tuple(shape_rate_limit(key, values, now) for key, values in rate_limits),
        paused=paused,
        suspended=suspended,
    )


def shape_rate_limit(key: str, values: Sequence[Any], now: float) -> RateLimitState:
    """A RateLimitState from (concurrency, allowed ZCARD, held ZCARD, oldest held [id, score])."""
    concurrency, allowed, held, oldest = (list(values) + [None] * 4)[:4]
    since = number(oldest[1]) if isinstance(oldest, list | tuple) and len(oldest) == 2 else 0.0
    return RateLimitState(
        key=key,
        concurrency=whole(as_text(concurrency)),
        allowed=allowed if isinstance(allowed, int) else 0,
        held=held if isinstance(held, int) else 0,
        oldest_held_seconds=max(0.0, now - since) if since else 0.0,
    )
