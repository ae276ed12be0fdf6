"""Cleaning up after a dead worker: forget its registration and fail the job it still held."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis, WatchError
from redis.client import Pipeline
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.utils import now
from rqscope.monitor.display import DisplaySerializer
from rqscope.monitor.names import exact
from rqscope.monitor.snapshot import WORKER_KEY_PREFIX, WORKERS_KEY, WorkerState
from rqscope.tasks.metrics import record_run
from rqscope.tasks.rq_internals import KEYS, fail_job, failed_job_done

ABANDONED = "Worker {name} died while running the job; it was failed when the dead worker was cleaned up."


def forget_dead_worker(redis: Redis, worker: WorkerState, task_name: Callable[[str | None], str | None]) -> str | None:
    """Remove a dead worker's registration and, in the same transaction, fail the job it held if
    that job is still in the started registry (counted as a `killed` run). Returns that job's id."""
    job = _held_job(redis, worker)
    with redis.pipeline() as pipe:
        if job is None:
            _unregister(pipe, worker)
            pipe.execute()
            return None
        started = StartedJobRegistry(job.origin, connection=redis).key
        prefix = f"{job.id}:".encode()
        while True:
            try:
                pipe.watch(started)
                entries = [e for e in pipe.zrange(started, 0, -1) if e.startswith(prefix)]  # type: ignore[union-attr]
                pipe.multi()
                _unregister(pipe, worker)
                if entries:
                    pipe.zrem(started, *entries)
                    _fail(pipe, job, worker, task_name)
                pipe.execute()
                if entries:
                    failed_job_done(job)
                return job.id if entries else None
            except WatchError:
                continue


def _held_job(redis: Redis, worker: WorkerState) -> Job | None:
    if not worker.current_job:
        return None
    try:
        # the restricted serializer: reading the job's function name never runs code from Redis
        return Job.fetch(worker.current_job, connection=redis, serializer=DisplaySerializer())
    except NoSuchJobError:
        return None


def _unregister(pipe: Pipeline, worker: WorkerState) -> None:
    key = exact(WORKER_KEY_PREFIX + worker.name)  # the worker's exact name: it need not be UTF-8
    pipe.srem(WORKERS_KEY, key)
    for queue in worker.queues:
        pipe.srem(KEYS.workers_of(queue), key)
    pipe.delete(key)


def _fail(pipe: Pipeline, job: Job, worker: WorkerState, task_name: Callable[[str | None], str | None]) -> None:
    ended = now()
    job.ended_at = ended
    fail_job(job, ABANDONED.format(name=worker.name), worker.name, pipe)
    task = task_name(job.func_name)
    if task is not None:
        duration = (ended - job.started_at).total_seconds() if job.started_at else 0.0
        record_run(pipe, task, job.origin, "killed", max(0.0, duration))
