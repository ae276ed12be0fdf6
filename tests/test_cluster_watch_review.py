"""Transactions and PubSub of the cluster client around a slot migration, on a real local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError, WatchError
from rqscope.monitor.cluster import cluster_client

from tests import cluster as local_cluster
from tests.cluster import LocalCluster
from tests.helpers import REPO, spawn, stop, wait_for
from tests.test_cluster import run_python

redis_cluster = local_cluster.redis_cluster


def setup(cluster: LocalCluster, prefix: str, **values: int) -> tuple[Redis, int, int, dict[str, str]]:
    slot = key_slot(prefix.encode())
    src = cluster.owner(slot)
    dst = next(p for p in cluster.ports if p != src)
    client = cluster_client(cluster.url(), prefix, socket_timeout=5)
    keys = {name: f"{prefix}:{name}" for name in values}
    client.mset({keys[name]: value for name, value in values.items()})
    return client, src, dst, keys


def touch_and_find_armed(cluster: LocalCluster, keys: list[str], port: int) -> list[str]:
    """Touch `keys` on their owner `port`; the clients of any node whose WATCH they now dirty (flag d)."""
    node = cluster.node(port)
    for key in keys:
        node.execute_command("ASKING")  # harmless when the node owns the slot
        node.append(key, "")  # a write that keeps the value, and touches every WATCH on it
    return [
        f"{p}:{c['addr']}:{c.get('cmd')}"
        for p in cluster.ports
        for c in cluster.node(p).client_list()
        if "d" in c["flags"]
    ]


def slot_keys_anywhere(cluster: LocalCluster, key: str) -> list[tuple[int, bytes | None]]:
    out = []
    for port in cluster.ports:
        replies = cluster.node(port).pipeline(transaction=False).execute_command("ASKING").get(key)
        value = replies.execute(raise_on_error=False)[1]
        if value is not None and not isinstance(value, Exception):
            out.append((port, value))
    return out


def test_watch_then_the_slot_moves_before_exec_applies_nothing(redis_cluster: LocalCluster) -> None:
    client, src, dst, k = setup(redis_cluster, "{rv1}", a=10, b=20)
    pipe = client.pipeline()
    pipe.watch(k["a"], k["b"])
    assert int(pipe.get(k["a"])) == 10
    pipe.multi()
    pipe.incr(k["a"]).incr(k["b"])
    redis_cluster.move_slot(key_slot(b"{rv1}"), src, dst)
    with pytest.raises(WatchError):
        pipe.execute()
    assert redis_cluster.node(dst).mget(k["a"], k["b"]) == [b"10", b"20"]
    assert pipe.connection is None and not pipe.watching
    assert touch_and_find_armed(redis_cluster, [k["a"], k["b"]], dst) == []
    # the retry runs once on the new owner
    pipe.watch(k["a"])
    pipe.multi()
    pipe.incr(k["a"]).incr(k["b"])
    assert pipe.execute() == [11, 21]
    assert redis_cluster.node(dst).mget(k["a"], k["b"]) == [b"11", b"21"]


def test_watch_of_a_missing_key_then_the_slot_moves_applies_nothing(redis_cluster: LocalCluster) -> None:
    """RQ watches keys that do not exist (a job's dependents): only the MOVED of EXEC's commands protects."""
    client, src, dst, k = setup(redis_cluster, "{rv2}", a=10)
    missing = "{rv2}:dependents"
    pipe = client.pipeline()
    pipe.watch(missing)
    assert pipe.smembers(missing) == set()
    pipe.multi()
    pipe.incr(k["a"])
    redis_cluster.move_slot(key_slot(b"{rv2}"), src, dst)
    with pytest.raises(WatchError):
        pipe.execute()
    assert slot_keys_anywhere(redis_cluster, k["a"]) == [(dst, b"10")]


def test_watch_during_a_migration_then_exec_after_it_ended(redis_cluster: LocalCluster) -> None:
    prefix = "{rv3}"
    client, src, dst, k = setup(redis_cluster, prefix, a=10, b=20)
    slot = key_slot(prefix.encode())
    redis_cluster.start_migration(slot, src, dst)
    try:
        pipe = client.pipeline()
        pipe.watch(k["a"], k["b"])  # both still on the source: no ASK
        assert pipe.watching
        pipe.multi()
        pipe.incr(k["a"]).incr(k["b"])
    finally:
        redis_cluster.migrate_keys(slot, src, dst)
        redis_cluster.finish_migration(slot, src, dst)
    with pytest.raises(WatchError):
        pipe.execute()
    assert redis_cluster.node(dst).mget(k["a"], k["b"]) == [b"10", b"20"]
    assert touch_and_find_armed(redis_cluster, [k["a"], k["b"]], dst) == []


def test_watch_of_several_keys_split_by_a_migration_is_refused_then_applies_once(redis_cluster: LocalCluster) -> None:
    prefix = "{rv4}"
    client, src, dst, k = setup(redis_cluster, prefix, a=10, b=20, c=30)
    quick = cluster_client(redis_cluster.url(), prefix, socket_timeout=5, follow_seconds=0.3)
    slot = key_slot(prefix.encode())
    redis_cluster.start_migration(slot, src, dst)
    try:
        redis_cluster.node(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", k["b"])
        pipe = quick.pipeline()
        # split keys: the source answers TRYAGAIN, sent again on the pipeline's connection for the budget
        with pytest.raises(ConnectionError) as caught:
            pipe.watch(k["a"], k["b"], k["c"])
        refused = caught.value
        pipe.reset()
        assert not pipe.watching and pipe.connection is None
        assert touch_and_find_armed(redis_cluster, [k["b"]], dst) == []
        assert touch_and_find_armed(redis_cluster, [k["a"], k["c"]], src) == []
        # a transaction without WATCH, all keys on the source: runs there, once
        assert client.pipeline().incr(k["a"]).incr(k["c"]).execute() == [11, 31]
        # all keys on the importing node: ASKING, once
        assert client.pipeline().incr(k["b"]).execute() == [21]
        # a new key (the source answers ASK for it): created once, on the importing node
        assert client.pipeline().set(f"{prefix}:new", 1).incr(f"{prefix}:new").execute() == [True, 2]
        assert slot_keys_anywhere(redis_cluster, f"{prefix}:new") == [(dst, b"2")]
        # all watched keys moved: ASK, a WatchError at once
        redis_cluster.node(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", k["a"], k["c"])
        started = time.monotonic()
        with pytest.raises(WatchError):
            pipe.watch(k["a"], k["b"], k["c"])
        assert time.monotonic() - started < 0.5
        assert touch_and_find_armed(redis_cluster, [k["a"], k["b"], k["c"]], dst) == []
    finally:
        redis_cluster.migrate_keys(slot, src, dst)
        redis_cluster.finish_migration(slot, src, dst)
    assert [slot_keys_anywhere(redis_cluster, k[n]) for n in "abc"] == [[(dst, b"11")], [(dst, b"21")], [(dst, b"31")]]
    print(f"\nWATCH of split keys: {type(refused).__name__}: {refused}")


def test_pubsub_subscribed_before_a_move_hears_after_it_and_gives_back_a_clean_connection(
    redis_cluster: LocalCluster,
) -> None:
    prefix = "{rv5}"
    client, src, dst, _ = setup(redis_cluster, prefix, a=1)
    pool: Any = client.connection_pool
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("rv5-channel")
    connection = pubsub.connection
    assert connection is not None and connection.subscriber and connection.port == src
    redis_cluster.move_slot(key_slot(prefix.encode()), src, dst)
    assert client.get(f"{prefix}:a") == b"1"  # the client follows (MOVED): the pool marks in-use connections
    assert not connection.should_reconnect() and connection.port == src
    client.publish("rv5-channel", "after")  # published on dst (which counts its own subscribers only), relayed
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
    assert message is not None and message["data"] == b"after"
    pubsub.close()
    assert not connection.subscriber
    # every connection of the pool now serves commands on the new owner
    ports = set()
    held = [pool.get_connection() for _ in range(len(pool._available_connections))]
    for conn in held:
        assert not conn.subscriber
        conn.send_command("CLUSTER", "MYID")
        conn.read_response()
        ports.add(conn.port)
        pool.release(conn)
    assert ports == {dst}


def test_pubsub_thread_keeps_reading_across_two_moves_and_stops_cleanly(redis_cluster: LocalCluster) -> None:
    prefix = "{rv6}"
    client, src, dst, _ = setup(redis_cluster, prefix, a=1)
    got: list[bytes] = []
    errors: list[BaseException] = []
    pubsub = client.pubsub()
    pubsub.subscribe(**{"rv6-channel": lambda m: got.append(m["data"])})
    thread = pubsub.run_in_thread(sleep_time=0.2, daemon=True, exception_handler=lambda e, p, t: errors.append(e))
    try:
        slot = key_slot(prefix.encode())
        third = next(p for p in redis_cluster.ports if p not in (src, dst))
        for i, (a, b) in enumerate([(src, dst), (dst, third)]):
            redis_cluster.move_slot(slot, a, b)
            assert client.get(f"{prefix}:a") == b"1"
            client.publish("rv6-channel", f"m{i}")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the main thread unsubscribes while the pubsub thread reads, as RQ's worker does
        pubsub.unsubscribe()
    finally:
        thread.stop()
        thread.join(2)
        pubsub.close()
    assert got == [b"m0", b"m1"] and errors == [] and not thread.is_alive()
    assert threading.active_count() >= 1


TASKS = """
import os, time
from rq import get_current_job

def slow_record(path, seconds):
    job_id = get_current_job().id
    def note(what):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{what} {job_id} {os.getpid()} {time.time():.3f}\\n".encode())
        finally:
            os.close(fd)
    note("start")
    time.sleep(seconds)
    note("end")
    return job_id
"""

WORKER = """
import sys
from rq import Queue, Worker
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], "{rq}", socket_timeout=10, socket_connect_timeout=2)
Worker([Queue("held", connection=redis)], connection=redis).work(burst=False, logging_level="INFO")
"""

ENQUEUE = """
import json, sys
from rq import Queue
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], "{rq}", socket_timeout=10, socket_connect_timeout=2)
queue = Queue("held", connection=redis)
jobs = [queue.enqueue("review_tasks.slow_record", sys.argv[2], float(sys.argv[3])) for _ in range(int(sys.argv[4]))]
print(json.dumps([job.id for job in jobs]))
"""

STATUSES = """
import json, sys
from rq.job import Job
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], "{rq}")
ids = json.loads(sys.argv[2])
print(json.dumps({job.id: job.get_status(refresh=False) for job in Job.fetch_many(ids, connection=redis)}))
"""


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def test_a_worker_finishing_jobs_during_a_held_migration_waits_quietly_and_finishes_each_once(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    prefix = "{rq}"
    slot = key_slot(prefix.encode())
    src = redis_cluster.owner(slot)
    dst = next(p for p in redis_cluster.ports if p != src)
    (tmp_path / "review_tasks.py").write_text(TASKS)
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{tmp_path}", "RQ_KEY_PREFIX": prefix}
    record, log = tmp_path / "runs", tmp_path / "worker.log"

    def python(code: str, *args: str) -> str:
        return run_python(redis_cluster, code, redis_cluster.url(), *args, env=env)

    def lines(what: str) -> list[list[str]]:
        text = record.read_text() if record.exists() else ""
        return [line.split() for line in text.splitlines() if line.startswith(what + " ")]

    hold = 4.0
    with log.open("wb") as out:
        worker = spawn([sys.executable, "-c", WORKER, redis_cluster.url()], env, stdout=out, stderr=subprocess.STDOUT)
        try:
            ids = json.loads(python(ENQUEUE, str(record), "1.0", "3"))
            wait_for(lambda: lines("start"), timeout=60)
            redis_cluster.start_migration(slot, src, dst)
            migrating = True
            try:
                wait_for(lambda: lines("end"), timeout=30)  # the first job ran; its horse now commits
                time.sleep(0.3)
                horses = children(worker.pid)
                assert horses, "the horse is gone: the success commit did not wait for the migration"
                horse = horses[0]
                before_cpu, before_conn = (
                    cpu_seconds(horse),
                    redis_cluster.node(src).info("stats")["total_connections_received"],
                )
                time.sleep(hold)
                still = horse in children(worker.pid)
                after_cpu = cpu_seconds(horse) if still else float("nan")
                after_conn = redis_cluster.node(src).info("stats")["total_connections_received"]
                redis_cluster.migrate_keys(slot, src, dst)
                redis_cluster.finish_migration(slot, src, dst)
                migrating = False
            finally:
                if migrating:
                    redis_cluster.migrate_keys(slot, src, dst)
                    redis_cluster.finish_migration(slot, src, dst)
            wait_for(lambda: len(lines("end")) == 3, timeout=90)
            wait_for(lambda: set(json.loads(python(STATUSES, json.dumps(ids))).values()) == {"finished"}, timeout=60)
        finally:
            stop(worker)
    ran = [line[1] for line in lines("end")]
    assert sorted(ran) == sorted(ids), ran
    assert sorted(line[1] for line in lines("start")) == sorted(ids)
    busy = (after_cpu - before_cpu) / hold
    reconnects = (after_conn - before_conn) / hold
    print(
        f"\nheld migration {hold:.0f} s: horse alive {still}, CPU {busy:.1%}, "
        f"connections to the source {reconnects:.0f}/s"
    )
    assert still, log.read_text(errors="replace")[-3000:]
    assert busy < 0.25, f"the horse spun: {busy:.0%} of a core"
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


# rqscope's own enqueue (POST /api/tasks) of one run of record_run, with or without a job id; its outcome as JSON
RQSCOPE_ENQUEUE = """
import json, sys, time
import tests.cluster
from rqscope.monitor.cluster import cluster_client
from rqscope.tasks.registry import REGISTRY, enqueue_task
redis = cluster_client(sys.argv[1], "{rq}", socket_timeout=10, socket_connect_timeout=2)
spec = REGISTRY.by_func_path("tests.cluster.record_run")
started = time.monotonic()
try:
    job, created = enqueue_task(spec, ["/dev/null"], {}, connection=redis, job_id=sys.argv[2] or None)
    out = {"created": created}
