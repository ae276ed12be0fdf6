"""Deleting and emptying over a real Redis: RQ's own clean-up per job, and bounded work per command."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.group import Group
from rq.job import Job
from rqscope.monitor import delete
from rqscope.monitor.delete import delete_jobs, empty

from tests.test_retry import make_failed

pytestmark = pytest.mark.redis
HTML = {"Accept": "text/html"}
BATCH = delete.BATCH_SIZE


def every_state(redis: Redis, queue: str = "default") -> dict[str, list[str]]:
    """Jobs in each deletable state, made through RQ's own API and worker, with groups, dependencies and
    leftover executions (RQ leaves those behind when a horse dies)."""
    q = Queue(queue, connection=redis)
    group = Group.create(connection=redis)
    failing = [Queue.prepare_data("tests.sample_tasks.t_fail", (i,)) for i in range(3)]
    failed = [job.id for job in group.enqueue_many(q, failing)]
    finished = [q.enqueue("tests.sample_tasks.t_ok", i).id for i in range(3)]
    SimpleWorker([q], connection=redis).work(burst=True, logging_level="ERROR")
    with redis.pipeline() as pipe:
        Execution.create(Job.fetch(failed[0], connection=redis), ttl=600, pipeline=pipe)
        pipe.execute()
    parent = q.enqueue("tests.sample_tasks.t_ok", 10)
    queued = [parent.id, *(j.id for j in group.enqueue_many(q, [Queue.prepare_data("tests.sample_tasks.t_ok", (11,))]))]
    deferred = [q.enqueue("tests.sample_tasks.t_ok", 20 + i, depends_on=parent).id for i in range(2)]
    scheduled = [q.enqueue_in(timedelta(hours=1), "tests.sample_tasks.t_ok", 30 + i).id for i in range(2)]
    canceled = q.enqueue("tests.sample_tasks.t_ok", 40)
    canceled.cancel()
    return {
        "queued": queued,
        "deferred": deferred,
        "scheduled": scheduled,
        "finished": finished,
        "failed": failed,
        "canceled": [canceled.id],
    }


def traces(redis: Redis, ids: list[str]) -> list[str]:
    """Every key that names one of these ids or holds one as a member (registries, lists, sets, groups)."""
    found = []
    members: dict[bytes, Callable[[bytes], Any]] = {
        b"list": lambda k: redis.lrange(k, 0, -1),
        b"set": lambda k: redis.smembers(k),
        b"zset": lambda k: redis.zrange(k, 0, -1),
    }
    for key in redis.scan_iter(count=1000):
        text = key.decode("utf-8", "replace")
        if text.endswith(":dependencies") and not any(job_id in text for job_id in ids):
            continue  # a job still waiting on a deleted one keeps naming it, as after RQ's Job.delete
        read = members.get(redis.type(key))
        values = [m.decode("utf-8", "replace") for m in read(key)] if read else []
        for job_id in ids:
            if job_id in text or any(job_id in value for value in values):
                found.append(f"{text} ({job_id})")
    return found


def test_emptying_each_registry_leaves_no_trace_of_its_jobs(real_client: FlaskClient, real_redis: Redis) -> None:
    states = every_state(real_redis)
    for name, ids in states.items():
        response = real_client.delete(f"/api/queues/default/registries/{name}")
        assert response.get_json() == {"deleted": len(ids)}, name
        assert traces(real_redis, ids) == [], name
    assert real_client.delete("/api/queues/default/registries/failed").get_json() == {"deleted": 0}


def test_emptying_one_registry_leaves_the_others_alone(real_client: FlaskClient, real_redis: Redis) -> None:
    states = every_state(real_redis)
    other = [q.id for q in (Queue("other", connection=real_redis).enqueue("tests.sample_tasks.t_ok", 1),)]
    assert real_client.delete("/api/queues/default/registries/failed").get_json() == {"deleted": 3}
    for name, ids in states.items():
        if name != "failed":
            assert all(real_redis.exists(f"rq:job:{i}") for i in ids), name
    assert Queue("default", connection=real_redis).job_ids == states["queued"]
    assert real_redis.zcard("rq:deferred:default") == 2 and real_redis.zcard("rq:scheduled:default") == 2
    assert Queue("other", connection=real_redis).job_ids == other


def test_deleting_a_selection_twice_from_each_state(real_redis: Redis) -> None:
    states = every_state(real_redis)
    for name, ids in states.items():
        chosen = ids[:1]
        assert delete_jobs(real_redis, "default", name, chosen) == 1, name
        assert delete_jobs(real_redis, "default", name, chosen) == 0, name
        assert traces(real_redis, chosen) == [], name
        assert all(real_redis.exists(f"rq:job:{i}") for i in ids[1:]), name


def test_a_job_whose_hash_is_gone_still_leaves_the_registry(real_redis: Redis) -> None:
    ids = make_failed(real_redis, 4)
    real_redis.delete(f"rq:job:{ids[0]}", f"rq:job:{ids[1]}")
    assert delete_jobs(real_redis, "default", "failed", [ids[0]]) == 1
    assert empty(real_redis, "default", "failed") == 3
    assert real_redis.exists("rq:failed:default") == 0 and traces(real_redis, ids) == []


def test_deleting_ids_never_touches_a_job_that_moved_on(real_redis: Redis) -> None:
    [job_id] = make_failed(real_redis, 1)
    real_redis.zrem("rq:failed:default", job_id)
    real_redis.rpush("rq:queue:default", job_id)  # retried by someone else meanwhile
    assert delete_jobs(real_redis, "default", "failed", [job_id]) == 0
    assert real_redis.exists(f"rq:job:{job_id}") and real_redis.lrange("rq:queue:default", 0, -1) == [job_id.encode()]


def test_deleting_running_jobs_is_refused(real_redis: Redis) -> None:
    with pytest.raises(ValueError):
        delete_jobs(real_redis, "default", "started", ["x"])
    with pytest.raises(ValueError):
        empty(real_redis, "default", "started")


def fill_queue(redis: Redis, count: int, queue: str = "default") -> list[str]:
    q = Queue(queue, connection=redis)
    with redis.pipeline() as pipe:
        jobs = [q.enqueue("tests.sample_tasks.t_ok", i, pipeline=pipe) for i in range(count)]
        pipe.execute()
    return [job.id for job in jobs]


Command = tuple[list[str], bool]  # (arguments, run by a script)


def logged_commands(redis: Redis, action: Callable[[], object]) -> tuple[list[Command], dict[str, int]]:
    """Every command the server ran during `action` (SLOWLOG at threshold 0 also logs those a script runs),
    and call counts per command name from INFO commandstats."""
    redis.config_set("slowlog-max-len", 1_000_000)
    redis.config_set("slowlog-log-slower-than", 0)
    redis.slowlog_reset()
    redis.config_resetstat()
    try:
        action()
    finally:
        redis.config_set("slowlog-log-slower-than", 10_000)
    stats = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in redis.info("commandstats").items()}
    entries = redis.execute_command("SLOWLOG", "GET", "-1")  # raw: [id, time, duration, args, client, name]
    commands = [([arg.decode("utf-8", "replace") for arg in e[3]], e[4] == b"?:0") for e in entries]
    return [c for c in commands if c[0][:2] != ["SLOWLOG", "GET"]], stats


def top_level(commands: list[Command]) -> list[list[str]]:
    return [args for args, scripted in commands if not scripted]


def assert_bounded(commands: list[Command]) -> None:
    """No command, sent or run by a script, reads or removes more than one batch of a queue or registry."""
    collections = (
        "rq:queue:",
        "rq:deferred:",
        "rq:scheduled:",
        "rq:finished:",
        "rq:failed:",
        "rq:canceled:",
        "rqscope:emptying:",
    )
    for args, _ in commands:
        name = args[0].upper()
        assert name not in ("LREM", "KEYS"), args
        if name in ("LRANGE", "ZRANGE", "ZREVRANGE") and args[1].startswith(collections):
            start, stop = int(args[2]), int(args[3])
            assert start >= 0 and 0 <= stop - start < BATCH, args


@pytest.mark.parametrize("state", ["queued", "failed"])
def test_emptying_costs_batches_never_a_whole_list(real_client: FlaskClient, real_redis: Redis, state: str) -> None:
    def work(count: int) -> tuple[list[list[str]], dict[str, int]]:
        real_redis.flushall()
        if state == "queued":
            fill_queue(real_redis, count)
        else:
            make_failed(real_redis, count)
        logged = logged_commands(real_redis, lambda: real_client.delete(f"/api/queues/default/registries/{state}"))
        assert real_redis.exists("rq:queue:default", "rq:failed:default") == 0
        assert len(real_redis.keys("rq:job:*")) == 0
        return logged

    small_commands, small = work(1_000)
    commands, large = work(3_000)
    assert_bounded(small_commands)
    assert_bounded(commands)
    sent = top_level(commands)
    scripts = sum(1 for args in sent if args[0].upper() in ("EVAL", "EVALSHA"))
    assert scripts <= 3_000 // BATCH + 3 and len(sent) <= scripts + 20  # round trips follow N / batch
    assert sum(large.values()) <= 3.2 * sum(small.values())  # total work grows linearly with N


def test_the_confirm_page_counts_without_reading_the_list(real_client: FlaskClient, real_redis: Redis) -> None:
    fill_queue(real_redis, 1_200)
    make_failed(real_redis, 700)
    for state, count in (("queued", "1,200"), ("failed", "700")):
        url = f"/queues/default/{state}/confirm?action=empty"
        page = real_client.get(url, headers=HTML).text
        commands, stats = logged_commands(real_redis, lambda u=url: real_client.get(u, headers=HTML))
        assert f"Delete {count} jobs" in page
        assert_bounded(commands)
        assert sum(stats.values()) < 50, stats


def test_a_filtered_delete_from_a_long_queue_is_bounded(real_client: FlaskClient, real_redis: Redis) -> None:
    kept = fill_queue(real_redis, 2_000)
    doomed = [Queue("default", connection=real_redis).enqueue("tests.sample_tasks.t_fail", i).id for i in range(3)]
    real_client.get("/queues/default/queued", headers=HTML)
    with real_client.session_transaction() as session:
        token = session["csrf_token"]
    form = {"csrf_token": token, "action": "empty", "func": "t_fail"}
    commands, stats = logged_commands(real_redis, lambda: real_client.post("/queues/default/queued/bulk", data=form))
    assert Queue("default", connection=real_redis).job_ids == kept and traces(real_redis, doomed) == []
    assert stats.get("lrem", 0) == 3 and all(args[2] == "-1" for args in top_level(commands) if args[0] == "LREM")


def test_an_interrupted_empty_is_finished_by_the_next(real_redis: Redis) -> None:
    ids = fill_queue(real_redis, 1_100)
    detached = delete.detach(real_redis, "default", "queued")
    assert delete.drain(real_redis, detached, "default", limit=BATCH) == BATCH  # then the process dies
    later = fill_queue(real_redis, 2)
    assert Queue("default", connection=real_redis).job_ids == later
    assert empty(real_redis, "default", "queued") == 1_100 - BATCH + 2
    assert traces(real_redis, ids + later) == [] and real_redis.hlen(delete.PENDING_KEY) == 0


def test_a_queue_whose_name_is_not_utf8(real_redis: Redis) -> None:
    name = b"q\xff/..%\n".decode("utf-8", "surrogateescape")
    ids = [f"job-{i}" for i in range(3)]
    for job_id in ids:
        real_redis.hset(f"rq:job:{job_id}", mapping={"origin": b"q\xff/..%\n", "status": "queued"})
    real_redis.rpush(b"rq:queue:q\xff/..%\n", *ids)
    assert delete_jobs(real_redis, name, "queued", ids[:1]) == 1
    assert empty(real_redis, name, "queued") == 2
    assert traces(real_redis, ids) == [] and real_redis.hlen(delete.PENDING_KEY) == 0


@pytest.mark.skipif(not hasattr(Queue, "_enqueue_rate_limited_job"), reason="concurrency limits arrived in rq 3.0")
@pytest.mark.parametrize("how", ["selection", "empty"])
def test_deleting_a_job_under_a_concurrency_limit_frees_its_slot(real_redis: Redis, how: str) -> None:
    from rq.rate_limit import RateLimit, RateLimitRegistry  # type: ignore[import-not-found]

    queue = Queue("default", connection=real_redis)
    for i in range(3):
        queue.enqueue(len, [i], rate_limit=RateLimit("partner", 1))
    limit = RateLimitRegistry("partner", connection=real_redis)
    [running] = queue.job_ids
    assert limit.get_rate_limited_job_count() == 2
    if how == "selection":
        assert delete_jobs(real_redis, "default", "queued", [running]) == 1
    else:
        assert empty(real_redis, "default", "queued") == 1
    # as after RQ's own Job.delete: the slot is free and a held job took it, onto the queue
    [promoted] = queue.job_ids
    assert promoted != running and limit.get_allowed_job_ids() == [promoted]
    assert limit.get_rate_limited_job_count() == 1


def test_on_a_long_list_each_lrem_is_its_own_round_trip(real_redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis runs a pipeline's commands back to back: a batch of O(N) LREMs would hold it for all of them."""
    fill_queue(real_redis, 300)
    doomed = [Queue("default", connection=real_redis).enqueue("tests.sample_tasks.t_fail", i).id for i in range(3)]
    monkeypatch.setattr(delete, "SHORT_LIST", 100)
    sent: list[tuple[Any, ...]] = []
    lrem = real_redis.lrem
    monkeypatch.setattr(real_redis, "lrem", lambda *args: sent.append(args) or lrem(*args))
    assert delete_jobs(real_redis, "default", "queued", [*doomed, "not-there"]) == 3
    assert len(sent) == 4 and traces(real_redis, doomed) == []
