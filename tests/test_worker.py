"""The instrumented worker on RQ's forking Worker and a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis import Redis
from rq import Queue
from rq.exceptions import StopRequested
from rq.job import JobStatus
from rq.worker import WorkerStatus
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.collectors import build_registry
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.tasks.procstats import PROC_KEY_TEMPLATE, PROCS_KEY
from rqscope.tasks.registry import REGISTRY, enqueue, enqueue_task
from rqscope.tasks.worker import STOP_GRACE_SECONDS, InstrumentedWorker, unrecorded_outcome

from tests.conftest import redis_binary
from tests.helpers import REPO, current_job, rqscope_command, running, wait_for

pytestmark = pytest.mark.redis


def scrape(redis: Redis) -> CollectorRegistry:
    return build_registry(SnapshotCache(redis, ttl=0))


def runs(registry: CollectorRegistry, task: str, outcome: str, queue: str = "default") -> float | None:
    return registry.get_sample_value("rqscope_task_runs_total", {"task": task, "queue": queue, "outcome": outcome})


def work(redis: Redis, *queues: str) -> None:
    worker = InstrumentedWorker(list(queues or ["default"]), connection=redis, publish_interval=60)
    assert worker.work(burst=True, logging_level="WARNING")


def test_unrecorded_outcome_uses_the_timeout() -> None:
    assert unrecorded_outcome(5.0, 3) == "timeout"
    assert unrecorded_outcome(1.0, 3) == "killed"
    assert unrecorded_outcome(100.0, -1) == "killed"
    assert unrecorded_outcome(100.0, None) == "killed"


def test_mixed_outcomes_are_counted_exactly_on_the_forking_worker(real_redis: Redis) -> None:
    for i in range(25):
        enqueue("t_ok", i, connection=real_redis)
    for i in range(15):
        enqueue("t_fail", i, connection=real_redis)
    work(real_redis)
    registry = scrape(real_redis)
    assert runs(registry, "t_ok", "success") == 25
    assert runs(registry, "t_fail", "failure") == 15
    for outcome in ("failure", "retried", "timeout", "killed"):
        assert runs(registry, "t_ok", outcome) == 0
    count = registry.get_sample_value
    assert count("rqscope_task_duration_seconds_count", {"task": "t_ok", "queue": "default"}) == 25
    assert count("rqscope_task_duration_seconds_count", {"task": "t_fail", "queue": "default"}) == 15
    assert count("rqscope_task_enqueued_total", {"task": "t_ok", "queue": "default"}) == 25
    assert Queue("default", connection=real_redis).failed_job_registry.get_job_count(cleanup=False) == 15


def test_horse_killed_by_sigkill_is_counted_as_killed(real_redis: Redis) -> None:
    job = enqueue("t_self_kill", connection=real_redis)
    work(real_redis)
    registry = scrape(real_redis)
    assert runs(registry, "t_self_kill", "killed") == 1
    assert runs(registry, "t_self_kill", "failure") == 0
    assert job.get_status() == JobStatus.FAILED
    assert job.id in Queue("default", connection=real_redis).failed_job_registry.get_job_ids(cleanup=False)


def test_job_over_its_timeout_is_counted_as_timeout(real_redis: Redis) -> None:
    enqueue("t_slow", 5.0, connection=real_redis)
    work(real_redis)
    registry = scrape(real_redis)
    assert runs(registry, "t_slow", "timeout") == 1
    assert sum(runs(registry, "t_slow", o) or 0 for o in ("success", "failure", "killed")) == 0


def test_failures_that_rq_retries_are_counted_as_retried(real_redis: Redis) -> None:
    enqueue("t_flaky", connection=real_redis)
    work(real_redis)
    registry = scrape(real_redis)
    assert runs(registry, "t_flaky", "retried") == 1
    assert runs(registry, "t_flaky", "failure") == 1


def test_externally_killed_horse_is_counted_and_failed(real_redis: Redis, real_settings) -> None:  # type: ignore[no-untyped-def]
    job = enqueue("t_sleep", 30.0, connection=real_redis)
    env = {"RQSCOPE_REDIS_URL": real_settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with running(rqscope_command("worker", "default", "--burst", "--log-level", "WARNING"), env) as worker:
        horse = wait_for(lambda: psutil.Process(worker.pid).children(), timeout=20)[0]  # type: ignore[index]
        wait_for(lambda: job.get_status() == JobStatus.STARTED)
        horse.send_signal(signal.SIGKILL)
        assert worker.wait(30) == 0
    assert runs(scrape(real_redis), "t_sleep", "killed") == 1
    assert job.get_status() == JobStatus.FAILED


def test_two_workers_on_two_queues_are_summed_without_worker_labels(real_redis: Redis, real_settings) -> None:  # type: ignore[no-untyped-def]
    for queue in ("q1", "q2"):
        for i in range(20):
            enqueue_task(REGISTRY.get("t_ok"), [i], {}, connection=real_redis, queue=queue)
            enqueue_task(REGISTRY.get("t_ok"), [i], {}, connection=real_redis, queue="other")
    env = {"RQSCOPE_REDIS_URL": real_settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    names = ("worker-one-7f3a", "worker-two-9c2b")
    commands = [
        rqscope_command("worker", "q1", "other", "--burst", "--name", names[0], "--log-level", "WARNING"),
        rqscope_command("worker", "q2", "other", "--burst", "--name", names[1], "--log-level", "WARNING"),
    ]
    with running(commands[0], env) as first, running(commands[1], env) as second:
        assert first.wait(60) == 0 and second.wait(60) == 0
    registry = scrape(real_redis)
    assert runs(registry, "t_ok", "success", "q1") == 20
    assert runs(registry, "t_ok", "success", "q2") == 20
    assert runs(registry, "t_ok", "success", "other") == 40
    text = generate_latest(registry).decode()
    assert names[0] not in text and names[1] not in text
    label_names = {key for family in registry.collect() for sample in family.samples for key in sample.labels}
    assert label_names <= {"task", "queue", "outcome", "le", "state", "hostname", "role", "cause"}


def test_worker_publishes_its_process_figures_and_withdraws_them(real_redis: Redis, real_settings) -> None:  # type: ignore[no-untyped-def]
    enqueue("t_sleep", 2.0, connection=real_redis)
    env = {"RQSCOPE_REDIS_URL": real_settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
           "RQSCOPE_PUBLISH_INTERVAL": "0.5"}  # fmt: skip
    with running(rqscope_command("worker", "default", "--burst", "--name", "pub-1"), env) as worker:
        members = wait_for(lambda: real_redis.zrange(PROCS_KEY, 0, -1))
        assert len(members) == 1 and members[0].startswith(b"worker:")  # type: ignore[index,arg-type]
        stored = real_redis.hgetall(PROC_KEY_TEMPLATE.format(id=members[0].decode()))  # type: ignore[index]
        assert stored[b"name"] == b"pub-1" and int(stored[b"rss_bytes"]) > 10_000_000
        assert int(stored[b"pool_max"]) >= 1 and int(stored[b"pool_in_use"]) >= 0
        assert 0 < real_redis.pttl(PROC_KEY_TEMPLATE.format(id=members[0].decode())) <= 1500  # type: ignore[index]
        assert worker.wait(30) == 0
    assert real_redis.zcard(PROCS_KEY) == 0 and real_redis.keys("rqscope:proc:*") == []


def test_worker_refuses_a_bad_name(real_settings) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        rqscope_command("worker", "--name", "bad\nname", "--burst"),
        env={"RQSCOPE_REDIS_URL": real_settings.redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert b"--name must be" in result.stderr


def test_a_stock_rq_worker_records_runs_through_the_wrapper(real_redis: Redis) -> None:
    from rq import Worker

    for i in range(5):
        enqueue("t_ok", i, connection=real_redis)
    enqueue("t_fail", 1, connection=real_redis)
    Worker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    registry = scrape(real_redis)
    assert runs(registry, "t_ok", "success") == 5
    assert runs(registry, "t_fail", "failure") == 1


def test_instrumented_worker_writes_each_run_exactly_once(real_redis: Redis) -> None:
    for i in range(10):
        enqueue("t_ok", i, connection=real_redis)
    real_redis.config_resetstat()
    work(real_redis)
    stats = real_redis.info("commandstats")
    assert runs(scrape(real_redis), "t_ok", "success") == 10
    # one HINCRBYFLOAT for the duration sum and one for the rollup, per job, plus RQ's working time
    assert stats["cmdstat_hincrbyfloat"]["calls"] == 10 * 3


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """Restore the test process's SIGINT/SIGTERM handlers, which a worker's stop request replaces."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_stop_signal_landing_while_the_pool_lock_is_held_does_not_deadlock(
    real_redis: Redis, signal_handlers: None
) -> None:
    """SIGTERM can arrive while the main thread is inside redis-py's pool lock; RQ's handler then
    wrote to Redis and waited for that lock forever. Here the handler only flags the stop."""

    def give_up(signum: int, frame: object) -> None:
        raise TimeoutError("the stop handler waited for the pool lock its own thread holds")

    worker = InstrumentedWorker(["default"], connection=real_redis, publish_interval=60)
    worker.set_state(WorkerStatus.BUSY)
    signal.signal(signal.SIGUSR1, give_up)
    rescue = threading.Timer(5.0, os.kill, (os.getpid(), signal.SIGUSR1))
    rescue.start()
    try:
        with real_redis.connection_pool._lock:
            worker.request_stop(signal.SIGTERM, None)
    finally:
        rescue.cancel()
    assert worker._stop_requested
    assert real_redis.hget(worker.key, "shutdown_requested_date") is None
    worker.heartbeat()  # the shutdown request is recorded with the next heartbeat
    assert real_redis.hget(worker.key, "shutdown_requested_date") is not None


