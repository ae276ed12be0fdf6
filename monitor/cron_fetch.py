"""Reading RQ's cron state, and rqscope's copy of schedulers RQ dropped, in five pipelined round trips,
whatever the number of schedulers, jobs and runs.

Every count is capped (schedulers, cron jobs, rq-scheduler entries, runs per job) and every big hash
field is measured (HSTRLEN) before it is read, so a hostile or huge registry costs a bounded scrape.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from redis import Redis, RedisError
from rqscope.monitor.cache import TtlCache
from rqscope.monitor.cron import (
    CronJobState,
    CronRun,
    CronSchedulerState,
    CronState,
    job_entries,
    shape_job,
    shape_scheduler,
)
from rqscope.monitor.cron_memory import MAX_REMEMBERED_BYTES, SEEN_KEY, copy_key, parse
from rqscope.monitor.cron_rqscheduler import RQ_SCHEDULER_JOBS_KEY, shape_entry
from rqscope.monitor.names import as_name, exact
from rqscope.monitor.snapshot import as_text, parse_time
from rqscope.tasks.rq_internals.keys import KEYS, Keys

MAX_SCHEDULERS = 100
MAX_JOBS = 500  # cron jobs over all schedulers
MAX_ENTRIES = 200  # rq-scheduler entries
RUNS_PER_JOB = 10
MAX_FIELD_BYTES = 1 << 20  # a scheduler's cron_jobs JSON; rq-scheduler meta and description read up to this
RUN_FIELDS = ("status", "enqueued_at", "ended_at")
SCHEDULER_FIELDS = ("hostname", "pid", "created_at")


def _results(pipe: Any) -> list[Any]:
    """The pipeline's answers, a reply that is an error (WRONGTYPE on a hostile key) read as nothing."""
    return [None if isinstance(r, Exception) else r for r in pipe.execute(raise_on_error=False)]


def _finite(pairs: Any) -> list[tuple[str, float]]:
    if not isinstance(pairs, list):
        return []
    return [(as_name(member), float(score)) for member, score in pairs if math.isfinite(score)]


