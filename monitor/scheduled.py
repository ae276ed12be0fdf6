"""Enqueue a scheduled job now: out of the scheduled registry and onto its queue in one atomic step.

Why not RQ's `ScheduledJobRegistry.requeue`: it ZREMs, then re-saves the whole job from a Job object
and pushes it in a second round trip. A crash in between loses the job, and the sidecar's Job objects
decode meta with the display decoder, so re-saving them would rewrite the user's meta with stand-ins.

Here one Lua script moves the job only if its ZREM succeeds, and writes what RQ's scheduler writes
when the job falls due (`Queue._enqueue_job`: status queued, a new enqueued_at, the job's TTL, the id
pushed at the front when RQ would put it there). A second call finds it gone: it never runs twice.

RQ's scheduler is the one writer this cannot fence: it reads the due ids, then enqueues them in a
later pipeline without checking its own ZREM. It only reads ids already due, so a job due more than
DUE_MARGIN seconds from now cannot be in its hands; one due sooner is left to it while a scheduler
holds the queue's lock (409), and enqueued here only when no scheduler runs for that queue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis
from rqscope.monitor.names import exact
from rqscope.monitor.snapshot import as_text
from rqscope.tasks.rq_internals import KEYS, promote_held
from rqscope.tasks.rq_internals.scripts import ENQUEUE_NOW_SCRIPT, rq_timestamp

DUE_MARGIN = 10.0  # seconds: clock skew between hosts plus the scheduler's read-to-write window

MOVED, NOT_SCHEDULED, DUE, GONE = 1, 0, -1, -2


@dataclass(frozen=True)
class EnqueueNow:
    """What became of a request to enqueue a scheduled job now."""

    outcome: int

    @property
    def moved(self) -> bool:
        return self.outcome == MOVED

    @property
    def reason(self) -> str:
        return {
            MOVED: "enqueued",
            NOT_SCHEDULED: "the job is not in its queue's scheduled registry",
            DUE: f"the job is due within {DUE_MARGIN:.0f} s and a scheduler is running for its queue: it enqueues it",
            GONE: "the job's data expired; its id was removed from the scheduled registry",
        }[self.outcome]


def enqueue_now(redis: Redis, job_id: str, queue: str) -> EnqueueNow:
    """Move a scheduled job of `queue` onto the queue now, atomically; see the module docstring."""
    queue_key = exact(KEYS.queue(queue))  # bytes, so that a queue name that is not UTF-8 keys its exact bytes
    keys = [
        exact(KEYS.registry("scheduled", queue)),
        queue_key,
        KEYS.queues,
        KEYS.rate_limit_keys,
        exact(KEYS.scheduler_lock(queue)),
    ]
    args = [KEYS.job(job_id), job_id, queue_key, rq_timestamp(), KEYS.rate_limit_config(""), time.time(), DUE_MARGIN]
    reply = redis.register_script(ENQUEUE_NOW_SCRIPT)(keys=keys, args=args)  # type: ignore[arg-type]
    outcome = int(reply[0])
    if outcome == MOVED and len(reply) == 3:
        promote_held(redis, as_text(reply[1]), int(reply[2]))
    return EnqueueNow(outcome)
