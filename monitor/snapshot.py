"""One read of the whole RQ state, in at most three pipelined round trips, never writing."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis import Redis, RedisError

from tasks.metrics import METRICS_KEY, TaskStats, parse_metrics
from tasks.procstats import PROC_KEY_TEMPLATE, PROCS_KEY, ProcessSample, parse_sample

QUEUES_KEY = "rq:queues"
WORKERS_KEY = "rq:workers"
QUEUE_KEY_PREFIX = "rq:queue:"
WORKER_KEY_PREFIX = "rq:worker:"
JOB_KEY_TEMPLATE = "rq:job:{id}"
SCHEDULER_LOCK_TEMPLATE = "rq:scheduler-lock:{queue}"
CRON_SCHEDULERS_KEY = "rq:cron_schedulers"
REGISTRY_KEY_TEMPLATES = {
    "started": "rq:wip:{queue}",
    "deferred": "rq:deferred:{queue}",
    "scheduled": "rq:scheduled:{queue}",
    "finished": "rq:finished:{queue}",
    "failed": "rq:failed:{queue}",
    "canceled": "rq:canceled:{queue}",
}
JOB_STATES = ("queued", *REGISTRY_KEY_TEMPLATES)
WORKER_STATES = ("idle", "busy", "suspended", "unknown", "dead")
# RQ expires a worker's key worker_ttl + 60 s after its last heartbeat (420 + 60 by default)
DEFAULT_WORKER_TTL_SECONDS = 480.0
REDIS_INFO_FIELDS = (
    "connected_clients", "blocked_clients", "maxclients", "rejected_connections", "used_memory", "maxmemory",
)  # fmt: skip


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class WorkerState:
    name: str
    hostname: str
    pid: int | None
    state: str
    queues: tuple[str, ...]
    current_job: str | None
    heartbeat_age: float | None
    birth: datetime | None
    successful_jobs: int
    failed_jobs: int
    working_seconds: float
    current_job_seconds: float
    dead: bool
    process: ProcessSample | None = None


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
    cron_schedulers: int = 0
    round_trips: int = 0
    duration_seconds: float = 0.0

    @property
    def live_workers(self) -> tuple[WorkerState, ...]:
        return tuple(w for w in self.workers if not w.dead)

    @property
    def dead_workers(self) -> tuple[WorkerState, ...]:
        return tuple(w for w in self.workers if w.dead)

    def queue(self, name: str) -> QueueState | None:
        return next((q for q in self.queues if q.name == name), None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(float(_text(value)))
    except ValueError:
        return 0


def _float(value: Any) -> float:
    try:
        result = float(_text(value))
    except ValueError:
        return 0.0
    return result if math.isfinite(result) else 0.0


def parse_time(value: Any) -> datetime | None:
    """RQ's UTC timestamps ('2024-01-01T00:00:00.123456Z'); None when absent or garbage."""
    text = _text(value).strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# What a reply stands for when Redis answers it with an error (a disabled INFO, a key of the wrong type)
FIRST_DEFAULTS: tuple[Any, ...] = (set(), set(), {}, {}, [], 0)


def _or_empty(reply: Any, default: Any) -> Any:
    return default if isinstance(reply, Exception) else reply


def _strip(prefix: str, key: Any) -> str:
    text = _text(key)
    return text[len(prefix) :] if text.startswith(prefix) else text


def shape_worker(
    key_name: str, raw: Mapping[bytes, bytes], now: float, processes: Mapping[str, ProcessSample], ttl: float
) -> WorkerState:
    """A WorkerState from its hash; missing or garbage fields become unknown, never an error."""
    data = {_text(k): v for k, v in raw.items()}
    heartbeat = parse_time(data.get("last_heartbeat"))
    age = max(0.0, now - heartbeat.timestamp()) if heartbeat else None
    state = _text(data.get("state")) or "unknown"
    if state == "started":
        state = "idle"
    if state not in WORKER_STATES:
        state = "unknown"
    dead = not raw or "death" in data or age is None or age > ttl
    pid = _int(data.get("pid")) or None
    return WorkerState(
        name=key_name,
        hostname=_text(data.get("hostname")) or "unknown",
        pid=pid,
        state="dead" if dead else state,
        queues=tuple(q for q in _text(data.get("queues")).split(",") if q),
        current_job=_text(data.get("current_job")) or None,
        heartbeat_age=age,
        birth=parse_time(data.get("birth")),
        successful_jobs=_int(data.get("successful_job_count")),
        failed_jobs=_int(data.get("failed_job_count")),
        working_seconds=_float(data.get("total_working_time")),
        current_job_seconds=_float(data.get("current_job_working_time")),
        dead=dead,
        process=processes.get(key_name),
    )


