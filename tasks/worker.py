"""The instrumented worker: RQ's forking Worker, whose job bookkeeping also carries the run metrics.

The horse's @task wrapper hands its run over (tasks.runs) and this worker adds it to the pipeline
RQ executes for the job's outcome. When the horse dies before that pipeline (SIGKILL, OOM, a hard
timeout, a stop command), RQ's parent process fails the job in its own pipeline, and this worker
adds a `killed` or `timeout` run to that one. Either way a run is counted exactly once, in the
same transaction as the job's status.
"""

from __future__ import annotations

import time
from typing import Any

from redis.client import Pipeline
from rq import Queue, Worker
from rq.job import Job

from tasks.procstats import Publisher
from tasks.registry import REGISTRY, TaskRegistry
from tasks.runs import Run, defer_to_worker, pending_run, write

DEFAULT_QUEUES = ("high", "default", "low")


def unrecorded_outcome(elapsed: float, timeout: int | float | None) -> str:
    """What a run the horse did not record was: a timeout if it outlived its limit, else killed."""
    if timeout is not None and timeout > 0 and elapsed >= timeout:
        return "timeout"
    return "killed"


class InstrumentedWorker(Worker):
    """A forking RQ Worker that records task runs inside RQ's own outcome pipelines."""

    task_registry: TaskRegistry = REGISTRY

    def __init__(self, *args: Any, publish_interval: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._forked_at = 0.0
        self._parent_run: Run | None = None
        self.publisher = Publisher(self.connection, "worker", publish_interval, name=self.name)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        if not self.publisher.is_alive():
            self.publisher.start()

    def teardown(self) -> None:
        self.publisher.stop()
        super().teardown()

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        self._forked_at = time.monotonic()
        super().fork_work_horse(job, queue)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        defer_to_worker()
        super().main_work_horse(job, queue)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string: str = "") -> None:  # type: ignore[no-untyped-def]
        if not self.is_horse:
            # The parent fails a job only when its horse died before RQ's bookkeeping ran.
            spec = self.task_registry.by_func_path(job.func_name)
            if spec is not None:
                elapsed = time.monotonic() - self._forked_at
                self._parent_run = Run(spec.name, job.origin, unrecorded_outcome(elapsed, job.timeout), elapsed)
        try:
            super().handle_job_failure(job, queue, started_job_registry, exc_string)
        finally:
            self._parent_run = None

    def _add_run(self, pipeline: Pipeline | None) -> None:
        run = pending_run() if self.is_horse else self._parent_run
        if run is None:
            return
        if pipeline is not None:
            run.add_to(pipeline)
        else:
            write(self.connection, run)

    def increment_successful_job_count(self, pipeline: Pipeline | None = None) -> None:
        super().increment_successful_job_count(pipeline)
        self._add_run(pipeline)

    def increment_failed_job_count(self, pipeline: Pipeline | None = None) -> None:
        super().increment_failed_job_count(pipeline)
        self._add_run(pipeline)
