"""Failing a job from outside a worker, through RQ's public registry and result APIs."""

from __future__ import annotations

from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.results import Result


def fail_job(job: Job, exc_string: str, worker_name: str, pipeline: Pipeline) -> None:
    """Record a job as failed in a caller's pipeline, as RQ's worker does: failed registry and a result."""
    job.set_status(JobStatus.FAILED, pipeline=pipeline)
    job.failed_job_registry.add(job, ttl=job.failure_ttl, exc_string=exc_string, pipeline=pipeline)
    Result.create_failure(job, job.failure_ttl, exc_string=exc_string, worker_name=worker_name, pipeline=pipeline)
