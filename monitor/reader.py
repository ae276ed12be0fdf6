"""Reads the whole RQ state from Redis in a constant number of round trips, never writing.

Round trip 1 is a pipeline: the queue and worker sets, INFO, the task metrics hash, the alert
notification counts, the published process ids, the cron schedulers, rq 3's concurrency limits, the
paused queues and RQ's suspension.
Round trip 2 reads every queue, worker, process and limit at once (monitor.rows): by read-only Lua
scripts, or where scripting is not allowed by pipelines, in one more round trip, three in all.
Rows whose bytes did not change since the last read are not parsed again (monitor.shaping).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import Redis, RedisError
from rqscope.monitor.alerts.keys import COUNTS_KEY
from rqscope.monitor.alerts.outbox import counts_from
from rqscope.monitor.paused import paused_names
from rqscope.monitor.rows import (
    ScriptsRefused,
    ScriptUnknown,
    count,
    name_from_key,
    or_empty,
    read_by_pipeline,
    read_by_script,
)
from rqscope.monitor.shaping import RowShaper, serving_counts
from rqscope.monitor.snapshot import (
    CRON_SCHEDULERS_KEY,
    DEFAULT_WORKER_TTL_SECONDS,
    QUEUE_KEY_PREFIX,
    QUEUES_KEY,
    REGISTRY_KEY_TEMPLATES,
    WORKER_KEY_PREFIX,
    WORKERS_KEY,
    RedisState,
    Snapshot,
    as_text,
    build_snapshot,
)
from rqscope.tasks.metrics import METRICS_KEY
from rqscope.tasks.procstats import PROCS_KEY, parse_sample
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.tasks.rq_internals.queue import PAUSED_KEY

log = logging.getLogger(__name__)

# What a reply stands for when Redis answers it with an error (a disabled INFO, a key of the wrong type)
FIRST_DEFAULTS: tuple[Any, ...] = (set(), set(), {}, {}, None, [], 0, set(), set(), 0)
# the INFO sections the snapshot reads (REDIS_INFO_FIELDS and the version); asked for by name from
# Redis 7, which takes several at once: the rest of INFO costs Redis and this process time to write and parse
INFO_SECTIONS = ("server", "clients", "memory", "stats")


def major_version(info: dict[str, Any]) -> int:
    major = as_text(info.get("redis_version")).partition(".")[0]
    return int(major) if major.isdigit() else 0


class SnapshotReader:
    """Fetches Snapshots from one Redis; remembers whether that Redis runs the read script."""

    def __init__(self, redis: Redis, worker_ttl: float = DEFAULT_WORKER_TTL_SECONDS, use_script: bool = True):
        self.redis = redis
        self.worker_ttl = worker_ttl
        self.use_script = use_script
        self.shaper = RowShaper(tuple(REGISTRY_KEY_TEMPLATES))
        self.info_sections = False  # known once a first full INFO names the version
        self.script_loaded = False  # the read script's text was sent to this Redis: its SHA names it now

    def fetch(self, now: float | None = None) -> Snapshot:
        """Read everything; a Redis failure yields a down snapshot instead of an exception."""
        started = time.perf_counter()
        now = time.time() if now is None else now
        try:
            snapshot, trips = self._fetch(now)
        except RedisError as exc:
            return Snapshot(
                taken_at=now,
                redis=RedisState(up=False, error=type(exc).__name__),
                duration_seconds=time.perf_counter() - started,
            )
        return snapshot.with_cost(trips, time.perf_counter() - started)

    def _fetch(self, now: float) -> tuple[Snapshot, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(QUEUES_KEY)
        pipe.smembers(WORKERS_KEY)
        if self.info_sections:
            pipe.execute_command("INFO", *INFO_SECTIONS)
        else:
            pipe.info()
        pipe.hgetall(METRICS_KEY)
        pipe.hgetall(COUNTS_KEY)
        pipe.zrangebyscore(PROCS_KEY, now, "+inf")
        pipe.zcard(CRON_SCHEDULERS_KEY)
        pipe.smembers(KEYS.rate_limit_keys)
        pipe.smembers(PAUSED_KEY)
        pipe.exists(KEYS.suspended)
        first = pipe.execute(raise_on_error=False)
        queue_keys, worker_keys, info, metrics, notified, proc_ids, cron, limit_keys, paused, suspended = (
            or_empty(reply, default) for reply, default in zip(first, FIRST_DEFAULTS, strict=True)
        )
        if info:
            self.info_sections = major_version(info) >= 7
        queues = sorted(name_from_key(QUEUE_KEY_PREFIX, k) for k in queue_keys)
        workers = sorted(name_from_key(WORKER_KEY_PREFIX, k) for k in worker_keys)
        procs = sorted(as_text(p) for p in proc_ids)
        limits = sorted(as_text(k) for k in limit_keys)
        trips = 1
        rows = None
        if self.use_script and (queues or workers or procs):
            try:
                try:
                    rows = read_by_script(self.redis, queues, workers, procs, limits, load=not self.script_loaded)
                    trips += 1
                except ScriptUnknown:  # restarted or flushed since: the text once more
                    rows = read_by_script(self.redis, queues, workers, procs, limits, load=True)
                    trips += 2
                self.script_loaded = True
            except ScriptsRefused as exc:
                log.warning("Redis refused the read script (%s); reading with pipelines from now on", exc)
                self.use_script = False
                trips += 1
        if rows is None:
            rows = read_by_pipeline(self.redis, queues, workers, procs, limits)
            trips += 2 if any(r[1] for r in rows[0]) or any(r[-2] for r in rows[1]) else 1
        queue_rows, worker_rows, proc_rows, limit_rows = rows
        samples = [s for s in (parse_sample(r) for r in proc_rows) if s is not None]
        by_worker_name = {s.name: s for s in samples if s.role == "worker" and s.name}
        shaped_workers = self.shaper.workers(
            list(zip(workers, worker_rows, strict=True)), now, by_worker_name, self.worker_ttl
        )
        shaped_queues = self.shaper.queues(
            list(zip(queues, queue_rows, strict=True)), now, serving_counts(shaped_workers)
        )
        snapshot = build_snapshot(
            now=now,
            info=info,
            queues=shaped_queues,
            workers=shaped_workers,
            samples=samples,
            metrics=metrics,
            notifications=None if notified is None else counts_from(notified),
            cron=count(cron),
            rate_limits=limit_rows,
            paused=paused_names(paused),
            suspended=count(suspended) > 0,
        )
        return snapshot, trips


def unreachable_snapshot(now: float | None = None) -> Snapshot:
    """The snapshot of an instance whose read did not finish in time."""
    return Snapshot(taken_at=time.time() if now is None else now, redis=RedisState(up=False, error="no answer in time"))


def fetch_snapshot(redis: Redis, now: float | None = None, worker_ttl: float = DEFAULT_WORKER_TTL_SECONDS) -> Snapshot:
    """One snapshot from a fresh reader (tests and one-off commands)."""
    return SnapshotReader(redis, worker_ttl).fetch(now)
