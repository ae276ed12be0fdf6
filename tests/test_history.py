"""Chart history: minute rollups with buckets, the leader's hourly fold and queue points, and their JSON."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rqscope.monitor import compaction, queue_history
from rqscope.monitor.alerts.lease import Lease
from rqscope.monitor.compaction import FOLDABLE_HOURS, HOURS_PER_STEP
from rqscope.monitor.history import MinuteRecorder
from rqscope.monitor.rollups import HOURLY_KEY_TEMPLATE, read_window
from rqscope.monitor.snapshot import QueueState, RedisState, Snapshot
from rqscope.tasks.metrics import ROLLUP_KEY_TEMPLATE, record_run

pytestmark = pytest.mark.redis
NOW = 1_800_000_000.0 + 30 * 60 + 30  # half past an hour, half way through a minute
HOSTILE = "bad\nname/../%2F\udcff"


def runs(redis: Redis, items: list[tuple[float, str, str, float]], task: str = "t", queue: str = "q") -> None:
    """Record runs the way workers do: (seconds before NOW, outcome, run id, duration)."""
    pipe = redis.pipeline(transaction=False)
    for ago, outcome, run_id, duration in items:
        record_run(pipe, task, queue, outcome, duration, now=NOW - ago, run_id=run_id)
    pipe.execute()


def snapshot(*queues: QueueState) -> Snapshot:
    return Snapshot(taken_at=NOW, redis=RedisState(up=True), queues=queues)


def queue_state(name: str, queued: int, latency: float) -> QueueState:
    return QueueState(name, queued, {}, None, latency, False)


def leader(redis: Redis, holder: str = "leader-a") -> Lease:
    lease = Lease(redis, holder, 45.0, 15.0)
    assert lease.renew()
    return lease


def test_a_run_adds_its_histogram_bucket_to_its_minute_once(real_redis: Redis) -> None:
    runs(real_redis, [(0, "success", "r1", 0.3), (0, "success", "r1", 0.3), (0, "failure", "r2", 7.0)])
    minute = real_redis.hgetall(ROLLUP_KEY_TEMPLATE.format(minute=int(NOW // 60)))
    assert minute[b"t\x1fq\x1fb:0.5"] == b"1" and minute[b"t\x1fq\x1fb:10.0"] == b"1"  # the replay added nothing
    assert minute[b"t\x1fq\x1fo:success"] == b"1"
    assert minute[b"o:success"] == b"1" and minute[b"o:failure"] == b"1"  # the totals the overview reads
    # kept 25 h, so that the 24 h chart and the hourly fold still find it
    assert 24 * 3600 < real_redis.ttl(ROLLUP_KEY_TEMPLATE.format(minute=int(NOW // 60))) <= 25 * 3600


def test_minute_windows_give_rates_by_outcome_and_percentiles(real_client: FlaskClient, real_redis: Redis) -> None:
    runs(real_redis, [(0, "success", "a", 0.02), (0, "failure", "b", 0.02), (120, "success", "c", 0.2)])
    runs(real_redis, [(120, "timeout", "d", 60.0)], task="other", queue="slow")
    window = read_window(real_redis, "15m", now=NOW)
    assert [b.runs for b in window.bins][-3:] == [2, 0, 2]
    assert window.seconds(14) == 30.0  # the current minute is half over
    body = real_client.get("/api/series/runs?window=15m").get_json()
    assert body["unit"] == "runs/s" and body["step_seconds"] == 60 and len(body["t"]) == 15
    task = read_window(real_redis, "1h", task="t", now=NOW)
    assert sum(b.runs for b in task.bins) == 3
    assert read_window(real_redis, "1h", queue="slow", now=NOW).bins[-3].outcomes["timeout"] == 1


def test_series_json_for_a_task_has_percentiles_failure_and_histogram(
    real_client: FlaskClient, real_redis: Redis
) -> None:
    import time

    now = time.time()
    pipe = real_redis.pipeline(transaction=False)
    for i in range(10):
        record_run(pipe, "t", "q", "failure" if i < 2 else "success", 0.03, now=now, run_id=f"x{i}")
    pipe.execute()
    body = real_client.get("/api/series/tasks/t?window=1h").get_json()
    assert body["runs"][-1] == 10 and body["failure_percent"][-1] == 20.0 and body["failure_percent"][0] is None
    assert 0.025 < body["quantiles_seconds"]["p50"][-1] <= 0.05  # interpolated inside the 0.05 bucket
    assert dict(zip(body["histogram"]["le"], body["histogram"]["count"], strict=True))["0.05"] == 10
    assert body["rates"]["failure"][-1] > 0
    page = real_client.get("/tasks/t?window=1h").get_data(as_text=True)
    assert "Run time percentiles" in page and "<td>20</td>" in page  # the failure % in the text alternative
    assert real_client.get("/api/series/tasks/t?window=2d").status_code == 400


def test_the_leader_folds_finished_hours_once_and_seven_days_read_them(real_redis: Redis) -> None:
    hour = int(NOW // 3600)
    runs(real_redis, [(3600, "success", "a", 0.1), (3600 + 60, "failure", "b", 0.1), (7200, "success", "c", 2.0)])
    lease = leader(real_redis)
    clock = [NOW]
    recorder = MinuteRecorder(real_redis, lease, lambda: snapshot(), clock=lambda: clock[0])
    assert recorder.step()  # the newest finished hours first, HOURS_PER_STEP a minute
    assert real_redis.exists(HOURLY_KEY_TEMPLATE.format(hour=hour - 1))
    assert not real_redis.exists(HOURLY_KEY_TEMPLATE.format(hour=hour - 23))
    for _ in range(FOLDABLE_HOURS // HOURS_PER_STEP + 1):  # the backlog drains a few hours a minute
        clock[0] += 60
        recorder.step()
    folded = real_redis.hgetall(HOURLY_KEY_TEMPLATE.format(hour=hour - 1))
    assert folded[b"t\x1fq\x1fo:success"] == b"1" and folded[b"t\x1fq\x1fo:failure"] == b"1"
    assert float(folded[b"t\x1fq\x1fsum"]) == pytest.approx(0.2)
    assert 7 * 86400 < real_redis.ttl(HOURLY_KEY_TEMPLATE.format(hour=hour - 1)) <= 8 * 86400
    assert real_redis.exists(HOURLY_KEY_TEMPLATE.format(hour=hour - 23)) == 1  # an empty hour is marked done
    assert not real_redis.exists(HOURLY_KEY_TEMPLATE.format(hour=hour))  # the current hour is not finished
    assert not real_redis.keys("rqscope:metrics:h:*:staging")
    # a replay (another process, or this one after a restart) adds nothing to a folded hour
    again = MinuteRecorder(real_redis, lease, lambda: snapshot(), clock=lambda: clock[0] + 60)
    real_redis.hincrby(ROLLUP_KEY_TEMPLATE.format(minute=(hour - 1) * 60 + 5), "t\x1fq\x1fo:success", 1)
    assert again.step()
    assert real_redis.hget(HOURLY_KEY_TEMPLATE.format(hour=hour - 1), "t\x1fq\x1fo:success") == b"1"
    # once the minutes are gone the 7 d window still has the hours
    for minute in range((hour - 2) * 60, (hour - 1) * 60 + 60):
        real_redis.delete(ROLLUP_KEY_TEMPLATE.format(minute=minute))
    week = read_window(real_redis, "7d", now=NOW + 3 * 3600)
    assert [b.runs for b in week.bins][-6:-3] == [1, 2, 0]


def test_each_fold_script_reads_one_minute_and_a_half_folded_hour_is_never_read(real_redis: Redis) -> None:
    hour = int(NOW // 3600) - 1
    runs(real_redis, [(3600 + 60 * m, "success", f"a{m}", 0.1) for m in range(30)])
    lease = leader(real_redis)
    with real_redis.pipeline(transaction=False) as pipe:
        compaction.fold(pipe, lease.holder, [hour])
        scripts = pipe.command_stack
        assert len(scripts) == 60 and all(len(args) == 2 + 1 + 4 + 3 for args, _ in scripts)  # 4 keys: one minute
        pipe.command_stack = scripts[:30]  # a leader that stopped half way through the hour
        assert pipe.execute() == [compaction.FOLDED] * 30
    assert not real_redis.exists(HOURLY_KEY_TEMPLATE.format(hour=hour))  # readers see whole hours only
    with real_redis.pipeline(transaction=False) as pipe:  # the next leader replays the whole hour
        compaction.fold(pipe, lease.holder, [hour])
        answers = pipe.execute()
    assert answers == [compaction.SKIPPED] * 30 + [compaction.FOLDED] * 29 + [compaction.FINISHED]
    folded = real_redis.hgetall(HOURLY_KEY_TEMPLATE.format(hour=hour))
    assert folded[b"t\x1fq\x1fo:success"] == b"30" and folded[b"compacted"] == b"60"


def test_a_minute_with_values_no_float_takes_is_folded_without_them(real_redis: Redis) -> None:
    hour = int(NOW // 3600) - 1
    for place in range(60):
        real_redis.hset(ROLLUP_KEY_TEMPLATE.format(minute=hour * 60 + place), mapping={"a": "1"})
    real_redis.hset(ROLLUP_KEY_TEMPLATE.format(minute=hour * 60 + 5), mapping={"z": " 2", "n": "nan", "i": "inf"})
    lease = leader(real_redis)
    for _ in range(2):  # a second pass (a retry, another leader) changes nothing
        with real_redis.pipeline(transaction=False) as pipe:
            compaction.fold(pipe, lease.holder, [hour])
            pipe.execute()
    folded = real_redis.hgetall(HOURLY_KEY_TEMPLATE.format(hour=hour))
    assert folded == {b"a": b"60", b"z": b"2", b"compacted": b"60"}  # " 2" is a number; nan and inf are not


def test_a_process_that_does_not_lead_writes_nothing(real_redis: Redis) -> None:
    leader(real_redis, "leader-a")
    runs(real_redis, [(3600, "success", "a", 0.1)])
    stale = Lease(real_redis, "leader-b", 45.0, 15.0)
    stale._until = float("inf")  # believes it still leads: the token in the scripts stops it
    recorder = MinuteRecorder(real_redis, stale, lambda: snapshot(queue_state("q", 3, 1.0)), clock=lambda: NOW)
    assert not recorder.step()
    assert real_redis.keys("rqscope:metrics:h:*") == [] and real_redis.keys("rqscope:history:*") == []


def test_queue_points_once_a_minute_bounded_and_for_any_name(
    real_client: FlaskClient, real_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    lease = leader(real_redis)
    clock = [time.time() - 60]  # the second point is this minute, as the page reads it
    queues = [queue_state(HOSTILE, 5, 12.5), queue_state("small", 1, 0.0), queue_state("empty", 0, 0.0)]
    monkeypatch.setattr(queue_history, "MAX_QUEUES", 2)  # the two deepest are kept
    recorder = MinuteRecorder(real_redis, lease, lambda: snapshot(*queues), clock=lambda: clock[0])
    assert recorder.step()
    assert not recorder.step()  # the same minute again: nothing
    other = MinuteRecorder(real_redis, leader(real_redis), lambda: snapshot(*queues), clock=lambda: clock[0])
    assert not other.step()  # a second recorder (after a hand-over) in the same minute adds no point
    assert real_redis.llen(queue_history.history_key(HOSTILE)) == 1
    assert not real_redis.exists(queue_history.history_key("empty"))
    assert 24 * 3600 < real_redis.ttl(queue_history.history_key(HOSTILE)) <= 25 * 3600
    queues[0] = queue_state(HOSTILE, 9, 30.0)
    clock[0] += 60
    assert recorder.step()
    segment = quote(HOSTILE.encode("utf-8", "surrogateescape"), safe="")
    body = real_client.get(f"/api/series/queues/{segment}?window=1h").get_json()
    assert [q for q in body["queued"] if q is not None] == [5, 9]
    assert [s for s in body["latency_seconds"] if s is not None] == [12.5, 30.0]
    page = real_client.get(f"/queues/{segment}").get_data(as_text=True)
    assert "bad\nname/../%2F\\xff" in page and "<td>9</td>" in page


def test_points_are_capped(real_redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_history, "MAX_POINTS", 3)
    lease = leader(real_redis)
    for minute in range(5):
        recorder = MinuteRecorder(
            real_redis, lease, lambda: snapshot(queue_state("q", 1, 0.0)), clock=lambda m=minute: NOW + 60 * m
        )
        assert recorder.step()
    assert real_redis.llen(queue_history.history_key("q")) == 3


@pytest.mark.parametrize("path", ["/api/series/runs?window=3h", "/api/series/queues/q?window=7d", "/tasks/t?window=x"])
def test_bad_windows_are_400(real_client: FlaskClient, path: str) -> None:
    response = real_client.get(path)
    assert response.status_code == 400 and "window must be one of" in response.get_data(as_text=True)


def test_chart_pages_during_an_outage_show_the_banner_not_a_500(settings) -> None:  # type: ignore[no-untyped-def]
    from rqscope.monitor.embedded import free_port
    from rqscope.web import create_app

    down = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout=0.5)
    client = create_app(down, testing=True).test_client()
    for path in ("/", "/queues/q", "/tasks/t", "/api/series/runs?window=7d"):
        response = client.get(path, headers={"Accept": "text/html"})
        assert response.status_code in (200, 503), path
        assert b"unavailable" in response.data or b"unreachable" in response.data, path
