"""The Snapshot: what it reads, what it costs, and how it treats odd data."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from rq import Queue
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.families import snapshot_families
from rqscope.monitor.reader import SnapshotReader, fetch_snapshot
from rqscope.monitor.shaping import shape_worker
from rqscope.monitor.snapshot import WORKER_FIELDS, Snapshot, parse_time, shape_rate_limit
from rqscope.tasks.procstats import publish, sample
from rqscope.tasks.registry import enqueue
from rqscope.tasks.worker import InstrumentedWorker

from bench.common import CountingConnection, counting_client

READ_COMMANDS = {
    "smembers",
    "info",
    "hgetall",
    "hmget",
    "zrangebyscore",
    "zcard",
    "llen",
    "lindex",
    "exists",
    "hget",
    "srandmember",
}


def utc(seconds_ago: float) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill(redis: Redis, queues: int, workers: int) -> None:
    pipe = redis.pipeline(transaction=False)
    for q in range(queues):
        name = f"queue-{q}"
        pipe.sadd("rq:queues", f"rq:queue:{name}")
        pipe.rpush(f"rq:queue:{name}", f"job-{q}")
        pipe.hset(f"rq:job:job-{q}", mapping={"enqueued_at": utc(30), "status": "queued"})
        for registry in ("wip", "failed", "finished"):
            pipe.zadd(f"rq:{registry}:{name}", {f"{registry}-{q}": time.time()})
    for w in range(workers):
        key = f"rq:worker:w-{w}"
        pipe.sadd("rq:workers", key)
        pipe.hset(
            key,
            mapping={
                "state": "idle",
                "queues": f"queue-{w % max(queues, 1)}",
                "hostname": "h1",
                "pid": str(1000 + w),
                "last_heartbeat": utc(5),
                "birth": utc(100),
            },
        )
    pipe.execute()


def round_trips(url: str, use_script: bool = True) -> tuple[int, Snapshot]:
    client = counting_client(url)
    client.ping()  # the connection handshake is not part of the snapshot
    reader = SnapshotReader(client, use_script=use_script)
    before = CountingConnection.sends
    snapshot = reader.fetch()
    assert snapshot.redis.up
    return CountingConnection.sends - before, snapshot


@pytest.mark.redis
@pytest.mark.parametrize(("use_script", "expected"), [(True, 2), (False, 3)])
def test_round_trips_do_not_grow_with_queues_and_workers(
    real_redis: Redis,
    redis_server,
    use_script: bool,
    expected: int,  # type: ignore[no-untyped-def]
) -> None:
    fill(real_redis, queues=1, workers=1)
    small_trips, small = round_trips(redis_server.url, use_script)
    real_redis.flushall()
    fill(real_redis, queues=200, workers=300)
    large_trips, large = round_trips(redis_server.url, use_script)
    assert small_trips == large_trips == expected
    assert len(small.queues) == 1 and len(large.queues) == 200
    assert len(large.workers) == 300 and large.round_trips == expected


@pytest.mark.redis
def test_script_and_pipeline_read_the_same_state(real_redis: Redis, redis_server) -> None:  # type: ignore[no-untyped-def]
    fill(real_redis, queues=5, workers=7)
    real_redis.sadd("rq:queues", "rq:queue:odd")
    real_redis.set("rq:queue:odd", "not a list")
    real_redis.set("rq:failed:odd", "not a zset")
    real_redis.sadd("rq:workers", "rq:worker:odd")
    real_redis.set("rq:worker:odd", "not a hash")
    now = time.time()
    by_script = SnapshotReader(real_redis, use_script=True).fetch(now)
    by_pipeline = SnapshotReader(real_redis, use_script=False).fetch(now)
    assert by_script.queues == by_pipeline.queues and len(by_script.queues) == 6
    assert by_script.workers == by_pipeline.workers and len(by_script.workers) == 8
    assert by_script.queue("odd").queued == 0  # type: ignore[union-attr]


@pytest.mark.redis
def test_acl_user_without_scripting_falls_back_to_pipelines(real_redis: Redis, redis_server) -> None:  # type: ignore[no-untyped-def]
    fill(real_redis, queues=3, workers=2)
    commands = ["+@read", "+info", "+ping", "+client"]
    real_redis.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"], commands=commands)
    try:
        client = Redis.from_url(redis_server.url, username="reader", password="pw")
        reader = SnapshotReader(client)
        first = reader.fetch()
        assert first.redis.up and len(first.queues) == 3 and not reader.use_script
        assert reader.fetch().round_trips == 3
    finally:
        real_redis.acl_deluser("reader")


@pytest.mark.redis
def test_snapshot_never_writes(real_redis: Redis) -> None:
    fill(real_redis, queues=3, workers=3)
    digest = real_redis.execute_command("DEBUG", "DIGEST")
    for use_script in (True, False):
        real_redis.config_resetstat()
        SnapshotReader(real_redis, use_script=use_script).fetch()
        used = {name.removeprefix("cmdstat_").split("|")[0] for name in real_redis.info("commandstats")}
        assert used - {"config", "evalsha", "script"} <= READ_COMMANDS  # SCRIPT LOAD adds no key
    assert real_redis.execute_command("DEBUG", "DIGEST") == digest


@pytest.mark.redis
def test_the_read_script_is_sent_once_then_named_by_its_sha(real_redis: Redis) -> None:
    fill(real_redis, queues=20, workers=40)  # two chunks
    reader = SnapshotReader(real_redis)
    first = reader.fetch()
    real_redis.config_resetstat()
    again = reader.fetch()
    used = real_redis.info("commandstats")
    assert "cmdstat_eval" not in used and "cmdstat_script|load" not in used and "cmdstat_script" not in used
    assert used["cmdstat_evalsha"]["calls"] == 2 and again.round_trips == first.round_trips == 2
    real_redis.script_flush()  # a restarted Redis: the script is sent again, in one more round trip
    flushed = reader.fetch()
    assert flushed.redis.up and flushed.round_trips == 3 and len(flushed.queues) == len(again.queues) == 20
    assert reader.fetch().round_trips == 2


@pytest.mark.redis
def test_the_read_script_declares_every_key_it_can_know(real_redis: Redis, redis_server) -> None:  # type: ignore[no-untyped-def]
    fill(real_redis, queues=20, workers=40)  # two chunks
    for i in range(3):
        enqueue("t_ok", i, connection=real_redis)  # a head job, found by reading the queue
    publish(real_redis, sample(real_redis, "web"), ttl=30)
    real_redis.hset("rq:worker:w-0", "state", "busy")  # its executions set is read; an idle worker's is not
    reader = SnapshotReader(real_redis)
    reader.fetch()  # the script is loaded
    seen: list[dict[str, object]] = []
    watcher = Redis.from_url(redis_server.url)
    with watcher.monitor() as monitor:
        done = threading.Event()

        def listen() -> None:
            for event in monitor.listen():
                seen.append(event)
                if event["command"] == "ECHO read-done":
                    done.set()
                    return

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        time.sleep(0.2)
        snapshot = reader.fetch()
        real_redis.echo("read-done")
        assert done.wait(10)
    scripts = [str(e["command"]).split(" ") for e in seen if str(e["command"]).startswith("EVALSHA ")]
    declared = {key for args in scripts for key in args[3 : 3 + int(args[2])]}
    touched = [str(e["command"]).split(" ")[1] for e in seen if e["client_type"] == "lua"]
    assert len(scripts) == 2 and snapshot.redis.up and len(touched) > 20 * 11 + 40 + 1
    assert "rq:worker:w-0:executions" in touched and "rq:worker:w-1:executions" not in touched
    found_by_reading = ("rq:job:", "rq:execution:")  # the queue's head, a worker's running execution
    assert [key for key in touched if key not in declared and not key.startswith(found_by_reading)] == []
    assert any(key.startswith("rq:job:") for key in touched)


@pytest.mark.redis
def test_snapshot_of_real_rq_state(real_redis: Redis) -> None:
    for i in range(3):
        enqueue("t_ok", i, connection=real_redis)
    enqueue("t_fail", 1, connection=real_redis)
    worker = InstrumentedWorker(["default"], connection=real_redis, publish_interval=60)
    worker.work(burst=True, logging_level="WARNING")
    waiting = enqueue("t_ok", 9, connection=real_redis)
    real_redis.hset(waiting.key, "enqueued_at", utc(42))
    publish(real_redis, sample(real_redis, "web"), ttl=30)
    real_redis.sadd("rq:workers", "rq:worker:vanished")  # registered, but its hash expired

    snap = fetch_snapshot(real_redis)
    assert snap.redis.up and snap.redis.info["maxclients"] > 0
    default = snap.queue("default")
    assert default is not None
    assert default.counts == {
        "queued": 1,
        "started": 0,
        "deferred": 0,
        "ready": 0,
        "scheduled": 0,
        "finished": 3,
        "failed": 1,
        "canceled": 0,
    }
    assert 41 <= default.latency_seconds <= 60
    by_name = {w.name: w for w in snap.workers}
    assert by_name["vanished"].dead and by_name["vanished"].state == "dead"
    assert [w.name for w in snap.dead_workers] == ["vanished"]
    assert snap.tasks[("t_ok", "default")].outcomes["success"] == 3
    assert {p.role for p in snap.processes} == {"web"}


@pytest.mark.redis
def test_live_worker_is_counted_as_serving_its_queues(real_redis: Redis) -> None:
    fill(real_redis, queues=2, workers=0)
    real_redis.sadd("rq:workers", "rq:worker:live")
    real_redis.hset(
        "rq:worker:live",
        mapping={
            "state": "busy",
            "queues": "queue-0,queue-1",
            "hostname": "h",
            "last_heartbeat": utc(3),
            "current_job": "job-0",
        },
    )
    snap = fetch_snapshot(real_redis)
    assert [q.workers for q in snap.queues] == [1, 1]
    assert snap.workers[0].state == "busy" and snap.workers[0].current_job == "job-0"
    assert 2 <= (snap.workers[0].heartbeat_age or 0) < 30


def fields(execution: bytes | None = None, created: bytes | None = None, **values: bytes) -> list[bytes | None]:
    return [*(values.get(name) for name in WORKER_FIELDS), execution, created]


def test_rq3_worker_names_its_job_through_its_executions_set() -> None:
    now = time.time()
    started = datetime.fromtimestamp(now - 7, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    values = fields(execution=b"job-1:0f3a", created=started, state=b"busy", last_heartbeat=utc(1).encode())
    worker = shape_worker("w", values, now, {}, 480)
    assert worker.current_job == "job-1"
    assert 6.5 < worker.current_job_seconds < 8


def test_worker_with_garbage_fields_is_unknown_not_an_error() -> None:
    raw = {
        "state": b"\xff\xfe",
        "pid": b"NaN-ish",
        "last_heartbeat": b"yesterday",
        "queues": b",,",
        "successful_job_count": b"many",
        "total_working_time": b"inf",
    }
    worker = shape_worker("odd", fields(**raw), time.time(), {}, ttl=480)
    assert worker.state == "dead" and worker.pid is None and worker.queues == ()
    assert worker.successful_jobs == 0 and worker.working_seconds == 0.0 and worker.heartbeat_age is None
    fresh = shape_worker("odd", fields(state=b"weird", last_heartbeat=utc(1).encode()), time.time(), {}, 480)
    assert fresh.state == "unknown" and not fresh.dead


def test_stale_heartbeat_marks_a_worker_dead() -> None:
    worker = shape_worker("old", fields(state=b"idle", last_heartbeat=utc(600).encode()), time.time(), {}, 480)
    assert worker.dead and worker.state == "dead"


def test_rqscope_worker_without_live_process_stats_is_dead_within_three_intervals() -> None:
    from rqscope.tasks.procstats import LIVENESS_FIELD, ProcessSample

    now, interval = time.time(), {LIVENESS_FIELD: b"5"}
    silent = fields(state=b"busy", last_heartbeat=utc(20).encode(), birth=utc(60).encode(), **interval)
    assert shape_worker("w", silent, now, {}, 480).dead  # its stats expired: SIGKILLed or frozen
    sample = ProcessSample("worker", "h", 1, "w", 1, 0.0, 0, 1, 10, now)
    assert not shape_worker("w", silent, now, {"w": sample}, 480).dead
    back = fields(state=b"idle", last_heartbeat=utc(1).encode(), birth=utc(60).encode(), **interval)
    assert not shape_worker("w", back, now, {}, 480).dead  # back from a Redis outage, not published yet
    newborn = fields(state=b"idle", last_heartbeat=utc(1).encode(), birth=utc(1).encode(), **interval)
    assert not shape_worker("w", newborn, now, {}, 480).dead
    stock = fields(state=b"busy", last_heartbeat=utc(20).encode(), birth=utc(60).encode())
    assert not shape_worker("w", stock, now, {}, 480).dead  # a stock rq worker publishes nothing


def test_parse_time() -> None:
    assert parse_time(b"2024-05-01T10:00:00.123456Z") == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert parse_time(None) is None and parse_time(b"") is None and parse_time("garbage") is None


def test_wrong_type_keys_degrade_instead_of_failing(redis: Redis) -> None:
    redis.sadd("rq:queues", "rq:queue:odd")
    redis.set("rq:queue:odd", "not a list")
    redis.set("rq:failed:odd", "not a zset")
    snap = fetch_snapshot(redis)
    assert snap.redis.up
    odd = snap.queue("odd")
    assert odd is not None and odd.queued == 0 and odd.registries["failed"] == 0


def test_down_redis_gives_a_down_snapshot() -> None:
    from rqscope.monitor.embedded import free_port

    client = Redis(port=free_port(), socket_connect_timeout=0.5)
    snap = fetch_snapshot(client)
    assert not snap.redis.up and snap.redis.error == "ConnectionError" and snap.queues == ()


def test_cache_serves_many_concurrent_readers_with_one_fetch(redis: Redis) -> None:
    calls = []

    def slow_fetch() -> Snapshot:
        calls.append(1)
        time.sleep(0.2)
        return fetch_snapshot(redis)

    cache = SnapshotCache(redis, ttl=5.0, fetch=slow_fetch)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(results) == 20 and len(calls) == 1
    assert all(r is results[0] for r in results)


def test_cache_refreshes_after_ttl(redis: Redis) -> None:
    now = [0.0]
    cache = SnapshotCache(redis, ttl=1.0, clock=lambda: now[0])
    first = cache.get()
    assert cache.get() is first
    now[0] = 1.5
    assert cache.get() is not first and cache.fetches == 2


def test_queue_is_counted_from_real_rq_queue_keys(redis: Redis) -> None:
    Queue("emails", connection=redis).enqueue("tests.sample_tasks.t_ok")
    snap = fetch_snapshot(redis)
    assert [q.name for q in snap.queues] == ["emails"] and snap.queues[0].queued == 1


@pytest.mark.redis
def test_pool_exhaustion_is_counted_and_published(real_redis: Redis, redis_server) -> None:  # type: ignore[no-untyped-def]
    from redis.exceptions import ConnectionError as RedisConnectionError
    from rqscope.monitor.redis_client import make_client
    from rqscope.monitor.settings import Settings
    from rqscope.tasks.procstats import Publisher

    client = make_client(Settings(redis_url=redis_server.url), max_connections=1)
    held = client.connection_pool.get_connection()
    with pytest.raises(RedisConnectionError, match="Too many connections"):
        client.ping()
    client.connection_pool.release(held)
    publisher = Publisher(client, "web", interval=30)
    publisher.publish_once()
    [sample] = fetch_snapshot(real_redis).processes
    assert sample.pool_exhausted == 1 and sample.pool_exhausted_recent == 1
    publisher.publish_once()
    [sample] = fetch_snapshot(real_redis).processes
    assert sample.pool_exhausted == 1 and sample.pool_exhausted_recent == 0


@pytest.mark.redis
@pytest.mark.skipif(not hasattr(Queue, "_enqueue_rate_limited_job"), reason="concurrency limits arrived in rq 3.0")
def test_rate_limits_are_read_with_their_slots_and_held_jobs(real_redis: Redis) -> None:
    from rq.rate_limit import RateLimit  # type: ignore[import-not-found]

    queue = Queue("default", connection=real_redis)
    for i in range(5):
        queue.enqueue(len, [i], rate_limit=RateLimit("partner-api", 2))
    snapshot = fetch_snapshot(real_redis, now=time.time() + 30)
    (limit,) = snapshot.rate_limits
    assert (limit.key, limit.concurrency, limit.allowed, limit.held) == ("partner-api", 2, 2, 3)
    assert 29 < limit.oldest_held_seconds < 40
    assert snapshot.queue("default").queued == 2
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in snapshot_families(snapshot)
        for s in family.samples
    }
    assert samples[("rqscope_rate_limit_jobs", (("key", "partner-api"), ("state", "held")))] == 3
    assert samples[("rqscope_rate_limit_jobs", (("key", "partner-api"), ("state", "allowed")))] == 2
    assert samples[("rqscope_rate_limit_concurrency", (("key", "partner-api"),))] == 2


def test_rate_limit_rows_degrade_on_garbage() -> None:
    limit = shape_rate_limit("k", [b"x", "no", None, [b"id"]], time.time())
    assert (limit.concurrency, limit.allowed, limit.held, limit.oldest_held_seconds) == (0, 0, 0, 0.0)


def _worker(redis: Redis, name: bytes | str, **fields: str) -> None:
    key = b"rq:worker:" + (name if isinstance(name, bytes) else name.encode())
    redis.sadd("rq:workers", key)
    redis.hset(
        key, mapping={"state": "idle", "queues": "queue-0", "hostname": "h1", "last_heartbeat": utc(5), **fields}
    )


@pytest.mark.redis
def test_a_reader_reparses_only_changed_rows_and_never_serves_a_stale_one(real_redis: Redis) -> None:
    fill(real_redis, queues=3, workers=4)
    reader = SnapshotReader(real_redis)
    now = time.time()
    first = reader.fetch(now)
    assert reader.shaper.parsed == 3 + 4
    real_redis.hset("rq:worker:w-1", mapping={"state": "busy", "successful_job_count": "41", "current_job": "job-1"})
    real_redis.zadd("rq:failed:queue-2", {"another": now})
    second = reader.fetch(now + 100)
    assert reader.shaper.parsed == 3 + 4 + 2  # the changed worker and the changed queue, nothing else
    changed = {w.name: w for w in second.workers}["w-1"]
    assert (changed.state, changed.successful_jobs, changed.current_job) == ("busy", 41, "job-1")
    assert second.queue("queue-2").registries["failed"] == 2  # type: ignore[union-attr]
    assert second.queue("queue-1").registries["failed"] == 1  # type: ignore[union-attr]
    # what depends on the moment of the read moves on for the rows that were not parsed again
    unchanged = {w.name: w for w in first.workers}["w-0"], {w.name: w for w in second.workers}["w-0"]
    assert 99 < unchanged[1].heartbeat_age - unchanged[0].heartbeat_age < 101  # type: ignore[operator]
    latency = first.queue("queue-0").latency_seconds, second.queue("queue-0").latency_seconds  # type: ignore[union-attr]
    assert 99 < latency[1] - latency[0] < 101
    assert first.queue("queue-2").registries["failed"] == 1  # type: ignore[union-attr]  # an earlier snapshot is kept


@pytest.mark.redis
def test_a_removed_worker_or_queue_leaves_the_next_read(real_redis: Redis) -> None:
    fill(real_redis, queues=2, workers=3)
    reader = SnapshotReader(real_redis)
    assert len(reader.fetch().workers) == 3
    real_redis.srem("rq:workers", "rq:worker:w-2")
    real_redis.delete("rq:worker:w-2")
    real_redis.srem("rq:queues", "rq:queue:queue-1")
    snapshot = reader.fetch()
    assert sorted(w.name for w in snapshot.workers) == ["w-0", "w-1"]
    assert [q.name for q in snapshot.queues] == ["queue-0"]
    # re-registered with the very same bytes, it is back, alive, under its own name
    _worker(real_redis, "w-2", queues="queue-0")
    again = {w.name: w for w in reader.fetch().workers}
    assert "w-2" in again and not again["w-2"].dead


@pytest.mark.redis
def test_rows_with_identical_bytes_keep_their_own_hostile_names(real_redis: Redis) -> None:
    hostile = ["evil\nqueue", "a/../b", "100%", "x" * 5000, "caf\xe9"]
    raw_names = [n.encode() for n in hostile] + [b"\xff\xfebin"]
    beat = utc(5)
    for raw in raw_names:  # every queue and every worker has exactly the same row as the others
        real_redis.sadd("rq:queues", b"rq:queue:" + raw)
        real_redis.rpush(b"rq:queue:" + raw, "same-job")
        _worker(real_redis, raw, queues="shared", last_heartbeat=beat)
    real_redis.hset("rq:job:same-job", mapping={"enqueued_at": utc(30)})
    reader = SnapshotReader(real_redis)
    reader.fetch()
    assert reader.shaper.parsed == 2  # one queue row and one worker row, parsed once for all the names
    snapshot = reader.fetch()
    assert reader.shaper.parsed == 2  # the second read shapes everything from the kept parse
    from prometheus_client.parser import text_string_to_metric_families
    from rqscope.monitor.exposition import render
    from rqscope.monitor.names import as_name, label

    expected = sorted(as_name(raw) for raw in raw_names)
    assert [q.name for q in snapshot.queues] == expected
    assert sorted(w.name for w in snapshot.workers) == expected
    text = render(snapshot_families(snapshot)).decode()
    labels = {
        s.labels["queue"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "rqscope_queue_jobs" and s.labels["state"] == "queued"
    }
    assert labels == {label(name) for name in expected} and len(labels) == len(raw_names)


@pytest.mark.redis
@pytest.mark.parametrize("use_script", [True, False])
def test_only_a_busy_workers_execution_names_its_running_job(real_redis: Redis, use_script: bool) -> None:
    """RQ 3 creates a worker's execution and sets it busy in one transaction: an execution left in an idle
    worker's set names no running job, and the read script does not look for the executions of idle workers."""
    started = utc(7)
    for name, state in (("busy-1", "busy"), ("idle-1", "idle"), ("idle-2", "idle")):
        real_redis.sadd("rq:workers", f"rq:worker:{name}")
        real_redis.hset(f"rq:worker:{name}", mapping={"state": state, "queues": "default", "last_heartbeat": utc(1)})
        real_redis.sadd(f"rq:worker:{name}:executions", f"job-of-{name}:e1")
        real_redis.hset(f"rq:execution:job-of-{name}:e1", "created_at", started)
    real_redis.config_resetstat()
    snapshot = SnapshotReader(real_redis, use_script=use_script).fetch()
    workers = {w.name: w for w in snapshot.workers}
    assert workers["busy-1"].current_job == "job-of-busy-1" and 6 < workers["busy-1"].current_job_seconds < 30
    assert workers["idle-1"].current_job is None and workers["idle-2"].current_job is None
    assert workers["idle-1"].current_job_seconds == 0.0
    stats = real_redis.info("commandstats")
    # the executions' created_at: the busy worker's only
    assert stats["cmdstat_hget"]["calls"] == 1
    if use_script:
        assert stats["cmdstat_srandmember"]["calls"] == 1