def _redis_state(info: Mapping[str, Any]) -> RedisState:
    if not info:
        return RedisState(up=True, error="INFO unavailable")
    return RedisState(
        up=True,
        version=_text(info.get("redis_version")),
        info={name: _float(info.get(name, 0)) for name in REDIS_INFO_FIELDS},
    )


def fetch_snapshot(redis: Redis, now: float | None = None, worker_ttl: float = DEFAULT_WORKER_TTL_SECONDS) -> Snapshot:
    """Read everything in at most three round trips; a Redis failure yields a down snapshot."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    try:
        return _fetch(redis, now, worker_ttl, started)
    except RedisError as exc:
        return Snapshot(
            taken_at=now,
            redis=RedisState(up=False, error=type(exc).__name__),
            duration_seconds=time.perf_counter() - started,
        )


def _fetch(redis: Redis, now: float, worker_ttl: float, started: float) -> Snapshot:
    pipe = redis.pipeline(transaction=False)
    pipe.smembers(QUEUES_KEY)
    pipe.smembers(WORKERS_KEY)
    pipe.info()
    pipe.hgetall(METRICS_KEY)
    pipe.zrangebyscore(PROCS_KEY, now, "+inf")
    pipe.zcard(CRON_SCHEDULERS_KEY)
    queue_keys, worker_keys, info, metrics, proc_ids, cron = (
        _or_empty(reply, default)
        for reply, default in zip(pipe.execute(raise_on_error=False), FIRST_DEFAULTS, strict=True)
    )
    queue_names = sorted(_strip(QUEUE_KEY_PREFIX, k) for k in queue_keys)
    worker_names = sorted(_strip(WORKER_KEY_PREFIX, k) for k in worker_keys)
    proc_names = sorted(_text(p) for p in proc_ids)

    pipe = redis.pipeline(transaction=False)
    for name in queue_names:
        pipe.llen(QUEUE_KEY_PREFIX + name)
        pipe.lindex(QUEUE_KEY_PREFIX + name, 0)
        pipe.exists(SCHEDULER_LOCK_TEMPLATE.format(queue=name))
        for template in REGISTRY_KEY_TEMPLATES.values():
            pipe.zcard(template.format(queue=name))
    for name in worker_names:
        pipe.hgetall(WORKER_KEY_PREFIX + name)
    for proc in proc_names:
        pipe.hgetall(PROC_KEY_TEMPLATE.format(id=proc))
    replies = iter(pipe.execute(raise_on_error=False))
    per_queue = []
    for name in queue_names:
        queued, head, locked = (_or_empty(next(replies), 0) for _ in range(3))
        registries = {state: _int(_or_empty(next(replies), 0)) for state in REGISTRY_KEY_TEMPLATES}
        per_queue.append((name, _int(queued), _text(head) or None, bool(locked), registries))
    worker_hashes = [_or_empty(next(replies), {}) for _ in worker_names]
    samples = [s for s in (parse_sample(_or_empty(next(replies), {})) for _ in proc_names) if s is not None]
    round_trips = 2

    heads = [head for (_, _, head, _, _) in per_queue if head]
    enqueued_at: dict[str, datetime | None] = {}
    if heads:
        pipe = redis.pipeline(transaction=False)
        for head in heads:
            pipe.hget(JOB_KEY_TEMPLATE.format(id=head), "enqueued_at")
        values = pipe.execute(raise_on_error=False)
        enqueued_at = {head: parse_time(_or_empty(value, None)) for head, value in zip(heads, values, strict=True)}
        round_trips = 3

    by_worker_name = {s.name: s for s in samples if s.role == "worker" and s.name}
    workers = tuple(
        shape_worker(name, raw, now, by_worker_name, worker_ttl)
        for name, raw in zip(worker_names, worker_hashes, strict=True)
    )
    serving: dict[str, int] = {}
    for worker in workers:
        if not worker.dead:
            for queue in worker.queues:
                serving[queue] = serving.get(queue, 0) + 1
    queues = []
    for name, queued, head, locked, registries in per_queue:
        oldest = enqueued_at.get(head) if head else None
        latency = max(0.0, now - oldest.timestamp()) if oldest and queued else 0.0
        queues.append(QueueState(name, queued, registries, oldest, latency, locked, serving.get(name, 0)))
    return Snapshot(
        taken_at=now,
        redis=_redis_state(info),
        queues=tuple(queues),
        workers=workers,
        processes=tuple(samples),
        tasks=parse_metrics(metrics),
        cron_schedulers=int(cron or 0),
        round_trips=round_trips,
        duration_seconds=time.perf_counter() - started,
    )
