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
from datetime import UTC, datetime
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

BATCH_SIZE = 500

# KEYS: failed registry, queue list, queue set, rate-limit key set.
# ARGV: job key prefix, queue key, enqueued_at, rate-limit key prefix, timestamp, ids...
# Returns {moved, limit key, concurrency, limit key, concurrency, ...} for the limits that held jobs.
RETRY_SCRIPT = """
local moved, limits, held = 0, {}, {}
for i = 6, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local job = ARGV[1] .. id
    if redis.call('EXISTS', job) == 1 then
      local limit = redis.call('HMGET', job, 'rate_limit_key', 'rate_limit_concurrency', 'ttl')
      local status = 'queued'
      if limit[1] and limit[2] then status = 'rate_limited' end
      redis.call('HSET', job, 'status', status, 'enqueued_at', ARGV[3],
                 'started_at', '', 'ended_at', '', 'exc_info', '')
      local ttl = tonumber(limit[3] or '')
      if ttl and ttl > 0 then redis.call('EXPIRE', job, ttl) else redis.call('PERSIST', job) end
      if status == 'rate_limited' then
        local base = ARGV[4] .. limit[1]
        redis.call('SADD', KEYS[4], limit[1])
        redis.call('HSET', base, 'concurrency', limit[2])
        redis.call('ZADD', base .. ':rate_limited', ARGV[5], id)
        if not held[limit[1]] then
          held[limit[1]] = true
          table.insert(limits, limit[1])
          table.insert(limits, limit[2])
        end
      else
        redis.call('RPUSH', KEYS[2], id)
      end
      moved = moved + 1
    end
  end
end
if moved > 0 then redis.call('SADD', KEYS[3], ARGV[2]) end
table.insert(limits, 1, moved)
return limits
"""


def rq_timestamp(moment: datetime | None = None) -> str:
    """A timestamp in the format RQ writes (utcformat)."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
