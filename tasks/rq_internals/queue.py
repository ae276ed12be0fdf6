"""RQ's Queue, whose dequeue keeps a job it has popped through a Redis outage or a stop request."""

from __future__ import annotations

import logging
from typing import Any

from rq import Queue
from rqscope.tasks.outage import REDIS_UNAVAILABLE, in_slices, wait_out

log = logging.getLogger(__name__)


class StoppableQueue(Queue):
    """A Queue whose blocking wait for a job ends on a stop request, and whose dequeue keeps a popped job.

    With more than one queue RQ pops the id (BLPOP) and then reads the job; an outage between the
    two would leave the job in no queue and no registry. Here the fetch waits for Redis instead, and
    inside `outage.stoppable` the blocking pop is sliced so that a stop request is seen before a pop.
    """

    @classmethod
    def lpop(cls, queue_keys: Any, timeout: int | None, connection: Any = None) -> Any:
        return in_slices(lambda t: super(StoppableQueue, cls).lpop(queue_keys, t, connection=connection), timeout)

    @classmethod
    def lmove(cls, connection: Any, queue_key: str, timeout: int | None) -> Any:
        return in_slices(lambda t: super(StoppableQueue, cls).lmove(connection, queue_key, t), timeout)

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls, queues: Any, timeout: int | None, connection: Any, *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return super().dequeue_any(queues, timeout, connection, *args, **kwargs)
        except REDIS_UNAVAILABLE as exc:
            # RQ attaches what it had popped to the error it raises while fetching the job
            job_id, queue = getattr(exc, "job_id", None), getattr(exc, "queue", None)
            if job_id is None or queue is None:
                raise  # nothing was popped
            log.warning("Redis went away while job %s was being dequeued; keeping it", job_id)
            job = wait_out(queue.fetch_job, job_id, log_as=f"dequeued job {job_id}: ")
            return (job, queue) if job is not None else None
