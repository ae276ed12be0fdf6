"""Jobs repeated by rq-scheduler (`scheduler.cron(...)`, `scheduler.schedule(..., interval=)`), listed read-only.

rq-scheduler keeps one sorted set, `rq:scheduler:scheduled_jobs` (its own fixed name, whatever RQ's key
prefix), of job ids scored by their next run (epoch seconds). A repeating job is an ordinary RQ job hash
whose pickled `meta` holds `cron_string` or `interval`; the same job id is enqueued on every run.
"""

from __future__ import annotations

from typing import Any

from rqscope.monitor.cron import MAX_TEXT, CronJobState, CronRun, overdue_seconds
from rqscope.monitor.display import DisplayError, loads
from rqscope.monitor.names import as_name

RQ_SCHEDULER_JOBS_KEY = "rq:scheduler:scheduled_jobs"
RQ_SCHEDULER_NAME = "rq-scheduler"


def _meta(raw: bytes | None) -> dict[str, Any]:
    """The job's meta through the restricted unpickler: nothing in it is imported or run."""
    if not raw:
        return {}
    try:
        value = loads(raw)
    except DisplayError:
        return {}
    return value if isinstance(value, dict) else {}


def _func(description: bytes | None) -> str | None:
    """rq's description is the call, `module.func(args...)`: the part before the arguments."""
    if not description:
        return None
    text = as_name(description)
    return text.split("(", 1)[0][:MAX_TEXT] or None


def shape_entry(
    job_id: str,
    next_run: float,
    origin: bytes | None,
    meta: bytes | None,
    description: bytes | None,
    run: CronRun,
    now: float,
) -> CronJobState | None:
    """A repeating rq-scheduler job; None for a one-off (enqueue_at/enqueue_in) or a job hash that is gone."""
    found = _meta(meta)
    cron = found.get("cron_string")
    cron = cron[:MAX_TEXT] if isinstance(cron, str) and cron else None
    every = found.get("interval")
    interval = float(every) if isinstance(every, int) and not isinstance(every, bool) and every > 0 else None
    if cron is None and interval is None:
        return None
    return CronJobState(
        name=job_id,
        func=_func(description),
        queue=as_name(origin)[:MAX_TEXT] if origin else None,
        cron=cron,
        interval=None if cron else interval,
        last_enqueued_at=run.enqueued_at,
        next_enqueue_at=next_run,
        overdue_seconds=overdue_seconds(next_run, now),
        scheduler=RQ_SCHEDULER_NAME,
        runs=(run,) if run.status is not None else (),
        source=RQ_SCHEDULER_NAME,
    )
