"""RQ's forking Worker with hooks where RQ has none: outcome pipelines, outage waits, a safe stop.

The overrides here follow RQ's call order and signatures (rq 2.11 to 3.0; RQ 3 passes the
execution explicitly, RQ 2 keeps it on the worker). The run accounting they feed is the
subclass's (`rqscope.tasks.worker.InstrumentedWorker`): `in_horse`, `parent_run` and `add_run`.

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
from rq.exceptions import InvalidJobOperation, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.utils import now, utcformat
from rq.worker import WorkerStatus
from rqscope.tasks.outage import REDIS_UNAVAILABLE, wait_out
from rqscope.tasks.rq_internals.checks import verify_rq, verify_worker
from rqscope.tasks.rq_internals.jobs import record_retried_attempt
from rqscope.tasks.rq_internals.queue import StoppableQueue, claiming

UNRECORDED = "Work-horse ended without recording the job's outcome (Redis was unavailable)"
# how long a worker asked to stop still waits for Redis to record the job it holds
STOP_GRACE_SECONDS = 10.0
T = TypeVar("T")


def _status(job: Job) -> JobStatus | None:
    """The job's status in Redis now; None when its hash is gone."""
    try:
        return job.get_status(refresh=True)
    except InvalidJobOperation:
        return None


def _execution_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Execution | None:
    """The execution RQ 3 passes to a hook (RQ 2 keeps it on the worker instead)."""
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, Execution)), None)


def _execution_id(execution: Execution | None) -> str | None:
    return execution.id if execution is not None else None