except Exception as exc:
    out = {"error": f"{type(exc).__name__}: {exc}"}
out["took"] = round(time.monotonic() - started, 2)
print(json.dumps(out))
"""


def test_an_enqueue_with_a_job_id_during_a_short_migration_is_not_a_conflict(
    redis_cluster: LocalCluster,
) -> None:
    prefix = "{rq}"
    slot = key_slot(prefix.encode())
    env = {**os.environ, "PYTHONPATH": str(REPO), "RQ_KEY_PREFIX": prefix, "RQSCOPE_TASK_MODULES": "tests.cluster"}
    outcomes = {}
    for job_id in ("", f"review-{time.time_ns()}"):
        src = redis_cluster.owner(slot)
        dst = next(p for p in redis_cluster.ports if p != src)
        redis_cluster.start_migration(slot, src, dst)
        try:
            process = spawn(
                [sys.executable, "-c", RQSCOPE_ENQUEUE, redis_cluster.url(), job_id],
                env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            time.sleep(1.0)  # a short migration: well within the follow budget (10 s)
        finally:
            redis_cluster.migrate_keys(slot, src, dst)
            redis_cluster.finish_migration(slot, src, dst)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()[-3000:]
        outcomes["with job_id" if job_id else "without"] = json.loads(out)
    print(f"\nenqueue during a 1 s migration: {outcomes}")
    assert outcomes["without"].get("created") is True, outcomes
    assert outcomes["with job_id"].get("created") is True, outcomes
