"""Pure shaping: Snapshot -> plain rows for JSON, the terminal and templates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rqscope.monitor.names import encode_segment
from rqscope.monitor.snapshot import JOB_STATES, QueueState, RateLimitState, Snapshot, WorkerState


def utc_moment(epoch: float) -> datetime | None:
    """The UTC time of an epoch, or None for one no calendar holds (a garbled number from Redis)."""
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def iso(moment: datetime | float | None) -> str | None:
    """ISO 8601 in UTC; None for no moment, or one no calendar holds."""
    if isinstance(moment, (int, float)):
        moment = utc_moment(moment)
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def queue_row(queue: QueueState) -> dict[str, Any]:
    return {
        "name": queue.name,
        "url_name": encode_segment(queue.name),  # the name as one URL path segment, for /api/queues/<url_name>/...
        "counts": queue.counts,
        "latency_seconds": round(queue.latency_seconds, 3),
        "oldest_enqueued_at": iso(queue.oldest_enqueued_at),
        "workers": queue.workers,
        "no_workers": queue.queued > 0 and queue.workers == 0,
        "scheduler_locked": queue.scheduler_locked,
    }


def worker_row(worker: WorkerState) -> dict[str, Any]:
    process = worker.process
    return {
        "name": worker.name,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "state": worker.state,
        "dead": worker.dead,
        "queues": list(worker.queues),
        "current_job": worker.current_job,
        "current_job_seconds": round(worker.current_job_seconds, 3),
        "heartbeat_age_seconds": None if worker.heartbeat_age is None else round(worker.heartbeat_age, 3),
        "birth": iso(worker.birth),
        "successful_jobs": worker.successful_jobs,
        "failed_jobs": worker.failed_jobs,
        "working_seconds": round(worker.working_seconds, 3),
        "rss_bytes": process.rss_bytes if process else None,
        "cpu_seconds": process.cpu_seconds if process else None,
        "pool": {"in_use": process.pool_in_use, "idle": process.pool_idle, "max": process.pool_max}
        if process
        else None,
    }


def rate_limit_row(limit: RateLimitState) -> dict[str, Any]:
    return {
        "key": limit.key,
        "concurrency": limit.concurrency,
        "allowed": limit.allowed,
        "held": limit.held,
        "oldest_held_seconds": round(limit.oldest_held_seconds, 3),
    }


def redis_row(snapshot: Snapshot) -> dict[str, Any]:
    info = snapshot.redis.info
    return {
        "up": snapshot.redis.up,
        "error": snapshot.redis.error or None,
        "version": snapshot.redis.version or None,
        **{name: int(value) for name, value in info.items()},
    }


def totals(snapshot: Snapshot) -> dict[str, int]:
    return {state: sum(q.counts[state] for q in snapshot.queues) for state in JOB_STATES}


def snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "taken_at": iso(snapshot.taken_at),
        "redis": redis_row(snapshot),
        "totals": totals(snapshot),
        "queues": [queue_row(q) for q in snapshot.queues],
        "workers": [worker_row(w) for w in snapshot.workers],
        "cron_schedulers": snapshot.cron_schedulers,
        "rate_limits": [rate_limit_row(limit) for limit in snapshot.rate_limits],
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _clean(text: str, width: int = 40) -> str:
    """Printable, bounded text for a terminal: no escape sequences from Redis data."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable if len(printable) <= width else printable[: width - 1] + "…"


def render_text(snapshot: Snapshot) -> str:
    """The snapshot as terminal tables, like `rq info` with latency and dead workers."""
    if not snapshot.redis.up:
        return f"Redis is unreachable ({snapshot.redis.error}); nothing to show.\n"
    lines = []
    header = f"{'QUEUE':<24} {'QUEUED':>8} {'STARTED':>8} {'FAILED':>8} {'FINISHED':>9} {'SCHED':>6} "
    header += f"{'DEFER':>6} {'LATENCY':>8} {'WORKERS':>8}"
    lines.append(header)
    for queue in snapshot.queues:
        counts = queue.counts
        warn = "  ! no workers" if queue.queued and not queue.workers else ""
        lines.append(
            f"{_clean(queue.name, 24):<24} {counts['queued']:>8} {counts['started']:>8} {counts['failed']:>8} "
            f"{counts['finished']:>9} {counts['scheduled']:>6} {counts['deferred']:>6} "
            f"{_age(queue.latency_seconds if queue.queued else None):>8} {queue.workers:>8}{warn}"
        )
    if not snapshot.queues:
        lines.append("(no queues)")
    lines.append("")
    lines.append(f"{'WORKER':<32} {'HOST':<16} {'STATE':<10} {'HEARTBEAT':>9} {'OK':>7} {'FAILED':>7}  QUEUES")
    for worker in snapshot.workers:
        flag = "  ! dead" if worker.dead else ""
        lines.append(
            f"{_clean(worker.name, 32):<32} {_clean(worker.hostname, 16):<16} {worker.state:<10} "
            f"{_age(worker.heartbeat_age):>9} {worker.successful_jobs:>7} {worker.failed_jobs:>7}  "
            f"{_clean(','.join(worker.queues), 40)}{flag}"
        )
    if not snapshot.workers:
        lines.append("(no workers)")
    info = snapshot.redis.info
    lines.append("")
    lines.append(
        f"redis {snapshot.redis.version}: {int(info.get('connected_clients', 0))}/{int(info.get('maxclients', 0))} "
        f"clients, {int(info.get('used_memory', 0)) // 1024} KiB used, "
        f"{len(snapshot.dead_workers)} dead worker(s)"
    )
    return "\n".join(lines) + "\n"