class HookedWorker(Worker):
    """A forking RQ Worker that waits out Redis outages, stops safely and exposes its outcome pipelines."""

    queue_class = StoppableQueue

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        verify_rq()
        super().__init__(*args, **kwargs)
        verify_worker(self)
        self.forked_at = 0.0
        self.horse_job_id: str | None = None  # the job this worker's last horse ran
        self.run_id: str | None = None  # the execution whose outcome is being recorded
        self.failing = False
        self.retried_attempt: tuple[Job, str, Execution | None] | None = None  # recorded with RQ's pipeline
        self.holding_job = False
        self.stop_requested_at = 0.0

    # -- what the subclass decides

    def in_horse(self) -> None:
        """Called first thing in a forked work horse."""

    def parent_run(self, job: Job) -> None:
        """Called in the parent before it fails a job whose horse died without recording an outcome."""

    def add_run(self, pipeline: Pipeline | None) -> None:
        """Called with the pipeline that records a job's outcome (None: RQ wrote it without one)."""

    # -- the horse

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        self.forked_at, self.horse_job_id = time.monotonic(), job.id
        super().fork_work_horse(job, queue)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        self.run_id = _execution_id(self.execution)
        self.in_horse()
        super().main_work_horse(job, queue)

    # -- stopping: the signal handler only sets a flag (RQ's wrote to Redis and raised anywhere)

    def _shutdown(self) -> None:
        if self.scheduler:
            self.stop_scheduler()
        if not self._stop_requested:
            self._stop_requested, self.stop_requested_at = True, time.monotonic()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if self._stop_requested:
            raise StopRequested()
        with claiming(self.claim_key, self.may_stop):
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def reorder_queues(self, reference_queue: Queue) -> None:
        self.holding_job = True  # RQ calls this as soon as a job has been dequeued
        super().reorder_queues(reference_queue)

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        except StopRequested:
            self.log.warning(
                "Worker %s: stopped with Redis unavailable; job %s may be left unrecorded", self.name, job.id
            )
            raise
        finally:
            self.holding_job = False

    @property
    def claim_key(self) -> str:
        """Where this worker records the job it has claimed and not yet started (StoppableQueue)."""
        return f"{self.key}:rqscope-claim"  # beside RQ's worker key, so in the same cluster slot

    def may_stop(self) -> bool:
        """A stop was requested, and stopping now drops no job (none dequeued or running), or the job
        held has waited for Redis for the whole grace period."""
        if not self._stop_requested:
            return False
        return not self.holding_job or time.monotonic() - self.stop_requested_at > STOP_GRACE_SECONDS

    def _heartbeat(self, timeout: int | None, pipeline: Pipeline | None) -> None:
        super().heartbeat(timeout, pipeline)
        if self._stop_requested and self._shutdown_requested_date:
            # RQ writes this from its signal handler; here it goes with each heartbeat while stopping
            date = utcformat(self._shutdown_requested_date)
            (pipeline if pipeline is not None else self.connection).hset(self.key, "shutdown_requested_date", date)

    # -- riding out a Redis outage (parent process only; a horse fails fast and the parent settles)

    def patiently(self, step: Callable[..., T], *args: Any) -> T:
        """Run a parent's Redis step through an outage, until a stop request may end it (may_stop)."""
        if self.is_horse:
            return step(*args)
        return wait_out(step, *args, log_as=f"Worker {self.name}: ", give_up=self.may_stop)

    def best_effort(self, what: str, step: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """A Redis step that may be skipped during an outage: logged, not retried."""
        try:
            step(*args, **kwargs)
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("Worker %s: could not %s: %s", self.name, what, exc)

    def teardown(self) -> None:
        self.best_effort("register its death", super().teardown)  # or RQ's key expires on its own

    def check_for_suspension(self, burst: bool) -> None:
        self.patiently(super().check_for_suspension, burst)

    def run_maintenance_tasks(self) -> None:
        self.patiently(super().run_maintenance_tasks)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        self.patiently(self._heartbeat, timeout, pipeline)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        self.patiently(super().set_state, state, pipeline)

    def prepare_execution(self, job: Job) -> Execution:
        attempts: list[Execution] = []
        return self.patiently(self._prepare_execution, job, attempts)

    def _prepare_execution(self, job: Job, attempts: list[Execution]) -> Execution:
        """RQ's prepare_execution, which also takes the job off its claim (the intermediate list).

        RQ leaves that to the horse, so a worker or horse killed in between left the job both there
        and in the started or failed registry; here it moves in one transaction. An earlier attempt
        whose reply was lost may have been applied: the retry undoes it in the same transaction.
        """
        with self.connection.pipeline() as pipeline:
            for earlier in attempts:
                earlier.delete(job=job, pipeline=pipeline)
            execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name)
            attempts.append(execution)
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            for queue in self.queues:  # the claim's place: the job's queue's intermediate list
                if queue.name == job.origin:
                    pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.delete(self.claim_key)
            pipeline.execute()
        self.execution = execution
        return execution

    def maintain_heartbeats(self, job: Job, *execution: Execution) -> None:
        self.best_effort("send a heartbeat", super().maintain_heartbeats, job, *execution)  # the next one retries

    def set_current_job_working_time(self, working_time: float, pipeline: Pipeline | None = None) -> None:
        # rq 2.x only; RQ 3 has no such step
        self.best_effort("record the working time", super().set_current_job_working_time, working_time, pipeline)

    def monitor_work_horse(self, job: Job, queue: Queue, *execution: Execution) -> None:
        try:
            super().monitor_work_horse(job, queue, *execution)
        except REDIS_UNAVAILABLE as exc:
            if self.horse_pid:
                raise
            self.log.warning("Worker %s: settling job %s once Redis is back (%s)", self.name, job.id, exc)
            self.patiently(self._settle, job, queue, *execution)

    def _settle(self, job: Job, queue: Queue, *execution: Execution) -> None:
        """Fail a job whose horse is gone without an outcome; a recorded one is left as it is (_parent_fails)."""
        job.ended_at = now()
        self.handle_job_failure(job, queue, None, UNRECORDED, *execution)

    # -- the pipelines that record a job's outcome

    def handle_job_failure(  # type: ignore[no-untyped-def]
        self, job: Job, queue: Queue, started_job_registry=None, exc_string: str = "", *args: Any, **kwargs: Any
    ) -> None:
        if not self.is_horse and not self._parent_fails(job, args, kwargs):
            return
        self.failing = True
        if job.should_retry and getattr(self, "_stopped_job_id", None) != job.id:  # as RQ decides to retry
            self.retried_attempt = (job, exc_string, _execution_in(args, kwargs))
        try:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, *args, **kwargs)
        finally:
            self.failing, self.retried_attempt = False, None
        # RQ logs and swallows a failed bookkeeping pipeline, and a job left in the started registry
        # would stay there for good: raise instead, so that the parent settles it once Redis is back
        if self._registered(job, _execution_in(args, kwargs) or self.execution):
            raise RedisConnectionError(f"the failure of job {job.id} was not recorded")

    def _parent_fails(self, job: Job, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the parent should fail this job, and with which run.

        RQ's parent fails its horse's job when the horse exited badly and the job is not finished or
        failed. But a horse that recorded its outcome (say, requeued the job for a retry) and died after
        (a lost reply, a SIGKILL) took its execution out of the started registry in that same
        transaction: failing the job again would requeue it twice. So the parent fails it exactly
        while the horse's execution is still registered as started, whatever the job's status (a horse
        that died before it set `started` leaves it `queued`). A job this worker never ran (RQ's
        maintenance failing one stuck in a dequeuing list) is failed with no run counted.
        """
        self.run_id = None
        if job.id != self.horse_job_id:
            return True
        execution = _execution_in(args, kwargs) or self.execution
        if not self._registered(job, execution):
            self.log.warning("Worker %s: job %s was recorded before its horse died; left as it is", self.name, job.id)
            return False
        self.run_id = _execution_id(execution)
        self.parent_run(job)
        return True

    def _registered(self, job: Job, execution: Execution | None) -> bool:
        """Whether the job's execution is still in the started registry: its outcome is not recorded."""
        if execution is None:
            return _status(job) == JobStatus.STARTED
        return self.connection.zscore(job.started_job_registry.key, execution.composite_key) is not None

    def cleanup_execution(self, job: Job, pipeline: Pipeline, *args: Any, **kwargs: Any) -> None:
        super().cleanup_execution(job, pipeline, *args, **kwargs)
        if self.failing:
            # RQ commits a failed job's status in a pipeline of its own before the failed-count one;
            # the run goes with the status, so that an outage between the two cannot lose or repeat it
            self.add_run(pipeline)

    def increment_successful_job_count(self, pipeline: Pipeline | None = None) -> None:
        super().increment_successful_job_count(pipeline)
        self.add_run(pipeline)

    def increment_failed_job_count(self, pipeline: Pipeline | None = None) -> None:
        super().increment_failed_job_count(pipeline)
        if self.retried_attempt is not None and pipeline is not None:
            job, exc_string, execution = self.retried_attempt
            record_retried_attempt(pipeline, job, exc_string, self.name, execution)
        if not self.failing:  # handle_job_failure added it with the status (cleanup_execution)
            self.add_run(pipeline)
