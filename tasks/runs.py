"""Where a finished run's metrics go: straight to Redis, or into the worker's own pipeline.

Under any RQ worker the @task wrapper writes a run with one pipelined round trip. Under
`rqscope worker` the work horse instead hands the run to the worker, which adds it to the
pipeline RQ executes to record the job's outcome: no extra round trip, and the metrics are
committed in the same transaction as the job's status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis, RedisError
from redis.client import Pipeline
from rqscope.tasks.metrics import record_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    task: str
    queue: str
    outcome: str
    duration: float

    def add_to(self, pipeline: Pipeline, run_id: str | None = None) -> None:
        """Queue this run's writes; with a run id, a replay of them counts nothing twice."""
        record_run(pipeline, self.task, self.queue, self.outcome, self.duration, run_id=run_id)


class _Handoff:
    """This process's hand-off state; a forked horse runs one job, so one pending run suffices."""

    deferring = False
    pending: Run | None = None


_handoff = _Handoff()


def defer_to_worker() -> None:
    """Called in a work horse: keep runs for the worker's pipeline instead of writing them."""
    _handoff.deferring = True
    _handoff.pending = None


def pending_run() -> Run | None:
    return _handoff.pending


def finish(connection: Redis, run: Run) -> None:
    """Record a finished run, or keep it for the worker's pipeline when deferring."""
    if _handoff.deferring:
        _handoff.pending = run
        return
    write(connection, run)


def write(connection: Redis, run: Run) -> None:
    """Write one run with a single pipelined round trip; a metrics write never fails the job."""
    try:
        pipe = connection.pipeline(transaction=False)
        run.add_to(pipe)
        pipe.execute()
    except RedisError as exc:
        log.warning("could not record metrics for task %s: %s", run.task, exc)