def test_a_stop_requested_between_jobs_takes_nothing_more_off_the_queues(
    real_redis: Redis, signal_handlers: None
) -> None:
    job = enqueue("t_ok", 1, connection=real_redis)
    worker = InstrumentedWorker(["high", "default"], connection=real_redis, publish_interval=60)
    worker.set_state(WorkerStatus.IDLE)
    worker.request_stop(signal.SIGTERM, None)  # idle but not waiting: a flag, no exception
    with pytest.raises(StopRequested):
        worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert Queue("default", connection=real_redis).get_job_ids() == [job.id]


def test_an_idle_worker_stops_at_once_on_sigterm(real_redis: Redis, real_settings) -> None:  # type: ignore[no-untyped-def]
    env = {"RQSCOPE_REDIS_URL": real_settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with running(rqscope_command("worker", "high", "default", "--name", "idle-stop"), env) as worker:
        wait_for(lambda: real_redis.hget("rq:worker:idle-stop", "state") == b"idle", timeout=30)
        time.sleep(0.2)  # inside the blocking wait for a job (405 s by default)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
    assert not real_redis.sismember("rq:workers", "rq:worker:idle-stop")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "holding-a-job"])
def test_a_worker_waiting_out_a_redis_outage_still_stops_on_sigterm(busy: bool, tmp_path: Path) -> None:
    """Idle, it stops at once; holding a job, it waits STOP_GRACE_SECONDS for Redis, then stops and says so."""
    server = EmbeddedRedis(binary=redis_binary())
    server.start()
    redis = Redis.from_url(server.url)
    env = {"RQSCOPE_REDIS_URL": server.url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    log = tmp_path / "worker.log"
    try:
        with log.open("wb") as out, running(rqscope_command("worker", "high", "default", "--name", "outage-stop"),
                                            env, stdout=out, stderr=subprocess.STDOUT) as worker:  # fmt: skip
            wait_for(lambda: redis.hget("rq:worker:outage-stop", "state") == b"idle", timeout=30)
            if busy:
                job = enqueue("t_sleep", 1.0, connection=redis)
                wait_for(lambda: current_job(redis, "outage-stop") == job.id, timeout=30)
            server.halt()
            time.sleep(2)  # the worker has met the outage and retries with a backoff
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(STOP_GRACE_SECONDS + 10 if busy else 10) == 0
    finally:
        server.stop()
    assert ("may be left unrecorded" in log.read_text()) == busy


def test_a_horse_that_recorded_a_retry_before_dying_is_not_failed_again(real_redis: Redis) -> None:
    """The horse requeued its job for a retry (the outcome committed) and died before exiting cleanly."""
    job = enqueue("t_flaky", connection=real_redis)
    queue = Queue("default", connection=real_redis)
    real_redis.lpop(queue.key)  # as if the horse's retry had been popped and recorded: queued again
    real_redis.rpush(queue.key, job.id)
    job.refresh()
    worker = InstrumentedWorker(["default"], connection=real_redis, publish_interval=60)
    worker.horse_job_id = job.id
    worker.handle_job_failure(job, queue, exc_string="Work-horse terminated unexpectedly (signal 9)")
    assert real_redis.lrange(queue.key, 0, -1) == [job.id.encode()]  # once, not pushed again
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert runs(scrape(real_redis), "t_flaky", "killed") in (None, 0.0)


def test_a_job_stuck_in_a_dequeuing_list_is_failed_with_no_run_counted(real_redis: Redis) -> None:
    """RQ's maintenance fails a job left in a queue's intermediate list; the worker never ran it."""
    job = enqueue("t_ok", 1, connection=real_redis)
    queue = Queue("default", connection=real_redis)
    real_redis.lmove(queue.key, queue.intermediate_queue_key)
    worker = InstrumentedWorker(["default"], connection=real_redis, publish_interval=60)
    worker.handle_job_failure(job, queue, exc_string="Job was stuck in intermediate queue.")
    assert job.get_status(refresh=True) == JobStatus.FAILED
    registry = scrape(real_redis)
    assert all(runs(registry, "t_ok", outcome) in (None, 0.0) for outcome in ("killed", "timeout", "failure"))


def test_a_job_rq_cannot_read_is_failed_not_claimed_by_every_restart(real_redis: Redis) -> None:
    job = enqueue("t_ok", 1, connection=real_redis)
    after = enqueue("t_ok", 2, connection=real_redis)
    real_redis.hset(job.key, "created_at", "garbage")  # Job.fetch raises on it
    for _ in range(2):  # the same name, as a restarted worker would have
        worker = InstrumentedWorker(["default"], connection=real_redis, name="fixed", publish_interval=60)
        worker.work(burst=True, logging_level="WARNING")
    assert real_redis.hget(job.key, "status") == b"failed"
    assert real_redis.zscore("rq:failed:default", job.id) is not None
    assert "RQ cannot read the job" in real_redis.hget(job.key, "exc_info").decode()
    assert after.get_status(refresh=True) == JobStatus.FINISHED
    assert not real_redis.exists("rq:worker:fixed:rqscope-claim")
    assert real_redis.llen("rq:queue:default:intermediate") == 0
