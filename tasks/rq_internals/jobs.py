"""Failing a job from outside a worker, scheduling one inside a transaction, and filling an rq 3 limit's free
slots, through RQ's public APIs."""

from __future__ import annotations

from datetime import datetime

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.results import Result


def schedule_job(pipeline: Pipeline, queue: Queue, job: Job, at: datetime) -> None:
    """`Queue.schedule_job` with every write on `pipeline`. Before rq 3.0, `ScheduledJobRegistry.schedule`
    sends its ZADD on the registry's own connection, whatever pipeline it is given, so a transaction would
    not hold it; a queue whose connection is the pipeline makes that ZADD one of the pipeline's commands."""
    on_pipeline = Queue(queue.name, connection=pipeline, serializer=queue.serializer)  # type: ignore[arg-type]
    on_pipeline.schedule_job(job, at, pipeline=pipeline)


def fail_job(job: Job, exc_string: str, worker_name: str, pipeline: Pipeline) -> None:
    """Record a job as failed in a caller's pipeline, as RQ's worker does: failed registry and a result.
    Once the pipeline has run, `failed_job_done(job)` frees its rq 3 concurrency slot, as RQ's worker does."""
    job.set_status(JobStatus.FAILED, pipeline=pipeline)
    job.failed_job_registry.add(job, ttl=job.failure_ttl, exc_string=exc_string, pipeline=pipeline)
    Result.create_failure(job, job.failure_ttl, exc_string=exc_string, worker_name=worker_name, pipeline=pipeline)


def record_retried_attempt(
    pipeline: Pipeline, job: Job, exc_string: str, worker_name: str, execution: Execution | None
) -> None:
    """A `retried` result, with its exception, for a failed run that RQ retries: RQ keeps a result for every
    other run (success, failure, stop, a returned Retry) but none for this one, so its traceback was lost."""
    Result(
        job.id,
        Result.Type.RETRIED,
        job.connection,
        exc_string=exc_string,
        worker_name=worker_name,
        serializer=job.serializer,
        execution_id=execution.id if execution is not None else None,
        execution_started_at=execution.created_at if execution is not None else None,
        execution_ended_at=job.ended_at,
    ).save(ttl=job.failure_ttl, pipeline=pipeline)


def promote_held(redis: Redis, key: str, concurrency: int) -> list[str]:
    """Move jobs an rq 3 concurrency limit holds back onto their queues while it has free slots."""
    from rq.rate_limit import RateLimitRegistry  # type: ignore[import-not-found]  # rq 3 only

    return list(RateLimitRegistry(key, connection=redis).acquire_and_enqueue(concurrency))


def release_limit(redis: Redis, key: str, job_id: str) -> list[str]:
    """After a job under an rq 3 concurrency limit was deleted: free its slot and promote waiting jobs."""
    from rq.rate_limit import RateLimitRegistry  # type: ignore[import-not-found]  # rq 3 only

    return list(RateLimitRegistry(key, connection=redis).cancel(job_id))


def failed_job_done(job: Job) -> None:
    """After fail_job's pipeline ran: free the job's rq 3 concurrency slot and promote waiting jobs."""
    if getattr(job, "has_rate_limit", False):  # rq 3 only
        from rq.rate_limit import release_slot  # type: ignore[import-not-found]

        job._status = JobStatus.FAILED  # release_slot reads the cached status the pipeline just wrote
        release_slot(job)
