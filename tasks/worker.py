"""The instrumented worker: RQ's forking Worker, plus the runs a dead horse could not record."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import RedisError
from rq import Queue, Worker
from rq.job import Job

from tasks.metrics import record_run
from tasks.procstats import Publisher
from tasks.registry import RECORDED_KEY_TEMPLATE, REGISTRY, TaskRegistry

log = logging.getLogger(__name__)

DEFAULT_QUEUES = ("high", "default", "low")


def unrecorded_outcome(elapsed: float, timeout: int | float | None) -> str:
    """What a run the horse did not record was: a timeout if it outlived its limit, else killed."""
    if timeout is not None and timeout > 0 and elapsed >= timeout:
        return "timeout"
    return "killed"


class InstrumentedWorker(Worker):
    """A forking RQ Worker whose parent records killed and timed-out horses."""

    task_registry: TaskRegistry = REGISTRY

    def __init__(self, *args: Any, publish_interval: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._horse_exit: int | None = None
        self._forked_pid = 0
        self.publisher = Publisher(self.connection, "worker", publish_interval, name=self.name)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        if not self.publisher.is_alive():
            self.publisher.start()

    def teardown(self) -> None:
        self.publisher.stop()
        super().teardown()

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        self._horse_exit = None
        super().fork_work_horse(job, queue)
        self._forked_pid = self._horse_pid

    def wait_for_horse(self):  # type: ignore[no-untyped-def]
        pid, status, rusage = super().wait_for_horse()
        if pid and self._horse_exit is None:
            self._horse_exit = status
        return pid, status, rusage

    def monitor_work_horse(self, job: Job, queue: Queue) -> None:
        started = time.monotonic()
        super().monitor_work_horse(job, queue)
        if self._horse_exit == 0:
            return
        self.record_unrecorded_run(job, time.monotonic() - started)

    def record_unrecorded_run(self, job: Job, elapsed: float) -> None:
        """Record a run whose horse died before its own metrics write."""
        spec = self.task_registry.by_func_path(job.func_name)
        if spec is None:
            return
        marker = RECORDED_KEY_TEMPLATE.format(worker=self.name)
        try:
            recorded = self.connection.get(marker)
            if recorded is not None and recorded.decode() == f"{job.id}:{self._forked_pid}":
                return
            pipe = self.connection.pipeline(transaction=False)
            record_run(pipe, spec.name, job.origin, unrecorded_outcome(elapsed, job.timeout), elapsed)
            pipe.execute()
        except RedisError as exc:
            log.warning("could not record the killed run of job %s: %s", job.id, exc)
