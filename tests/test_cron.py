"""RQ's cron for on-call: a real CronScheduler on a real redis-server, read into the API, page, metrics, alerts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq.cron import CronScheduler
from rq.job import Job
from rqscope.monitor.alerts.engine import AlertEngine
from rqscope.monitor.alerts.evaluate import evaluate
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.cron import CronSchedulerState, CronState, missed_run, next_cron_run, shape_job
from rqscope.monitor.cron_fetch import MAX_SCHEDULERS, CronCache, CronReader
from rqscope.monitor.cron_memory import MAX_REMEMBERED_BYTES, SEEN_KEY, copy_key, remember
from rqscope.monitor.cron_rqscheduler import RQ_SCHEDULER_JOBS_KEY
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.reader import fetch_snapshot
from rqscope.monitor.settings import Settings
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.web import create_app

from tests.conftest import redis_binary
from tests.helpers import spawn, wait_for

HOSTILE = ["line\nbreak", "<script>alert(1)</script>", "x" * 5000]
T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
RULE = Rule(name="CronJobOverdue", kind="cron_overdue", threshold=60, summary="{cron_job} is {value:.0f} s late")


def _scheduler(alive: bool, created_at: float = T0 - 3600) -> CronSchedulerState:
    return CronSchedulerState("s", "host", 1, T0 if alive else T0 - 600, alive, created_at)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_overdue_arithmetic_with_a_fixed_clock() -> None:
    last = T0 - 100
    interval = {
        "name": "tick",
        "func_name": "app.tick",
        "queue_name": "q",
        "interval": 30,
        "latest_enqueue_time": _iso(last),
        "next_enqueue_time": _iso(last + 30),
    }
    on_time = shape_job(interval, _scheduler(True), last + 20)
    assert on_time is not None and on_time.overdue_seconds == 0
    late = shape_job(interval, _scheduler(True), T0)
    assert late is not None and late.overdue_seconds == pytest.approx(70)  # past its stored next run
    dead = shape_job({**interval, "next_enqueue_time": None}, _scheduler(False), T0)
    assert dead is not None and dead.overdue_seconds == pytest.approx(70)  # the run the dead scheduler owed
    assert dead.next_enqueue_at == pytest.approx(last + 30)
    # a dead scheduler's interval job that never ran was owed at the scheduler's start
    assert missed_run(None, 30, None, T0 - 50) == T0 - 50
    # cron in UTC (rq 2) and in local time (rq 3): "5 * * * *" after 03:04:05 UTC is 03:05 UTC in UTC
    assert next_cron_run("5 * * * *", T0, local=False) == T0 + 55
    hourly = next_cron_run("5 * * * *", T0, local=True)
    assert hourly is not None and T0 < hourly <= T0 + 3600 and datetime.fromtimestamp(hourly).minute == 5
    assert next_cron_run("not a cron", T0) is None and next_cron_run("* " * 300, T0) is None
    nightly = {"name": "clean", "func_name": "app.clean", "cron": "0 3 * * *", "latest_enqueue_time": _iso(T0 - 86400)}
    missed = shape_job(nightly, _scheduler(False), T0 + 7200)
    owed = next_cron_run("0 3 * * *", T0 - 86400)
    assert missed is not None and owed is not None and missed.overdue_seconds == pytest.approx(T0 + 7200 - owed)


def _start_scheduler(redis_url: str, name: str) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from redis import Redis; from rq.cron import CronScheduler\n"
        "s = CronScheduler(Redis.from_url(sys.argv[1]), name=sys.argv[2])\n"
        "s.register(print, 'default', interval=30, name='tick')\n"
        "s.register(print, 'default', cron='0 3 * * *', name='nightly clean-up')\n"
        "s.start()\n"
    )
    return spawn([sys.executable, "-c", code, redis_url, name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_real_scheduler_then_killed(redis_server: EmbeddedRedis, real_redis: Redis, real_client: FlaskClient) -> None:
    process = _start_scheduler(redis_server.url, "sched-a")
    try:
        wait_for(lambda: real_redis.zcard(KEYS.cron_job_history("tick")) == 1)
        wait_for(lambda: real_redis.zscore(KEYS.cron_schedulers, "sched-a") is not None)
        body = real_client.get("/api/cron").get_json()
        (scheduler,) = body["schedulers"]
        assert scheduler["name"] == "sched-a" and scheduler["pid"] == process.pid and scheduler["alive"] is True
        jobs = {job["name"]: job for job in body["jobs"]}
        assert jobs["tick"]["interval"] == 30 and jobs["tick"]["overdue_seconds"] == 0
        assert jobs["tick"]["queue"] == "default" and jobs["tick"]["func"] == "builtins.print"
        assert jobs["nightly clean-up"]["cron"] == "0 3 * * *" and jobs["nightly clean-up"]["last_enqueued_at"] is None
        assert set(jobs["tick"]) == {
            "name",
            "func",
            "queue",
            "cron",
            "interval",
            "last_enqueued_at",
            "next_enqueue_at",
            "overdue_seconds",
            "scheduler",
        }
        run_id = real_redis.zrange(KEYS.cron_job_history("tick"), 0, 0)[0].decode()
        page = real_client.get("/cron").get_data(as_text=True)
        assert f'href="/jobs/{run_id}"' in page and ">queued</a>" in page  # the run and its outcome
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no death registered, no more heartbeats
        process.wait(timeout=10)
    heartbeat = real_redis.zscore(KEYS.cron_schedulers, "sched-a")
    last = CronReader(real_redis).fetch()
    tick = next(j for j in last.jobs if j.name == "tick")
    assert tick.last_enqueued_at is not None
    later = heartbeat + 100  # past the 90 s without a heartbeat; RQ keeps the hash for 120 s
    state = CronReader(real_redis).fetch(now=later)
    assert [s.alive for s in state.schedulers] == [False]
    tick = next(j for j in state.jobs if j.name == "tick")
    assert tick.overdue_seconds == pytest.approx(later - (tick.last_enqueued_at + 30), abs=0.01)
    nightly = next(j for j in state.jobs if j.name == "nightly clean-up")
    assert nightly.overdue_seconds == 0  # its next run, 03:00 local, is still ahead of the dead scheduler
    observed = evaluate((RULE,), fetch_snapshot(real_redis), None, later, state)
    assert [(o.labels, o.active) for o in observed] == [
        ((("cron_job", "nightly clean-up"),), False),
        ((("cron_job", "tick"),), True),
    ]


@pytest.mark.parametrize("registry_cleaned", [False, True], ids=["hash-expired", "also-unregistered"])
def test_a_dead_schedulers_jobs_outlive_rqs_copy_and_keep_alerting(
    redis_server: EmbeddedRedis, real_redis: Redis, registry_cleaned: bool
) -> None:
    process = _start_scheduler(redis_server.url, "sched-b")
    try:
        wait_for(lambda: real_redis.zcard(KEYS.cron_job_history("tick")) == 1)
        remember(real_redis, CronReader(real_redis).fetch())  # what the alert leader does each evaluation
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    heartbeat = real_redis.zscore(KEYS.cron_schedulers, "sched-b")
    real_redis.delete(KEYS.cron_scheduler("sched-b"))  # RQ's 120 s TTL on the scheduler's hash ran out
    if registry_cleaned:
        real_redis.zrem(KEYS.cron_schedulers, "sched-b")  # CronScheduler.all(cleanup=True) dropped it too
    later = heartbeat + 400
    state = CronReader(real_redis).fetch(now=later)
    assert [(s.name, s.alive) for s in state.schedulers] == [("sched-b", False)]
    tick = next(j for j in state.jobs if j.name == "tick")
    assert tick.next_enqueue_at is not None and tick.overdue_seconds == pytest.approx(later - tick.next_enqueue_at)
    observed = evaluate((RULE,), fetch_snapshot(real_redis), None, later, state)
    assert ((("cron_job", "tick"),), True) in [(o.labels, o.active) for o in observed]
    remember(real_redis, state)
    assert real_redis.zscore(SEEN_KEY, "sched-b") is not None  # dead, not stopped: still remembered


def test_a_scheduler_stopped_on_purpose_is_forgotten(redis_server: EmbeddedRedis, real_redis: Redis) -> None:
    process = _start_scheduler(redis_server.url, "sched-c")
    try:
        wait_for(lambda: real_redis.zscore(KEYS.cron_schedulers, "sched-c") is not None)
        wait_for(lambda: real_redis.exists(KEYS.cron_scheduler("sched-c")))
        remember(real_redis, CronReader(real_redis).fetch())
        assert real_redis.zscore(SEEN_KEY, "sched-c") is not None
    finally:
        process.terminate()  # a warm stop: RQ takes the scheduler out of its registry
        process.wait(timeout=20)
    real_redis.zrem(KEYS.cron_schedulers, "sched-c")  # as RQ's own unregister does on a clean stop
    real_redis.delete(KEYS.cron_scheduler("sched-c"))
    state = CronReader(real_redis).fetch()
    assert [(s.name, s.listed) for s in state.schedulers] == [("sched-c", False)]
    remember(real_redis, state)
    assert real_redis.zscore(SEEN_KEY, "sched-c") is None and not real_redis.exists(copy_key("sched-c"))
    assert CronReader(real_redis).fetch().jobs == ()


def _scheduler_hash(redis: Redis, name: str, heartbeat: float, jobs: list[dict[str, object]]) -> None:
    redis.zadd(KEYS.cron_schedulers, {name: heartbeat})
    redis.hset(KEYS.cron_scheduler(name), mapping={"hostname": "h", "pid": "1", "cron_jobs": json.dumps(jobs)})


def test_a_crashed_scheduler_restarted_under_a_new_name_is_not_overdue(real_redis: Redis) -> None:
    now = time.time()
    tick = {"name": "tick", "func_name": "app.tick", "interval": 30, "next_enqueue_time": _iso(now + 20)}
    _scheduler_hash(real_redis, "host:1:aaaa", now, [tick])
    remember(real_redis, CronReader(real_redis).fetch(now=now))
    real_redis.delete(KEYS.cron_scheduler("host:1:aaaa"))  # killed: RQ drops its hash, then its entry
    real_redis.zrem(KEYS.cron_schedulers, "host:1:aaaa")
    later = now + 1000
    _scheduler_hash(real_redis, "host:2:bbbb", later, [{**tick, "next_enqueue_time": _iso(later + 20)}])
    state = CronReader(real_redis).fetch(now=later)
    assert [(j.name, j.scheduler, j.overdue_seconds) for j in state.jobs] == [("tick", "host:2:bbbb", 0)]
    remember(real_redis, state)  # the replaced scheduler is forgotten, not counted dead for a week
    assert real_redis.zscore(SEEN_KEY, "host:1:aaaa") is None
    assert [s.name for s in CronReader(real_redis).fetch(now=later).schedulers] == ["host:2:bbbb"]


@pytest.mark.parametrize(
    "copy", [b'{"heartbeat": 1, "fields": [1]}', b'{"heartbeat": 1, "fields": "x"}', b"not json", b"\xff\xfe"]
)
def test_a_garbled_or_huge_copy_is_read_as_nothing(real_redis: Redis, copy: bytes) -> None:
    real_redis.zadd(SEEN_KEY, {"evil": time.time()})
    real_redis.set(copy_key("evil"), copy)
    real_redis.zadd(SEEN_KEY, {"huge": time.time()})
    real_redis.set(copy_key("huge"), b"{" + b" " * (MAX_REMEMBERED_BYTES + 1) + b"}")
    state = CronReader(real_redis).fetch()
    assert state.up and state.jobs == ()
    assert {s.name for s in state.schedulers} <= {"evil"}  # parsed or left out, never a crash


def test_a_dead_schedulers_stored_next_run_wins_over_our_time_zone() -> None:
    # the scheduler computed "0 2 * * *" in New York: 07:00 UTC; the sidecar's own zone must not move it
    stored = T0 + 3 * 3600
    entry = {"name": "nightly", "func_name": "app.clean", "cron": "0 2 * * *", "next_enqueue_time": _iso(stored)}
    job = shape_job(entry, _scheduler(False), T0)
    assert job is not None and job.next_enqueue_at == stored and job.overdue_seconds == 0
    later = shape_job(entry, _scheduler(False), stored + 500)
    assert later is not None and later.overdue_seconds == pytest.approx(500)


def test_a_timestamp_no_calendar_holds_is_shown_empty(real_redis: Redis, real_client: FlaskClient) -> None:
    jobs = [{"name": "far", "func_name": "app.f", "interval": 60, "next_enqueue_time": "9999-12-31T23:59:59.999999Z"}]
    real_redis.zadd(KEYS.cron_schedulers, {"s-far": time.time()})
    real_redis.hset(KEYS.cron_scheduler("s-far"), mapping={"hostname": "h", "pid": "1", "cron_jobs": json.dumps(jobs)})
    assert real_client.get("/cron").status_code == 200
    (far,) = real_client.get("/api/cron").get_json()["jobs"]
    assert far["overdue_seconds"] == 0


def test_metrics_page_and_alert_from_the_same_read(real_redis: Redis, real_client: FlaskClient) -> None:
    scheduler = CronScheduler(real_redis, name="sched-b")
    scheduler.register(print, "default", interval=5, name="fast")
    scheduler.register_birth()
    scheduler.enqueue_jobs()
    scheduler.save()
    scheduler.heartbeat()
    real_redis.zadd(KEYS.cron_schedulers, {"gone": time.time() - 3600})  # a scheduler that died long ago
    history = KEYS.cron_job_history("fast")
    real_redis.zadd(history, {"ran-1": time.time() - 10})  # an older run whose job hash has expired
    text = real_client.get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    states = {s.labels["state"]: s.value for s in families["rqscope_cron_schedulers"].samples}
    assert states == {"alive": 1, "dead": 1}
    assert text.count("# TYPE rqscope_cron_schedulers ") == 1  # one family, by state
    overdue = families["rqscope_cron_job_overdue_seconds"].samples
    assert [s.labels for s in overdue] == [{"cron_job": "fast", "redis": "default"}]
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result
    page = real_client.get("/cron").get_data(as_text=True)
    assert page.count('<tr class="dead">') == 1 and "expired</a>" in page  # the dead scheduler; the gone run
    # fast is due 5 s after its enqueue: the alert engine fires once it is a minute late
    cache = CronCache(CronReader(real_redis, clock=lambda: time.time() + 70))
    engine = AlertEngine(real_redis, (RULE,), lambda: fetch_snapshot(real_redis), cron=cache.get)
    notes = engine.evaluate_once()
    assert notes is not None and [(n.status, dict(n.alert.labels)) for n in notes] == [
        ("firing", {"cron_job": "fast", "redis": "default"})
    ]
    assert notes[0].alert.summary.startswith("fast is 6")


def test_rq_scheduler_entries_are_listed_read_only(real_redis: Redis, real_client: FlaskClient) -> None:
    # rq-scheduler does not install next to rq 3, so this writes what rq-scheduler 0.14's Scheduler.cron()
    # and .schedule(interval=...) write: an RQ job saved with its meta, then ZADD rq:scheduler:scheduled_jobs
    # {job.id: next run epoch}; and enqueue_at's one-off job, which is not a repeating one
    due = time.time() + 300
    for job_id, meta in (
        ("nightly-report", {"cron_string": "0 2 * * *", "use_local_timezone": False}),
        ("every-minute", {"interval": 60}),
        ("one-off", {}),
    ):
        job = Job.create(print, args=("x",), connection=real_redis, result_ttl=-1, id=job_id)
        job.origin = "reports"
        job.meta.update(meta)
        job.save()
        real_redis.zadd(RQ_SCHEDULER_JOBS_KEY, {job.id: due if job_id != "every-minute" else time.time() - 120})
    before = real_redis.dump(RQ_SCHEDULER_JOBS_KEY)
    jobs = {j["name"]: j for j in real_client.get("/api/cron").get_json()["jobs"]}
    assert set(jobs) == {"nightly-report", "every-minute"}
    report = jobs["nightly-report"]
    assert (report["scheduler"], report["cron"], report["queue"], report["func"]) == (
        "rq-scheduler",
        "0 2 * * *",
        "reports",
        "builtins.print",
    )
    assert report["next_enqueue_at"] == datetime.fromtimestamp(due, UTC).isoformat().replace("+00:00", "Z")
    assert report["overdue_seconds"] == 0 and jobs["every-minute"]["overdue_seconds"] >= 120
    assert jobs["every-minute"]["interval"] == 60
    assert real_redis.dump(RQ_SCHEDULER_JOBS_KEY) == before  # read-only: nothing cancelled or rescheduled
    assert "nightly-report" in real_client.get("/cron").get_data(as_text=True)


def test_hostile_names(real_redis: Redis, real_client: FlaskClient) -> None:
    scheduler = CronScheduler(real_redis, name="<b>sched</b>\n")
    for name in HOSTILE:
        scheduler.register(print, "default", interval=60, name=name)
    scheduler.register_birth()
    scheduler.enqueue_jobs()
    scheduler.save()
    # a scheduler and a cron job whose names are not UTF-8, as any client may write them
    entry = b'[{"name": "job-\xff", "func_name": "app.f", "queue_name": "q\xfe", "interval": 60}]'
    real_redis.zadd(KEYS.cron_schedulers, {b"sched-\xff": time.time()})
    real_redis.hset(b"rq:cron_scheduler:sched-\xff", mapping={"hostname": b"h\xff", "pid": "12", "cron_jobs": entry})
    real_redis.zadd(b"rq:cron_job:job-\xff:jobs", {"run-x": time.time()})
    response = real_client.get("/api/cron")
    assert response.status_code == 200
    body = json.loads(response.get_data(as_text=True))
    names = {j["name"] for j in body["jobs"]}
    assert set(HOSTILE) <= names and "job-\udcff" in names
    page = real_client.get("/cron").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;sched&lt;/b&gt;" in page and "<b>sched" not in page
    assert "job-\\xff" in page and "x" * 5000 in page and 'href="/jobs/run-x"' in page
    text = real_client.get("/metrics").get_data()
    labels = {
        s.labels["cron_job"]
        for f in text_string_to_metric_families(text.decode())
        if f.name == "rqscope_cron_job_overdue_seconds"
        for s in f.samples
    }
    assert {"line\nbreak", "job-\\xff", "x" * 5000} <= labels
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result


def test_a_huge_registry_is_read_in_bounded_round_trips(real_redis: Redis) -> None:
    real_redis.zadd(KEYS.cron_schedulers, {f"s{i}": time.time() for i in range(MAX_SCHEDULERS + 50)})
    real_redis.hset(KEYS.cron_scheduler("s0"), "cron_jobs", "x" * (2 << 20))  # too big to read
    real_redis.hset(KEYS.cron_scheduler("s1"), "cron_jobs", "{not json")
    real_redis.set(KEYS.cron_scheduler("s2"), "wrong type")
    before = real_redis.info("stats")["total_commands_processed"]
    started = time.perf_counter()
    state = CronReader(real_redis).fetch()
    assert time.perf_counter() - started < 2
    assert state.up and state.truncated and len(state.schedulers) == MAX_SCHEDULERS and state.jobs == ()
    used = real_redis.info("stats")["total_commands_processed"] - before
    assert used <= 5 + 2 * MAX_SCHEDULERS + 1  # one pipeline per step, no per-item round trip beyond the caps


def test_the_cron_read_is_cached_for_a_second(redis: Redis) -> None:
    now = [0.0]
    cache = CronCache(CronReader(redis), ttl=1.0, clock=lambda: now[0])
    first = cache.get()
    now[0] = 0.5
    assert cache.get() is first and cache.fetches == 1
    now[0] = 1.0
    cache.get()
    assert cache.fetches == 2


def test_redis_down_is_a_state_not_a_500(real_settings: Settings) -> None:
    server = EmbeddedRedis(port=_free_port(), binary=redis_binary()).start()
    settings = real_settings.replace(
        redis_url=server.url, redis_timeout=1.0, redis_connect_timeout=1.0, snapshot_ttl=0.01
    )
    client = create_app(settings, testing=True).test_client()
    server.stop()
    started = time.perf_counter()
    api = client.get("/api/cron")
    assert api.status_code == 503 and api.get_json()["jobs"] == [] and "Redis" in api.get_json()["error"]
    page = client.get("/cron")
    assert page.status_code == 503 and 'id="cron-unavailable"' in page.get_data(as_text=True)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and b"rqscope_cron_" not in metrics.get_data()
    assert time.perf_counter() - started < 15
    assert CronReader(Redis.from_url(server.url, socket_connect_timeout=1)).fetch().up is False
    assert evaluate((RULE,), fetch_snapshot(Redis.from_url(server.url)), None, T0, CronState(False, T0)) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_name_json_spells_as_a_lone_surrogate_is_shown_as_its_bytes_everywhere(
    real_redis: Redis, real_client: FlaskClient
) -> None:
    # JSON may spell a surrogate no byte stands for ("\ud800"); RQ could write no key under such a name
    entry = '[{"name": "job-\\ud800", "func_name": "app.f\\udfff", "queue_name": "q\\ud800", "interval": 60}]'
    real_redis.zadd(KEYS.cron_schedulers, {"s-json": time.time()})
    real_redis.hset(KEYS.cron_scheduler("s-json"), mapping={"hostname": "h", "pid": "1", "cron_jobs": entry})
    api = real_client.get("/api/cron")
    assert api.status_code == 200
    [job] = api.get_json()["jobs"]
    assert job["name"] == "job-\udced\udca0\udc80" and job["queue"] == "q\udced\udca0\udc80"  # its UTF-8 bytes
    page = real_client.get("/cron")
    assert page.status_code == 200 and "job-\\xed\\xa0\\x80" in page.get_data(as_text=True)
    text = real_client.get("/metrics").get_data(as_text=True)
    assert 'rqscope_redis_up{redis="default"} 1.0' in text
    assert 'rqscope_cron_job_overdue_seconds{cron_job="job-\\\\xed\\\\xa0\\\\x80",redis="default"}' in text
