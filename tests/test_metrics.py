from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis import Redis
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.collectors import build_registry
from rqscope.tasks.metrics import (
    BUCKET_LABELS,
    METRICS_KEY,
    OUTCOMES,
    ROLLUP_TTL_SECONDS,
    TaskStats,
    bucket_for,
    field_name,
    parse_metrics,
    record_enqueued,
    record_run,
    rollup_key,
    task_families,
)


def registry_for(redis: Redis) -> CollectorRegistry:
    return build_registry(SnapshotCache(redis, ttl=0))


def test_bucket_for_picks_the_smallest_upper_bound() -> None:
    assert bucket_for(0) == "0.005"
    assert bucket_for(0.005) == "0.005"
    assert bucket_for(0.0051) == "0.01"
    assert bucket_for(10**6) == "+Inf"


def test_record_run_is_one_round_trip_and_exports_cumulative_histogram(redis: Redis) -> None:
    for duration, outcome in [(0.001, "success"), (0.3, "success"), (2.0, "failure"), (5000.0, "killed")]:
        pipe = redis.pipeline(transaction=False)
        record_run(pipe, "t", "q", outcome, duration, now=120.0)
        assert len(pipe.command_stack) == 8  # three on the totals, four on the minute's rollup, its expiry
        pipe.execute()
    registry = registry_for(redis)
    labels = {"task": "t", "queue": "q"}
    assert registry.get_sample_value("rqscope_task_runs_total", {**labels, "outcome": "success"}) == 2
    assert registry.get_sample_value("rqscope_task_runs_total", {**labels, "outcome": "failure"}) == 1
    assert registry.get_sample_value("rqscope_task_runs_total", {**labels, "outcome": "timeout"}) == 0
    assert registry.get_sample_value("rqscope_task_duration_seconds_bucket", {**labels, "le": "0.005"}) == 1
    assert registry.get_sample_value("rqscope_task_duration_seconds_bucket", {**labels, "le": "0.5"}) == 2
    assert registry.get_sample_value("rqscope_task_duration_seconds_bucket", {**labels, "le": "2.5"}) == 3
    assert registry.get_sample_value("rqscope_task_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 4
    assert registry.get_sample_value("rqscope_task_duration_seconds_count", labels) == 4
    assert registry.get_sample_value("rqscope_task_duration_seconds_sum", labels) == pytest.approx(5002.301)
    rollup = redis.hgetall(rollup_key(120.0))
    assert int(rollup[field_name("t", "q", "o:success").encode()]) == 2
    assert 0 < redis.ttl(rollup_key(120.0)) <= ROLLUP_TTL_SECONDS


def test_unknown_outcome_is_refused(redis: Redis) -> None:
    with pytest.raises(ValueError):
        record_run(redis.pipeline(), "t", "q", "exploded", 1.0)


def test_non_finite_duration_is_recorded_as_zero(redis: Redis) -> None:
    pipe = redis.pipeline()
    record_run(pipe, "t", "q", "success", math.nan)
    pipe.execute()
    stats = parse_metrics(redis.hgetall(METRICS_KEY))
    assert stats[("t", "q")].duration_sum == 0 and stats[("t", "q")].buckets["0.005"] == 1


def test_enqueued_counter(redis: Redis) -> None:
    pipe = redis.pipeline()
    record_enqueued(pipe, "t", "q")
    record_enqueued(pipe, "t", "q", 4)
    pipe.execute()
    assert registry_for(redis).get_sample_value("rqscope_task_enqueued_total", {"task": "t", "queue": "q"}) == 5


def test_garbage_fields_are_skipped() -> None:
    raw = {
        b"no-separator": b"1",
        field_name("t", "q", "o:success").encode(): b"not-a-number",
        field_name("t", "q", "o:failure").encode(): b"3",
        field_name("t", "q", "o:bogus").encode(): b"3",
        field_name("t", "q", "sum").encode(): b"inf",
        b"a\x1fb\x1fc\x1fd": b"1",
    }
    stats = parse_metrics(raw)
    assert list(stats) == [("t", "q")]
    assert stats[("t", "q")].outcomes == {**dict.fromkeys(OUTCOMES, 0), "failure": 3}


def test_hostile_labels_are_escaped_in_the_exposition(redis: Redis) -> None:
    name = 'evil"\n<script>'
    pipe = redis.pipeline()
    record_run(pipe, name, "q\\1", "success", 0.1)
    pipe.execute()
    text = generate_latest(registry_for(redis)).decode()
    assert 'task="evil\\"\\n<script>"' in text and 'queue="q\\\\1"' in text


def test_quantile_interpolates_within_buckets() -> None:
    stats = TaskStats()
    stats.buckets["0.1"] = 50
    stats.buckets["0.25"] = 50
    assert stats.quantile(0.5) == pytest.approx(0.1)
    assert stats.quantile(0.75) == pytest.approx(0.175)
    assert TaskStats().quantile(0.5) is None
    only_inf = TaskStats()
    only_inf.buckets["+Inf"] = 3
    assert only_inf.quantile(0.99) == 900.0


def test_every_bucket_family_has_inf_and_count_equals_runs(redis: Redis) -> None:
    pipe = redis.pipeline()
    for i in range(7):
        record_run(pipe, "t", "q", OUTCOMES[i % len(OUTCOMES)], i * 0.1)
    pipe.execute()
    families = {f.name: f for f in task_families(parse_metrics(redis.hgetall(METRICS_KEY)))}
    buckets = [s for s in families["rqscope_task_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == list(BUCKET_LABELS)
    runs = sum(s.value for s in families["rqscope_task_runs"].samples)
    assert buckets[-1].value == runs == 7
