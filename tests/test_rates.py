from __future__ import annotations

from redis import Redis
from rqscope.monitor.rates import read_series
from rqscope.tasks.metrics import record_run


def test_series_counts_runs_and_failures_per_minute(redis: Redis) -> None:
    now = 1_800_000_000.0 + 30  # half way through a minute
    pipe = redis.pipeline()
    for offset, outcome in [(0, "success"), (0, "failure"), (-60, "success"), (-60, "killed"), (-3600, "success")]:
        record_run(pipe, "t", "q", outcome, 0.5, now=now + offset)
    record_run(pipe, "other", "q", "timeout", 2.0, now=now)
    pipe.execute()
    series = read_series(redis, minutes=5, now=now)
    assert [m.runs for m in series.total] == [0, 0, 0, 2, 3]
    assert series.total[-1].failed == 2 and series.by_task["t"][-1].failed == 1
    assert series.by_task["other"][-1].duration_sum == 2.0
    runs, failed, seconds = series.window(None, 2, now=now)
    assert (runs, failed, seconds) == (5, 3, 90.0)
    assert series.window("missing", 5, now=now)[0] == 0


def test_garbage_rollup_fields_are_skipped(redis: Redis) -> None:
    now = 1_800_000_000.0
    redis.hset(f"rqscope:metrics:m:{int(now // 60)}", mapping={"bad": "1", "t\x1fq\x1fo:success": "x"})
    assert read_series(redis, minutes=1, now=now).total[-1].runs == 0