class CronReader:
    """Reads every cron scheduler, cron job and rq-scheduler entry; never raises on what Redis holds."""

    def __init__(self, redis: Redis, keys: Keys = KEYS, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock

    def fetch(self, now: float | None = None) -> CronState:
        now = self.clock() if now is None else now
        try:
            return self._fetch(now)
        except (RedisError, OSError) as exc:
            return CronState(up=False, read_at=now, error=str(exc) or type(exc).__name__)

    def _fetch(self, now: float) -> CronState:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(self.keys.cron_schedulers, 0, MAX_SCHEDULERS - 1, withscores=True)
        pipe.zcard(self.keys.cron_schedulers)
        pipe.zrange(RQ_SCHEDULER_JOBS_KEY, 0, MAX_ENTRIES - 1, withscores=True)
        pipe.zcard(RQ_SCHEDULER_JOBS_KEY)
        pipe.zrevrange(SEEN_KEY, 0, MAX_SCHEDULERS - 1, withscores=True)
        listed, scheduler_count, entries, entry_count, seen = _results(pipe)
        schedulers, entries = _finite(listed), _finite(entries)
        truncated = (scheduler_count or 0) > len(schedulers) or (entry_count or 0) > len(entries)
        listed_names = {name for name, _ in schedulers}
        seen_names = {name for name, _ in _finite(seen)}
        only_seen = sorted(seen_names - listed_names)[: max(0, MAX_SCHEDULERS - len(schedulers))]
        copied = [name for name, _ in schedulers if name in seen_names] + only_seen

        for name, _ in schedulers:
            key = exact(self.keys.cron_scheduler(name))
            pipe.hmget(key, *SCHEDULER_FIELDS)
            pipe.hstrlen(key, "cron_jobs")
        for name in copied:
            pipe.strlen(copy_key(name))
        for job_id, _ in entries:
            key = exact(self.keys.job(job_id))
            pipe.hmget(key, "origin", *RUN_FIELDS)
            pipe.hstrlen(key, "meta")
            pipe.hstrlen(key, "description")
        sizes = _results(pipe)
        copy_sizes = dict(zip(copied, sizes[2 * len(schedulers) : 2 * len(schedulers) + len(copied)], strict=True))
        readable = {name for name, size in copy_sizes.items() if 0 < (size or 0) <= MAX_REMEMBERED_BYTES}
        base = 2 * len(schedulers) + len(copied)

        gone = set()  # listed, but RQ dropped the hash: the copy rqscope remembered stands in for it
        for i, (name, _) in enumerate(schedulers):
            if 0 < (sizes[2 * i + 1] or 0) <= MAX_FIELD_BYTES:
                pipe.hget(exact(self.keys.cron_scheduler(name)), "cron_jobs")
            elif not any(sizes[2 * i] or ()) and not sizes[2 * i + 1] and name in readable:
                gone.add(name)
                pipe.get(copy_key(name))
        only_seen = [name for name in only_seen if name in readable]
        for name in only_seen:
            pipe.get(copy_key(name))
        for i, (job_id, _) in enumerate(entries):
            key = exact(self.keys.job(job_id))
            for field, size in (("meta", sizes[base + 3 * i + 1]), ("description", sizes[base + 3 * i + 2])):
                if 0 < (size or 0) <= MAX_FIELD_BYTES:
                    pipe.hget(key, field)
        bodies = iter(_results(pipe))

        read: list[tuple[str, float | None, dict[str, str], str | None, bool, bool]] = []
        for i, (name, heartbeat) in enumerate(schedulers):
            if name in gone:
                copy = parse(next(bodies))
                fields, jobs_json = (copy.fields, copy.cron_jobs) if copy else ({}, None)
                read.append((name, heartbeat, fields, jobs_json, True, True))
                continue
            head = sizes[2 * i] or [None] * 3
            fields = {k: as_text(v) for k, v in zip(SCHEDULER_FIELDS, head, strict=True) if v is not None}
            raw = next(bodies) if 0 < (sizes[2 * i + 1] or 0) <= MAX_FIELD_BYTES else None
            truncated |= (sizes[2 * i + 1] or 0) > MAX_FIELD_BYTES
            read.append((name, heartbeat, fields, as_name(raw) if raw is not None else None, True, False))
        for name in only_seen:
            if copy := parse(next(bodies)):
                read.append((name, copy.heartbeat, copy.fields, copy.cron_jobs, False, True))

        shaped: list[CronSchedulerState] = []
        jobs: list[CronJobState] = []
        for name, heartbeat, fields, raw_jobs, is_listed, remembered in read:
            scheduler = shape_scheduler(name, heartbeat, fields, now, raw_jobs, is_listed, remembered)
            shaped.append(scheduler)
            for entry in job_entries(raw_jobs):
                job = shape_job(entry, scheduler, now)
                if job is not None and len(jobs) < MAX_JOBS:
                    jobs.append(job)
                truncated |= job is not None and len(jobs) >= MAX_JOBS
        served = {job.name for job in jobs if not job.remembered}
        jobs = [job for job in jobs if not (job.remembered and job.name in served)]  # a restart under a new name
        for i, (job_id, score) in enumerate(entries):
            head = sizes[base + 3 * i] or [None] * 4
            found = {}
            for field, size in (("meta", sizes[base + 3 * i + 1]), ("description", sizes[base + 3 * i + 2])):
                found[field] = next(bodies) if 0 < (size or 0) <= MAX_FIELD_BYTES else None
            run = _run(job_id, head[1:])
            entry = shape_entry(job_id, score, head[0], found["meta"], found["description"], run, now)
            if entry is not None:
                jobs.append(entry)
        jobs = self._with_runs(pipe, jobs)
        return CronState(True, now, tuple(shaped), tuple(jobs), truncated)

    def _with_runs(self, pipe: Any, jobs: list[CronJobState]) -> list[CronJobState]:
        """Each RQ cron job's recent run ids (newest first) and each run's status: two more round trips."""
        owned = [job for job in jobs if job.source == "rq"]
        for job in owned:
            pipe.zrevrange(exact(self.keys.cron_job_history(job.name)), 0, RUNS_PER_JOB - 1)
        histories = {job.name: [as_name(i) for i in ids or ()] for job, ids in zip(owned, _results(pipe), strict=True)}
        wanted = sorted({run_id for ids in histories.values() for run_id in ids})
        for run_id in wanted:
            pipe.hmget(exact(self.keys.job(run_id)), *RUN_FIELDS)
        runs = {run_id: _run(run_id, values) for run_id, values in zip(wanted, _results(pipe), strict=True)}
        shaped = []
        for job in jobs:
            ids = histories.get(job.name) if job.source == "rq" else None
            shaped.append(job if ids is None else replace(job, runs=tuple(runs[i] for i in ids)))
        return shaped


def _run(run_id: str, values: Sequence[Any] | None) -> CronRun:
    status, enqueued, ended = (list(values) if values else []) + [None] * (3 - len(values or ()))
    moment = [parse_time(v) if v is not None else None for v in (enqueued, ended)]
    return CronRun(
        id=run_id,
        status=as_text(status)[:40] if status is not None else None,
        enqueued_at=moment[0].timestamp() if moment[0] else None,
        ended_at=moment[1].timestamp() if moment[1] else None,
    )


class CronCache(TtlCache[CronState]):
    """The last cron read while it is younger than `ttl`: N viewers, scrapes and the alert loop cost one read."""

    def __init__(self, reader: CronReader, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(reader.fetch, ttl, clock)
