"""The failed list's exception summary over a real Redis: correct counts, read incrementally."""

from __future__ import annotations

import re
import zlib
from collections import Counter

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from rqscope.monitor import exceptions
from rqscope.monitor.retry import Retrier

from tests.test_retry import make_failed

pytestmark = pytest.mark.redis
HTML = {"Accept": "text/html"}


def fail(redis: Redis, count: int, exc_line: str, ttl: int = 3600, ids: list[str] | None = None) -> list[str]:
    """Failures as RQ 2.x records them: the failed registry entry and a failure result with the traceback."""
    registry = FailedJobRegistry("default", connection=redis)
    q = Queue("default", connection=redis)
    jobs = [q.fetch_job(i) for i in ids] if ids else [q.create_job("tests.sample_tasks.t_ok") for _ in range(count)]
    with redis.pipeline() as pipe:
        for job in jobs:
            assert job is not None
            text = f'Traceback (most recent call last):\n  File "x.py", line 1, in f\n{exc_line}\n'
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            registry.add(job, ttl=ttl, exc_string=text, pipeline=pipe)
            Result.create_failure(job, ttl, text, pipeline=pipe)
        pipe.execute()
    return [job.id for job in jobs]


def commands(redis: Redis) -> Counter[str]:
    """Calls per command since the last reset, then a reset."""
    stats = redis.info("commandstats")
    redis.config_resetstat()
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def summary_of(page: str) -> str:
    found = re.search(r'<p class="summary">.*?</p>', page, re.S)
    assert found, "no exception summary on the page"
    return found.group()


def test_counts_per_type_from_results_and_legacy_exc_info(real_redis: Redis) -> None:
    fail(real_redis, 3, "RuntimeError: boom")
    fail(real_redis, 2, "app.errors.UploadError: bad header: at byte 0")
    legacy = "rq:job:legacy-1"
    real_redis.hset(legacy, mapping={"status": "failed", "exc_info": zlib.compress(b"Traceback\nKeyError: 'x'\n")})
    real_redis.zadd("rq:failed:default", {"legacy-1": 1, "gone-1": 2})  # gone-1: its hash expired
    summary = exceptions.ExceptionSummaries(real_redis).get("default")
    assert summary == (Counter({"RuntimeError": 3, "UploadError": 2, "KeyError": 1, "unknown": 1}), 7, 7)
    assert exceptions.ExceptionSummaries(real_redis).get("nothing-failed") == (Counter(), 0, 0)


def test_each_view_reads_only_the_failures_it_has_not_seen(real_redis: Redis) -> None:
    fail(real_redis, 100, "RuntimeError: old")
    summaries = exceptions.ExceptionSummaries(real_redis, limit=50, step=20)
    commands(real_redis)
    seen = [summaries.get("default") for _ in range(4)]
    assert [(s.scanned, s.total) for s in seen] == [(20, 100), (40, 100), (50, 100), (50, 100)]
    assert seen[-1].counts == Counter({"RuntimeError": 50})
    assert commands(real_redis)["xrevrange"] == 50  # each entry read once
    fail(real_redis, 5, "TimeoutError: new", ttl=7200)  # newer: scored later
    commands(real_redis)
    assert summaries.get("default") == (Counter({"TimeoutError": 5, "RuntimeError": 45}), 50, 105)
    assert commands(real_redis)["xrevrange"] == 5
    newest_old = [i.decode() for i in real_redis.zrevrange("rq:failed:default", 5, 6)]
    assert Retrier(real_redis).retry("default", newest_old) == 2
    again = [i.decode() for i in real_redis.zrevrange("rq:failed:default", 0, 0)]
    fail(real_redis, 0, "ValueError: again", ttl=9000, ids=again)  # retried elsewhere, failed again: a new score
    commands(real_redis)
    assert summaries.get("default") == (Counter({"RuntimeError": 45, "TimeoutError": 4, "ValueError": 1}), 50, 103)
    assert commands(real_redis)["xrevrange"] == 2 + 1  # two older entries moved into the window, one re-failed


def test_an_unchanged_registry_is_not_read_again(real_redis: Redis) -> None:
    fail(real_redis, 30, "RuntimeError: old")
    now = [0.0]
    summaries = exceptions.ExceptionSummaries(real_redis, limit=20, clock=lambda: now[0])
    first = summaries.get("default")
    commands(real_redis)
    assert summaries.get("default") == first == (Counter({"RuntimeError": 20}), 20, 30)
    assert commands(real_redis) == Counter({"zcard": 1, "zrevrange": 2, "config|resetstat": 1})
    now[0] += exceptions.REREAD_SECONDS
    assert summaries.get("default") == first and commands(real_redis)["zrevrange"] == 3  # the window, once more
    real_redis.zrem("rq:failed:default", real_redis.zrevrange("rq:failed:default", 3, 3)[0])
    assert summaries.get("default") == (Counter({"RuntimeError": 20}), 20, 29)
    assert commands(real_redis)["xrevrange"] == 1  # the entry that moved into the window


def test_the_failed_page_reads_a_bounded_number_of_jobs(
    real_client: FlaskClient, real_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_failed(real_redis, 3_000)
    commands(real_redis)
    views = []
    for _ in range(3):
        views.append(real_client.get("/queues/default/failed", headers=HTML).text)
        views.append(commands(real_redis)["xrevrange"])  # failure results read: the summary's, plus the 25 rows'
    first, first_reads, second, second_reads, third, third_reads = views
    assert "among the newest 1,500 of 3,000 failed jobs" in first and "RuntimeError ×1,500" in first
    assert "among the newest" not in second and "RuntimeError ×3,000" in second
    assert summary_of(second) == summary_of(third)
    assert (first_reads, second_reads, third_reads) == (25 + 1_500, 25 + 1_500, 25)
    api = real_client.get("/api/queues/default/exceptions").get_json()
    assert api == {"exceptions": {"RuntimeError": 3_000}, "scanned": 3_000, "failed_total": 3_000}
