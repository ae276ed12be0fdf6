"""Failing a job from outside a worker, and filling an rq 3 limit's free slots, through RQ's public APIs."""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.results import Result


def fail_job(job: Job, exc_string: str, worker_name: str, pipeline: Pipeline) -> None:
    """Record a job as failed in a caller's pipeline, as RQ's worker does: failed registry and a result."""
    job.set_status(JobStatus.FAILED, pipeline=pipeline)
    job.failed_job_registry.add(job, ttl=job.failure_ttl, exc_string=exc_string, pipeline=pipeline)
    Result.create_failure(job, job.failure_ttl, exc_string=exc_string, worker_name=worker_name, pipeline=pipeline)


def promote_held(redis: Redis, key: str, concurrency: int) -> list[str]:
    """Move jobs an rq 3 concurrency limit holds back onto their queues while it has free slots."""
    from rq.rate_limit import RateLimitRegistry  # type: ignore[import-not-found]  # rq 3 only

    return list(RateLimitRegistry(key, connection=redis).acquire_and_enqueue(concurrency))
