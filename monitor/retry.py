"""Atomic, batched retry of failed jobs.

RQ's FailedJobRegistry.requeue takes about eight commands per job and removes the job from the
registry before it re-enqueues it, so a crash in between loses the job. Here each batch is one Lua
script: a job moves only if ZREM removed it from the failed registry, and in the same atomic step
its hash gets what RQ's requeue writes (status queued, a new enqueued_at, started/ended/exc_info
cleared, the failure TTL lifted) and its id is pushed onto the queue. A job id therefore ends in
exactly one place, and retrying twice never enqueues twice.

A job under an rq 3 concurrency limit goes back the way RQ's own requeue sends it: held back
(status `rate_limited`) in its limit's waiting set, in the same atomic step; RQ's limiter then
promotes it onto the queue when a slot is free, so a retry never exceeds the limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from redis import Redis
from rqscope.monitor.names import exact
from rqscope.monitor.snapshot import (
    JOB_KEY_TEMPLATE,
    QUEUE_KEY_PREFIX,
    QUEUES_KEY,
    REGISTRY_KEY_TEMPLATES,
    as_text,
)
from rqscope.tasks.rq_internals import KEYS, promote_held
from rqscope.tasks.rq_internals.scripts import RETRY_SCRIPT, rq_timestamp

BATCH_SIZE = 500


def batches(ids: Iterable[str], size: int = BATCH_SIZE) -> Iterator[list[str]]:
    batch: list[str] = []
    for job_id in ids:
        batch.append(job_id)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Retrier:
    """Retries failed jobs of one Redis in atomic batches."""

    def __init__(self, redis: Redis, batch_size: int = BATCH_SIZE) -> None:
        self.redis = redis
        self.batch_size = batch_size
        self.script = redis.register_script(RETRY_SCRIPT)

    def retry(self, queue: str, ids: Sequence[str]) -> int:
        """Move these ids from the queue's failed registry back onto the queue; return how many moved."""
        # bytes, so that a queue name that is not UTF-8 keys its exact bytes
        keys = [
            exact(REGISTRY_KEY_TEMPLATES["failed"].format(queue=queue)),
            exact(QUEUE_KEY_PREFIX + queue),
            QUEUES_KEY,
            KEYS.rate_limit_keys,
        ]
        moved = 0
        for batch in batches(dict.fromkeys(ids), self.batch_size):
            args = [
                JOB_KEY_TEMPLATE.format(id=""),
                exact(QUEUE_KEY_PREFIX + queue),
                rq_timestamp(),
                KEYS.rate_limit_config(""),
                time.time(),
                *batch,
            ]
            reply = self.script(keys=keys, args=args)  # type: ignore[arg-type]
            moved += int(reply[0])
            for key, concurrency in zip(reply[1::2], reply[2::2], strict=True):
                promote_held(self.redis, as_text(key), int(concurrency))
        return moved

    def failed_ids(self, queue: str) -> list[str]:
        """Every id in the failed registry now: the bound for "retry all", so it cannot run forever."""
        raw = cast(list[Any], self.redis.zrange(exact(REGISTRY_KEY_TEMPLATES["failed"].format(queue=queue)), 0, -1))
        return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]

    def retry_all(self, queue: str) -> int:
        return self.retry(queue, self.failed_ids(queue))
