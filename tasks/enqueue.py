"""Enqueueing registered tasks: one or many runs, now or later, all or nothing in one MULTI/EXEC."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis import Redis, WatchError
from rq import Queue
from rq.job import Job, validate_job_id
from rqscope.tasks.errors import JobIdConflictError, QueueNotAllowedError, TaskArgumentsError
from rqscope.tasks.metrics import record_enqueued
from rqscope.tasks.rq_internals.jobs import schedule_job
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.tasks.watching import WatchTries

if TYPE_CHECKING:
    from rqscope.tasks.registry import TaskSpec

# KEYS: job hashes. Each one's description (RQ writes "<function path>(<arguments>)"), or false where there is
# no such job, in one round trip on the connection that WATCHes them.
EXISTING = """
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call('EXISTS', key) == 1 and (redis.call('HGET', key, 'description') or '')
end
return found
"""
WATCH_ATTEMPTS = 5


@dataclass(frozen=True)
class Placement:
    """One validated request to run a registered task: what, on which queue, with which id, and when."""

    spec: TaskSpec
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = ""
    job_id: str | None = None
    at: datetime | None = None  # UTC; None runs it now


@dataclass(frozen=True)
class Placed:
    """What became of a Placement: its job id, and whether this call created the job."""

    job_id: str
    created: bool
    job: Job | None = None  # the new job; None when one with this id already existed


def place(
    spec: TaskSpec,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    queue: str | None = None,
    job_id: str | None = None,
    at: datetime | None = None,
) -> Placement:
    """A Placement after every check that needs no Redis: queue allowed, arguments fit, id well formed."""
    queue_name = queue or spec.queue
    if queue_name not in spec.allowed_queues:
        raise QueueNotAllowedError(
            f"task {spec.name!r} may run on {', '.join(spec.allowed_queues)}, not {queue_name!r}"
        )
    spec.check_arguments(args, kwargs)
    if job_id is not None:
        try:
            validate_job_id(job_id)
        except (TypeError, ValueError) as exc:
            raise TaskArgumentsError(f"job_id: {exc}") from None
    return Placement(spec, tuple(args), dict(kwargs), queue_name, job_id, at)


def _options(item: Placement) -> dict[str, Any]:
    spec = item.spec
    return {
        "args": item.args,
        "kwargs": item.kwargs,
        "timeout": spec.timeout,
        "result_ttl": spec.result_ttl,
        "failure_ttl": spec.failure_ttl,
        "retry": spec.retry,
        "job_id": item.job_id,
    }


def _unserialisable(placements: Sequence[Placement], indexes: Sequence[int], exc: Exception) -> TaskArgumentsError:
    """Name the first placement whose arguments cannot be pickled; RQ pickles them all at once."""
    for index in indexes:
        item = placements[index]
        try:
            pickle.dumps((item.args, item.kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as own:  # noqa: BLE001 - any failure to pickle is the caller's to fix
            exc = own
            break
    else:
        index = indexes[0]
    where = f"tasks[{index}]: " if len(placements) > 1 else ""
    return TaskArgumentsError(f"{where}{placements[index].spec.name}: arguments cannot be serialised: {exc}")


def _build(pipe: Any, placements: Sequence[Placement], skip: set[str], connection: Redis) -> list[Job | None]:
    """Queue every new job's writes on `pipe`; nothing is sent until the caller executes. One enqueue_many
    per queue for the jobs that run now, one schedule_job for each job that runs later."""
    jobs: list[Job | None] = [None] * len(placements)
    now: dict[str, list[int]] = {}
    for index, item in enumerate(placements):
        if item.job_id not in skip:
            now.setdefault(item.queue if item.at is None else "", []).append(index)
    scheduled = now.pop("", [])
    queues = {name: Queue(name, connection=connection) for name in {placements[i].queue for i in scheduled} | set(now)}
    for name, indexes in [*now.items(), *((placements[i].queue, [i]) for i in scheduled)]:
        rq_queue = queues[name]
        try:
            if placements[indexes[0]].at is None:
                datas = [Queue.prepare_data(placements[i].spec.func, **_options(placements[i])) for i in indexes]
                made = rq_queue.enqueue_many(datas, pipeline=pipe)
            else:
                item = placements[indexes[0]]
                made = [rq_queue.create_job(item.spec.func, **_options(item))]
                schedule_job(pipe, rq_queue, made[0], item.at)
        except (TypeError, ValueError, AttributeError, pickle.PicklingError) as exc:
            # pickling happens while the pipeline is built, before anything is sent: nothing was enqueued
            raise _unserialisable(placements, indexes, exc) from None
        for index, job in zip(indexes, made, strict=True):
            jobs[index] = job
    counts: dict[tuple[str, str], int] = {}
    for item, job in zip(placements, jobs, strict=True):
        if job is not None:
            counts[item.spec.name, item.queue] = counts.get((item.spec.name, item.queue), 0) + 1
    for (task_name, queue_name), count in counts.items():
        record_enqueued(pipe, task_name, queue_name, count)
    return jobs


def _existing(pipe: Any, placements: Sequence[Placement]) -> set[str]:
    """Watch the placements' job ids and return those that already name a run of the same task; the MULTI that
    follows fails if any appears. An id that names another function's job is refused."""
    chosen = [(index, item) for index, item in enumerate(placements) if item.job_id is not None]
    if not chosen:
        return set()
    keys = [KEYS.job_prefix + str(item.job_id) for _, item in chosen]
    pipe.watch(*keys)
    found = pipe.eval(EXISTING, len(keys), *keys)
    existing = set()
    for (index, item), description in zip(chosen, found, strict=True):
        if description is None:
            continue
        if not bytes(description).startswith(f"{item.spec.func_path}(".encode()):
            where = f"tasks[{index}]: " if len(placements) > 1 else ""
            raise JobIdConflictError(
                f"{where}job_id {item.job_id!r} already names a job that is not a run of {item.spec.name}"
            )
        existing.add(str(item.job_id))
    return existing


def enqueue_all(
    placements: Sequence[Placement], *, connection: Redis, also: Callable[[Any, list[Placed]], None] | None = None
) -> list[Placed]:
    """Enqueue every placement in one transaction, in order; an id that already names a job is left as it is.
    `also(pipeline, placed)` may add writes that must happen with the enqueue (an audit entry), in the same EXEC."""
    ids = [item.job_id for item in placements if item.job_id is not None]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for index, item in enumerate(placements):
            if item.job_id is not None and item.job_id in seen:
                raise TaskArgumentsError(f"tasks[{index}]: job_id {item.job_id!r} appears twice in this batch")
            if item.job_id is not None:
                seen.add(item.job_id)
    tries = WatchTries(WATCH_ATTEMPTS)
    for _ in tries:
        with connection.pipeline() as pipe:
            try:
                existing = _existing(pipe, placements)
                pipe.multi()
                jobs = _build(pipe, placements, existing, connection)
                placed = [
                    Placed(job.id if job is not None else str(item.job_id), job is not None, job)
                    for item, job in zip(placements, jobs, strict=True)
                ]
                if also is not None:
                    also(pipe, placed)
                pipe.execute()
            except WatchError as exc:
                tries.failed(exc)
                continue  # a job with one of these ids appeared meanwhile (or the slot moves): look again
        return placed
    raise JobIdConflictError("jobs with these ids keep changing; try again")
