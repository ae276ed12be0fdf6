"""Atomic batched retry over a real Redis, with RQ's forking worker consuming."""

from __future__ import annotations

import signal

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from rqscope.monitor.retry import Retrier, batches
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import enqueue

from bench import ledger
from tests.helpers import rqscope_command, running, wait_for

pytestmark = pytest.mark.redis


def make_failed(redis: Redis, count: int, queue: str = "default") -> list[str]:
    """Jobs in the failed registry exactly as RQ leaves them (job saved, TTL set, ZADD)."""
    registry = FailedJobRegistry(queue, connection=redis)
    q = Queue(queue, connection=redis)
    ids = []
    pipe = redis.pipeline()
    pipe.sadd("rq:queues", f"rq:queue:{queue}")  # the queue was used before its jobs failed
    for i in range(count):
        job = q.create_job("tests.sample_tasks.t_ok", args=(i,))
        job.set_status(JobStatus.FAILED, pipeline=pipe)
        exc_string = "Traceback (most recent call last):\nRuntimeError: boom"
        registry.add(job, ttl=3600, exc_string=exc_string, pipeline=pipe)
        Result.create_failure(job, 3600, exc_string, pipeline=pipe)
        ids.append(job.id)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return ids


def places(redis: Redis, queue: str = "default") -> dict[str, list[str]]:
    """Where RQ holds job ids of the queue: queued, dequeuing, started, finished, failed (and, when
    there are any, scheduled, deferred, canceled)."""
    found = {key.split(":", 1)[1]: ids for key, ids in ledger.places(redis, (queue,)).items()}
    return {place: ids for place, ids in found.items() if ids or place not in ("scheduled", "deferred", "canceled")}


def assert_each_once(redis: Redis, ids: list[str]) -> None:
    assert ledger.misplaced(redis, ids) == {}


def test_batches() -> None:
    assert [len(b) for b in batches(map(str, range(1201)), 500)] == [500, 500, 201]


def test_retry_one_a_selection_and_all(real_redis: Redis) -> None:
    ids = make_failed(real_redis, 10)
    retrier = Retrier(real_redis)
    assert retrier.retry("default", [ids[0]]) == 1
    assert retrier.retry("default", ids[1:4]) == 3
    assert places(real_redis)["queued"] == ids[:4]
    assert retrier.retry_all("default") == 6
    assert places(real_redis)["failed"] == [] and sorted(places(real_redis)["queued"]) == sorted(ids)
    assert real_redis.sismember("rq:queues", "rq:queue:default")


def test_retried_job_has_the_fields_rq_requeue_writes(real_redis: Redis) -> None:
    [job_id] = make_failed(real_redis, 1)
    Retrier(real_redis).retry("default", [job_id])
    job = Job.fetch(job_id, connection=real_redis)
    assert job.get_status() == JobStatus.QUEUED
    assert job.enqueued_at is not None and job.started_at is None and job.ended_at is None
    assert real_redis.ttl(job.key) == -1  # the failure TTL no longer applies to a queued job


def test_double_retry_never_duplicates(real_redis: Redis) -> None:
    ids = make_failed(real_redis, 50)
    retrier = Retrier(real_redis, batch_size=7)
    assert retrier.retry("default", ids + ids) == 50
    assert retrier.retry("default", ids) == 0
    assert retrier.retry_all("default") == 0
    assert_each_once(real_redis, ids)
    assert len(places(real_redis)["queued"]) == 50


def test_unknown_ids_and_other_queues_are_untouched(real_redis: Redis) -> None:
    ids = make_failed(real_redis, 3, queue="other")
    assert Retrier(real_redis).retry("default", ids + ["nope"]) == 0
    assert set(places(real_redis, "other")["failed"]) == set(ids)
    assert places(real_redis, "other")["queued"] == [] and places(real_redis)["queued"] == []


def test_expired_job_hash_is_dropped_not_enqueued(real_redis: Redis) -> None:
    ids = make_failed(real_redis, 2)
    real_redis.delete(f"rq:job:{ids[0]}")
    assert Retrier(real_redis).retry_all("default") == 1
    assert places(real_redis) == {"queued": [ids[1]], "dequeuing": [], "failed": [], "finished": [], "started": []}


def test_a_stock_rq_worker_runs_a_retried_job(real_redis: Redis) -> None:
    job = enqueue("t_fail_first", "attempts", connection=real_redis)
    Worker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    assert job.get_status() == JobStatus.FAILED
    assert Retrier(real_redis).retry("default", [job.id]) == 1
    Worker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "second run ok"
    assert places(real_redis) == {"queued": [], "dequeuing": [], "failed": [], "finished": [job.id], "started": []}


@pytest.mark.slow
def test_retry_all_of_10k_while_a_forking_worker_consumes(real_redis: Redis, real_settings: Settings) -> None:
    ids = make_failed(real_redis, 10_000)
    env = {"RQSCOPE_REDIS_URL": real_settings.redis_url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with running(rqscope_command("worker", "default", "--log-level", "WARNING"), env) as worker:
        retrier = Retrier(real_redis)
        first = retrier.retry("default", ids[:500])
        wait_for(lambda: real_redis.zcard("rq:finished:default") > 0, timeout=30)
        rest = retrier.retry_all("default")
        assert first + rest == 10_000
        wait_for(lambda: real_redis.zcard("rq:finished:default") > 20, timeout=30)
        worker.send_signal(signal.SIGTERM)  # warm shutdown: the current job finishes
        assert worker.wait(30) == 0
    found = places(real_redis)
    assert found["failed"] == [] and found["started"] == []
    assert len(found["finished"]) > 20
    assert len(found["queued"]) + len(found["dequeuing"]) + len(found["finished"]) == 10_000
    assert_each_once(real_redis, ids)


@pytest.mark.skipif(not hasattr(Queue, "_enqueue_rate_limited_job"), reason="concurrency limits arrived in rq 3.0")
def test_a_retried_job_still_respects_its_concurrency_limit(real_redis: Redis) -> None:
    from rq.rate_limit import RateLimit, RateLimitRegistry  # type: ignore[import-not-found]

    queue = Queue("default", connection=real_redis)
    jobs = [queue.enqueue("tests.sample_tasks.t_fail", i, rate_limit=RateLimit("partner", 1)) for i in range(3)]
    Worker([queue], connection=real_redis).work(burst=True)
    assert places(real_redis)["failed"] and len(places(real_redis)["failed"]) == 3

    assert Retrier(real_redis).retry_all("default") == 3
    limit = RateLimitRegistry("partner", connection=real_redis)
    assert limit.get_allowed_job_count() == 1 and limit.get_rate_limited_job_count() == 2
    assert len(places(real_redis)["queued"]) == 1  # one slot: one job on the queue, two held back
    statuses = sorted(Job.fetch(job.id, connection=real_redis).get_status() for job in jobs)
    assert statuses == [JobStatus.QUEUED, JobStatus.RATE_LIMITED, JobStatus.RATE_LIMITED]

    Worker([queue], connection=real_redis).work(burst=True)  # RQ's limiter promotes each as a slot frees
    assert sorted(places(real_redis)["failed"]) == sorted(job.id for job in jobs)
    assert limit.get_allowed_job_count() == 0 and limit.get_rate_limited_job_count() == 0
