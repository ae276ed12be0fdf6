"""Raw worker and queue rows -> WorkerState and QueueState, parsing only the rows whose bytes changed.

Decoding and parsing a worker hash (timestamps, counts) is most of a snapshot's Python time. What
depends on the raw bytes alone is kept, keyed by those exact bytes, until the next read; what
depends on the moment of the read (heartbeat age, liveness, latency) is computed every time. A
row whose bytes changed is parsed afresh, and a row no longer read is forgotten with that read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rqscope.monitor.snapshot import (
    EXECUTION_VALUES,
    WORKER_FIELDS,
    WORKER_STATES,
    QueueState,
    WorkerState,
    number,
    parse_time,
    whole,
)
from rqscope.tasks.procstats import ProcessSample

ROW_WIDTH = len(WORKER_FIELDS) + EXECUTION_VALUES


@dataclass(frozen=True, slots=True)
class WorkerFacts:
    """What a worker hash says, independent of when it was read."""

    state: str
    queues: tuple[str, ...]
    hostname: str
    pid: int | None
    heartbeat: float | None
    birth_text: str | None
    current_job: str | None
    execution_created: float | None  # RQ 3: when the running execution began; None: use current_working
    current_working: float
    successes: int
    failures: int
    working: float
    died: bool
    liveness_interval: float


def _timestamp(value: Any) -> float | None:
    moment = parse_time(value)
    return moment.timestamp() if moment else None


def worker_facts(values: Sequence[Any]) -> WorkerFacts:
    """Parse a worker's hash fields in WORKER_FIELDS order, then its execution; garbage becomes unknown."""
    if len(values) != ROW_WIDTH:
        values = [None] * ROW_WIDTH
    texts = [v.decode("utf-8", "replace") if v.__class__ is bytes else v for v in values]
    (
        state,
        queues,
        hostname,
        pid,
        heartbeat,
        birth,
        current_job,
        successes,
        failures,
        working,
        current_working,
        death,
        liveness,
        execution,
        execution_created,
    ) = texts
    started: float | None = None
    if not current_job and execution and state == "busy":
        # RQ 3 keeps a worker's running jobs in its executions set instead of `current_job`; an execution left
        # behind by a worker that is no longer busy names no running job
        current_job = execution.rsplit(":", 1)[0]
        started = _timestamp(execution_created)
        current_working = None
    if state == "started":
        state = "idle"
    return WorkerFacts(
        state=state if state in WORKER_STATES else "unknown",
        queues=tuple(q for q in (queues or "").split(",") if q),
        hostname=hostname or "unknown",
        pid=whole(pid or "") or None,
        heartbeat=_timestamp(heartbeat),
        birth_text=birth,
        current_job=current_job or None,
        execution_created=started,
        current_working=number(current_working),
        successes=whole(successes or ""),
        failures=whole(failures or ""),
        working=number(working),
        died=death is not None,
        liveness_interval=number(liveness),
    )


def worker_state(
    name: str, facts: WorkerFacts, now: float, processes: Mapping[str, ProcessSample], ttl: float
) -> WorkerState:
    """The WorkerState of parsed facts at `now`: heartbeat age, liveness, the running job's time."""
    age = max(0.0, now - facts.heartbeat) if facts.heartbeat is not None else None
    dead = facts.died or age is None or age > ttl
    interval = facts.liveness_interval
    if interval > 0 and name not in processes and age is not None and age > 3 * interval:
        # an rqscope worker whose stats expired and that has not heartbeaten since (RQ heartbeats at
        # birth, and a worker back from a Redis outage heartbeats before its next publication)
        dead = True
    if facts.execution_created is not None:
        running = max(0.0, now - facts.execution_created)
    else:
        running = facts.current_working
    return WorkerState(
        name=name,
        hostname=facts.hostname,
        pid=facts.pid,
        state="dead" if dead else facts.state,
        queues=facts.queues,
        current_job=facts.current_job,
        heartbeat_age=age,
        birth_text=facts.birth_text,
        successful_jobs=facts.successes,
        failed_jobs=facts.failures,
        working_seconds=facts.working,
        current_job_seconds=running,
        dead=dead,
        process=processes.get(name),
    )


def shape_worker(
    name: str, values: Sequence[Any], now: float, processes: Mapping[str, ProcessSample], ttl: float
) -> WorkerState:
    """A WorkerState from its hash fields in WORKER_FIELDS order (then its execution), uncached."""
    return worker_state(name, worker_facts(values), now, processes, ttl)


# (head's enqueued_at, registry counts) -> (registries, oldest enqueued_at)
QueueFacts = tuple[Mapping[str, int], datetime | None]


def _count(value: Any) -> int:
    return value if value.__class__ is int else 0


def serving_counts(workers: Sequence[WorkerState]) -> dict[str, int]:
    """Live workers listening on each queue."""
    serving: dict[str, int] = {}
    for worker in workers:
        if not worker.dead:
            for queue in worker.queues:
                serving[queue] = serving.get(queue, 0) + 1
    return serving


class RowShaper:
    """Shapes one reader's rows, reusing the parse of every row whose raw bytes are unchanged since its last read."""

    def __init__(self, registry_names: Sequence[str]) -> None:
        self.registry_names = tuple(registry_names)
        self._workers: dict[tuple[Any, ...], WorkerFacts] = {}
        self._queues: dict[tuple[Any, ...], QueueFacts] = {}
        self.parsed = 0  # rows parsed afresh since this shaper was made (the others were unchanged)

    def workers(
        self, rows: Sequence[tuple[str, Sequence[Any]]], now: float, processes: Mapping[str, ProcessSample], ttl: float
    ) -> tuple[WorkerState, ...]:
        known, kept = self._workers, {}
        shaped = []
        for name, values in rows:
            key = tuple(values)
            facts = kept.get(key) or known.get(key)
            if facts is None:
                facts = worker_facts(values)
                self.parsed += 1
            kept[key] = facts
            shaped.append(worker_state(name, facts, now, processes, ttl))
        self._workers = kept  # only this read's rows: a worker gone from Redis is forgotten
        return tuple(shaped)

    def queues(
        self, rows: Sequence[tuple[str, Sequence[Any]]], now: float, serving: Mapping[str, int]
    ) -> tuple[QueueState, ...]:
        """Rows of (name, [LLEN, head id, head's enqueued_at, lock EXISTS, one ZCARD per registry])."""
        known, kept = self._queues, {}
        shaped = []
        names = self.registry_names
        for name, values in rows:
            key = (values[2], *values[4:])  # the head's id matters only through its enqueued_at
            facts = kept.get(key) or known.get(key)
            if facts is None:
                counts = dict(zip(names, map(_count, values[4:]), strict=False))
                counts.update((state, 0) for state in names[len(values) - 4 :])
                facts = (counts, parse_time(values[2]))
                self.parsed += 1
            kept[key] = facts
            counts, oldest = facts
            registries = dict(counts)  # each snapshot its own mapping, whatever a consumer does with it
            queued = _count(values[0])
            latency = max(0.0, now - oldest.timestamp()) if oldest and queued else 0.0
            locked = bool(_count(values[3]))
            shaped.append(QueueState(name, queued, registries, oldest, latency, locked, serving.get(name, 0)))
        self._queues = kept
        return tuple(shaped)
