"""Deleting jobs from a queue or registry."""

from __future__ import annotations

from redis import Redis
from rqscope.monitor.jobs import RESULTS_KEY_TEMPLATE, JobFilter, JobLister, entry_key
from rqscope.monitor.snapshot import JOB_KEY_TEMPLATE


def delete_jobs(redis: Redis, queue: str, state: str, ids: list[str], batch: int = 500) -> int:
    """Remove these jobs from the queue or registry and delete their hashes and results; return how many."""
    if state == "started":
        raise ValueError("running jobs are stopped, not deleted")
    key = entry_key(queue, state)
    removed = 0
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        pipe = redis.pipeline()
        for job_id in chunk:
            if state == "queued":
                pipe.lrem(key, 0, job_id)
            else:
                pipe.zrem(key, job_id)
            job_key = JOB_KEY_TEMPLATE.format(id=job_id)
            pipe.delete(
                job_key, f"{job_key}:dependents", f"{job_key}:dependencies", RESULTS_KEY_TEMPLATE.format(id=job_id)
            )
        replies = pipe.execute()
        removed += sum(1 for reply in replies[::2] if reply)
    return removed


def empty(redis: Redis, queue: str, state: str) -> int:
    """Delete every job of the queue or registry; return how many."""
    ids, _ = JobLister(redis).all_matching(queue, state, JobFilter())
    return delete_jobs(redis, queue, state, ids)
