"""The instrumented worker: RQ's forking Worker, whose job bookkeeping also carries the run metrics.

The horse's @task wrapper hands its run over (tasks.runs) and this worker adds it to the pipeline
RQ executes for the job's outcome. When the horse dies before that pipeline (SIGKILL, OOM, a hard
timeout, a stop command), RQ's parent process fails the job in its own pipeline, and this worker
adds a `killed` or `timeout` run to that one. Either way a run is counted exactly once, in the
same transaction as the job's status.

RQ's worker quits on the first Redis error outside its dequeue loop. This one waits a Redis outage
out: the parent's bookkeeping steps retry with a capped backoff, and a horse that could not record
its outcome is settled by the parent once Redis answers (from the job's status, so never twice).

RQ's warm-shutdown signal handler wrote to Redis (when SIGTERM landed while the main thread held
the connection pool's lock, the worker deadlocked on itself) and raised wherever the worker was
(between the pop and the fetch of a job, the job was lost). This one's handler only sets a flag,
which the worker checks where stopping drops nothing (tasks.outage).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue, Worker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.utils import now, utcformat
from rq.worker import WorkerStatus
from rqscope.tasks.outage import REDIS_UNAVAILABLE, ClaimingQueue, stoppable, wait_out
from rqscope.tasks.procstats import LIVENESS_FIELD, Publisher
from rqscope.tasks.registry import REGISTRY, TaskRegistry
from rqscope.tasks.runs import Run, defer_to_worker, pending_run, write

DEFAULT_QUEUES = ("high", "default", "low")
UNRECORDED = "Work-horse ended without recording the job's outcome (Redis was unavailable)"
# how long a worker asked to stop still waits for Redis to record the job it holds
STOP_GRACE_SECONDS = 10.0
T = TypeVar("T")


def unrecorded_outcome(elapsed: float, timeout: int | float | None) -> str:
    """What a run the horse did not record was: a timeout if it outlived its limit, else killed."""
    if timeout is not None and timeout > 0 and elapsed >= timeout:
        return "timeout"
    return "killed"


class InstrumentedWorker(Worker):
    """A forking RQ Worker that records task runs inside RQ's own outcome pipelines."""

    task_registry: TaskRegistry = REGISTRY
    queue_class = ClaimingQueue

    def __init__(self, *args: Any, publish_interval: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._forked_at = 0.0
        self._parent_run: Run | None = None
        self._failing = False
        self._holding_job = False
        self._stop_requested_at = 0.0
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
        self._best_effort("register its death", super().teardown)  # or RQ's key expires on its own

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        self._forked_at = time.monotonic()
        super().fork_work_horse(job, queue)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        defer_to_worker()
        super().main_work_horse(job, queue)

    # -- stopping: the signal handler only sets a flag (RQ's wrote to Redis and raised anywhere)

    def _shutdown(self) -> None:
        if self.scheduler:
            self.stop_scheduler()
        if not self._stop_requested:
            self._stop_requested, self._stop_requested_at = True, time.monotonic()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if self._stop_requested:
            raise StopRequested()
        with stoppable(self._may_stop):
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def reorder_queues(self, reference_queue: Queue) -> None:
        self._holding_job = True  # RQ calls this as soon as a job has been dequeued
        super().reorder_queues(reference_queue)

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        except StopRequested:
            self.log.warning("Worker %s: stopped with Redis unavailable; job %s may be left unrecorded", self.name,
                             job.id)  # fmt: skip
            raise
        finally:
            self._holding_job = False

    def _may_stop(self) -> bool:
        """A stop was requested, and stopping now drops no job (none dequeued or running), or the job
        held has waited for Redis for the whole grace period."""
        if not self._stop_requested:
            return False
        return not self._holding_job or time.monotonic() - self._stop_requested_at > STOP_GRACE_SECONDS

    def _heartbeat(self, timeout: int | None, pipeline: Pipeline | None) -> None:
        super().heartbeat(timeout, pipeline)
        if self._stop_requested and self._shutdown_requested_date:
            # RQ writes this from its signal handler; here it goes with each heartbeat while stopping
            date = utcformat(self._shutdown_requested_date)
            (pipeline if pipeline is not None else self.connection).hset(self.key, "shutdown_requested_date", date)

    # -- riding out a Redis outage (parent process only; a horse fails fast and the parent settles)

    def _patiently(self, step: Callable[..., T], *args: Any) -> T:
        """Run a parent's Redis step through an outage, until a stop request may end it (_may_stop)."""
        if self.is_horse:
            return step(*args)
        return wait_out(step, *args, log_as=f"Worker {self.name}: ", give_up=self._may_stop)

    def check_for_suspension(self, burst: bool) -> None:
        self._patiently(super().check_for_suspension, burst)

    def run_maintenance_tasks(self) -> None:
        self._patiently(super().run_maintenance_tasks)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        self._patiently(self._heartbeat, timeout, pipeline)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        self._patiently(super().set_state, state, pipeline)

    def prepare_execution(self, job: Job) -> Execution:
        return self._patiently(self._prepare_execution, job)

    def _prepare_execution(self, job: Job) -> Execution:
        """RQ's prepare_execution, which also takes the job off RQ's intermediate (dequeuing) list.

        RQ leaves that to the horse, so a worker or horse killed in between left the job both there
        and in the started or failed registry; here it moves in one transaction.
        """
        with self.connection.pipeline() as pipeline:
            self.execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipeline,
                                              worker_name=self.name)  # fmt: skip
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            if len(self.queues) == 1:  # RQ dequeues through the intermediate list only from one queue
                pipeline.lrem(self.queues[0].intermediate_queue_key, 1, job.id)
            pipeline.execute()
        return self.execution

    def _best_effort(self, what: str, step: Callable[..., object], *args: Any) -> None:
        """A Redis step that may be skipped during an outage: logged, not retried."""
        try:
            step(*args)
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("Worker %s: could not %s: %s", self.name, what, exc)

    def maintain_heartbeats(self, job: Job) -> None:
        self._best_effort("send a heartbeat", super().maintain_heartbeats, job)  # the next interval tries again

    def set_current_job_working_time(self, current_job_working_time: float, pipeline: Pipeline | None = None) -> None:
        self._best_effort("record the working time", super().set_current_job_working_time, current_job_working_time,
                          pipeline)  # fmt: skip

    def monitor_work_horse(self, job: Job, queue: Queue) -> None:
        try:
            super().monitor_work_horse(job, queue)
        except REDIS_UNAVAILABLE as exc:
            if self._horse_pid:
                raise
            self.log.warning("Worker %s: settling job %s once Redis is back (%s)", self.name, job.id, exc)
            self._patiently(self._settle, job, queue)

    def _settle(self, job: Job, queue: Queue) -> None:
        """Fail a job whose horse is gone without an outcome; a recorded outcome is left as it is."""
        if job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED):
            return
        job.ended_at = now()
        self.handle_job_failure(job, queue=queue, exc_string=UNRECORDED)

    # -- run accounting

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string: str = "") -> None:  # type: ignore[no-untyped-def]
        if not self.is_horse:
            # The parent fails a job only when its horse died before RQ's bookkeeping ran.
            spec = self.task_registry.by_func_path(job.func_name)
            if spec is not None:
                elapsed = time.monotonic() - self._forked_at
                self._parent_run = Run(spec.name, job.origin, unrecorded_outcome(elapsed, job.timeout), elapsed)
        self._failing = True
        try:
            super().handle_job_failure(job, queue, started_job_registry, exc_string)
        finally:
            self._failing = False
            self._parent_run = None
        # RQ logs and swallows a failed bookkeeping pipeline, and a job left `started` would stay in
        # the started registry for good: raise instead, so that the parent settles it once Redis is back
        if job.get_status(refresh=True) == JobStatus.STARTED:
            raise RedisConnectionError(f"the failure of job {job.id} was not recorded")

    def cleanup_execution(self, job: Job, pipeline: Pipeline) -> None:
        super().cleanup_execution(job, pipeline)
        if self._failing:
            # RQ commits a failed job's status in a pipeline of its own before the failed-count one;
            # the run goes with the status, so that an outage between the two cannot lose or repeat it
            self._add_run(pipeline)

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
        if not self._failing:  # handle_job_failure added it with the status (cleanup_execution)
            self._add_run(pipeline)
