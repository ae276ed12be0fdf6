"""The instrumented worker: RQ's forking Worker, whose job bookkeeping also carries the run metrics.

The horse's @task wrapper hands its run over (tasks.runs) and this worker adds it to the pipeline
RQ executes for the job's outcome. When the horse dies before that pipeline (SIGKILL, OOM, a hard
timeout, a stop command), RQ's parent process fails the job in its own pipeline, and this worker
adds a `killed` or `timeout` run to that one. Either way a run is counted exactly once, in the
same transaction as the job's status. Where those pipelines are, and how the worker rides out a
Redis outage and stops safely, is `tasks.rq_internals.HookedWorker`.
"""

from __future__ import annotations

import time
from typing import Any

from redis.client import Pipeline
from rq.job import Job
from rqscope.tasks.procstats import LIVENESS_FIELD, Publisher
from rqscope.tasks.registry import REGISTRY, TaskRegistry
from rqscope.tasks.rq_internals import STOP_GRACE_SECONDS, UNRECORDED, HookedWorker
from rqscope.tasks.runs import Run, defer_to_worker, pending_run, write

DEFAULT_QUEUES = ("high", "default", "low")

__all__ = ["DEFAULT_QUEUES", "STOP_GRACE_SECONDS", "UNRECORDED", "InstrumentedWorker", "unrecorded_outcome"]


def unrecorded_outcome(elapsed: float, timeout: int | float | None) -> str:
    """What a run the horse did not record was: a timeout if it outlived its limit, else killed."""
    if timeout is not None and timeout > 0 and elapsed >= timeout:
        return "timeout"
    return "killed"


class InstrumentedWorker(HookedWorker):
    """A forking RQ Worker that records task runs inside RQ's own outcome pipelines."""

    task_registry: TaskRegistry = REGISTRY

    def __init__(self, *args: Any, publish_interval: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parent_run: Run | None = None
        self.publisher = Publisher(self.connection, "worker", publish_interval, name=self.name)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        if not self.publisher.is_alive():
            self.publisher.start()

    def serialize(self) -> dict[str, Any]:
        # written by RQ's register_birth, in its own pipeline
        return {**super().serialize(), LIVENESS_FIELD: str(self.publisher.interval)}

    def teardown(self) -> None:
        self.publisher.stop()
        super().teardown()

    def in_horse(self) -> None:
        defer_to_worker()

    def parent_run(self, job: Job) -> None:
        spec = self.task_registry.by_func_path(job.func_name)
        if spec is not None:
            elapsed = time.monotonic() - self.forked_at
            self._parent_run = Run(spec.name, job.origin, unrecorded_outcome(elapsed, job.timeout), elapsed)

    def add_run(self, pipeline: Pipeline | None) -> None:
        run = pending_run() if self.is_horse else self._parent_run
        self._parent_run = None
        if run is None:
            return
        if pipeline is not None:
            run.add_to(pipeline, run_id=self.run_id)
        else:
            write(self.connection, run)
