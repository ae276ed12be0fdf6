"""RQ's Queue, whose dequeue never loses a job: a job is claimed atomically into a place that survives.

RQ pops from several queues with BLPOP: when the reply is lost (a dropped connection, a Redis
restart in the same instant), the job is in no queue and no registry. Here every dequeue, from one
queue or several, is one script that moves the first job of the first non-empty queue, in priority
order, into that queue's intermediate list (RQ's own dequeuing list) and records the claim in the
worker's claim hash. Sending the script again after a lost reply returns the same job. The worker
clears the claim in the transaction that starts the job (HookedWorker._prepare_execution); a job
left there by a worker that died is failed by RQ's intermediate-list maintenance, never lost.

The blocking wait pops nothing: it rotates the first queue onto itself (BLMOVE LEFT LEFT) for at
most a second, then claims again, so a stop request is seen within a second, and a job on a
lower-priority queue waits at most that long when the worker is idle.

Paused queues (rqscope's set PAUSED_KEY, of queue keys) and RQ's suspension (`rq suspend`) are read
by the same script: a paused queue is skipped without popping, and a suspended worker claims nothing,
even one already waiting for a job (RQ itself only looks between jobs). The blocking wait is on the
first queue that is not paused; with none left, the worker sleeps a second between claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Queue
from rq.defaults import DEFAULT_FAILURE_TTL as FAILURE_TTL
from rq.exceptions import DequeueTimeout, NoSuchJobError, StopRequested
from rq.registry import FailedJobRegistry
from rqscope.tasks.outage import STOP_CHECK_SECONDS, never, wait_out
from rqscope.tasks.rq_internals.keys import KEYS

log = logging.getLogger(__name__)
CLAIM_TTL_SECONDS = 24 * 3600
IDLE_CHECK_SECONDS = 0.1  # how often a worker with nothing to wait on looks for a stop request

# rqscope's set of paused queues' keys. Under RQ's key prefix, so that a prefix holding a Redis Cluster
# hash tag puts it in the slot of the queues the claim script reads with it.
PAUSED_KEY = f"{KEYS.prefix}:rqscope:paused"

# KEYS[1]: the worker's claim hash; KEYS[2]: the paused set; KEYS[3]: RQ's suspension flag; then, per
# queue in priority order, its list and its intermediate list. ARGV[1]: the claim's TTL.
# Returns {queue key, job id}; {queue key} of the first queue not paused when every such queue is
# empty; false when the workers are suspended or every queue is paused.
CLAIM_SCRIPT = """
local held = redis.call('HMGET', KEYS[1], 'queue', 'id')
if held[1] and held[2] then
  for i = 4, #KEYS, 2 do
    if KEYS[i] == held[1] and redis.call('LPOS', KEYS[i + 1], held[2]) then return {held[1], held[2]} end
  end
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
local open = false
for i = 4, #KEYS, 2 do
  if redis.call('SISMEMBER', KEYS[2], KEYS[i]) == 0 then
    local id = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
    if id then
      redis.call('HSET', KEYS[1], 'queue', KEYS[i], 'id', id)
      redis.call('EXPIRE', KEYS[1], ARGV[1])
      return {KEYS[i], id}
    end
    open = open or KEYS[i]
  end
end
if open then return {open} end
return false
"""


@dataclass(frozen=True)
class Claiming:
    """Who is dequeuing: the worker's claim hash, and when a stop request may end the wait."""

    claim_key: str
    stop_requested: Callable[[], bool] = never


_claiming: ContextVar[Claiming | None] = ContextVar("rqscope_claiming", default=None)


@contextmanager
def claiming(claim_key: str, stop_requested: Callable[[], bool]) -> Iterator[None]:
    """Within this block StoppableQueue.dequeue_any claims into `claim_key` and honours stop requests."""
    token = _claiming.set(Claiming(claim_key, stop_requested))
    try:
        yield
    finally:
        _claiming.reset(token)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StoppableQueue(Queue):
    """A Queue whose dequeue claims a job atomically, and whose blocking wait a stop request can end."""

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls,
        queues: Sequence[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: Any = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> Any:
        context = _claiming.get()
        if context is None:
            return super().dequeue_any(queues, timeout, connection, job_class, serializer, death_penalty_class)
        queues = list(queues)
        by_key = {queue.key: queue for queue in queues}
        pairs = (key for queue in queues for key in (queue.key, queue.intermediate_queue_key))
        keys = [context.claim_key, PAUSED_KEY, KEYS.suspended, *pairs]
        script = connection.register_script(CLAIM_SCRIPT)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            claimed = wait_out(
                script, keys, [CLAIM_TTL_SECONDS], log_as="claiming a job: ", give_up=context.stop_requested
            )
            if claimed and len(claimed) == 2:
                queue = by_key[_text(claimed[0])]
                job_id = _text(claimed[1])
                try:
                    job = wait_out(
                        queue.job_class.fetch,
                        job_id,
                        queue.connection,
                        queue.serializer,
                        log_as=f"claimed job {job_id}: ",
                    )
                except NoSuchJobError:  # the job's hash expired while it waited: drop the claim, take the next
                    wait_out(_drop_claim, connection, context.claim_key, queue, job_id, None)
                    continue
                except Exception as exc:  # a hash RQ cannot read: fail it, or every restart would claim it again
                    log.error("job %s cannot be read (%r); failing it", job_id, exc)
                    wait_out(
                        _drop_claim, connection, context.claim_key, queue, job_id, f"RQ cannot read the job: {exc!r}"
                    )
                    continue
                return job, queue
            if deadline is None:
                return None
            open_key = claimed[0] if claimed else None
            _wait_for_work(connection, open_key, deadline, timeout, context.stop_requested)


def _wait_for_work(
    connection: Redis,
    open_key: bytes | str | None,
    deadline: float,
    timeout: int | None,
    stop_requested: Callable[[], bool],
) -> None:
    """Block for at most a second until the first queue not paused has a job, taking nothing off it;
    with no such queue (all paused, or the workers suspended) sleep that second, sending nothing."""
    if stop_requested():
        raise StopRequested()
    left = deadline - time.monotonic()
    if left <= 0:
        raise DequeueTimeout(timeout, open_key)
    wait = max(0.01, min(float(STOP_CHECK_SECONDS), left))
    if open_key is not None:
        wait_out(connection.blmove, open_key, open_key, wait, "LEFT", "LEFT", give_up=stop_requested)
        return
    until = time.monotonic() + wait
    while (rest := until - time.monotonic()) > 0:
        time.sleep(min(rest, IDLE_CHECK_SECONDS))
        if stop_requested():
            raise StopRequested()


def _drop_claim(connection: Redis, claim_key: str, queue: Queue, job_id: str, failure: str | None) -> None:
    """Release a claimed job that cannot run; with a `failure`, leave it failed (status, reason and
    failed registry, written field by field: RQ cannot load it) so it stays visible and retryable."""
    with connection.pipeline() as pipe:
        pipe.lrem(queue.intermediate_queue_key, 1, job_id)
        pipe.delete(claim_key)
        if failure is not None:
            pipe.hset(queue.job_class.key_for(job_id), mapping={"status": "failed", "exc_info": failure})
            pipe.zadd(FailedJobRegistry(queue.name, connection=connection).key, {job_id: time.time() + FAILURE_TTL})
        pipe.execute()
