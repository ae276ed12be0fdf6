"""Exception types among a queue's failed jobs."""

from __future__ import annotations

from collections import Counter

from redis import Redis
from rqscope.monitor.jobs import SCAN_LIMIT, JobLister


def exception_summary(redis: Redis, queue: str, limit: int = SCAN_LIMIT) -> tuple[Counter[str], int, int]:
    """Exception types among the newest `limit` failed jobs: (counts, scanned, registry size)."""
    lister = JobLister(redis)
    size, ids = lister._range(queue, "failed", 0, limit - 1, "newest")
    counts = Counter(row.exc_type or "unknown" for row in lister.rows(ids, True))
    return counts, len(ids), size
