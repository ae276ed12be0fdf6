"""The cluster client under a hung slot owner (a read fails within the socket timeout, as on a plain Redis), a
WATCH during a migration, and a worker stopped after its slot moved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import cast

import pytest
import rq
from redis import Redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError, TimeoutError, WatchError
from redis.retry import Retry
from rqscope.monitor.cluster import cluster_client
from rqscope.tasks.rq_internals.keys import Keys

from tests import cluster as local_cluster
from tests.cluster import LocalCluster
from tests.helpers import REPO, rqscope_command, spawn, stop, wait_for
from tests.test_cluster import run_python

PREFIX = "{hung}"
SLOT = key_slot(PREFIX.encode())
TIMEOUT = 1.0
redis_cluster = local_cluster.redis_cluster


def test_a_hung_owner_costs_each_read_one_timeout_not_two(redis_cluster: LocalCluster) -> None:
    owner = redis_cluster.owner(SLOT)
    seed = next(p for p in redis_cluster.ports if p != owner)
    client = cluster_client(
        redis_cluster.url(seed),
        PREFIX,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )
    client.set(f"{PREFIX}:k", 1)
    process = redis_cluster.processes[redis_cluster.ports.index(owner)]
    process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing: a paused or partitioned node
    took = []
    try:
        for _ in range(2):  # under the cluster node timeout (5 s), so the cluster never marks it failed
            started = time.monotonic()
            try:
                client.get(f"{PREFIX}:k")
            except (ConnectionError, TimeoutError):
                pass
            took.append(time.monotonic() - started)
    finally:
        process.send_signal(signal.SIGCONT)
    # every read after the first also waits for CLUSTER SLOTS from the hung owner before timing out on it
    assert max(took) < TIMEOUT * 1.5, [round(t, 2) for t in took]
    assert client.get(f"{PREFIX}:k") == b"1"  # and it comes back with the node


def increment_as_rq_does(client: Redis, key: str, tries: int = 5) -> tuple[int, int]:
    """WATCH, read, MULTI/EXEC, the whole sent again on WatchError (RQ's dependency paths); (new value, tries)."""
    with client.pipeline() as pipe:
        for attempt in range(1, tries + 1):
            try:
                pipe.watch(key)
                value = int(cast(bytes, pipe.get(key))) + 1
                pipe.multi()
                pipe.set(key, value)
                pipe.execute()
                return value, attempt
            except WatchError:
                continue
    raise AssertionError(f"{tries} tries of the transaction all met WatchError")


def clients_with_a_touched_watch(cluster: LocalCluster, port: int) -> list[str]:
    """Clients of a node whose next EXEC fails because a key they WATCH changed (flag `d` of CLIENT LIST)."""
    return [c["addr"] for c in cluster.node(port).client_list() if "d" in c["flags"]]


def test_a_watch_that_meets_ask_is_a_watch_error_and_arms_no_connection(redis_cluster: LocalCluster) -> None:
    prefix = "{watch}"
    slot = key_slot(prefix.encode())
    src = redis_cluster.owner(slot)
    dst = next(p for p in redis_cluster.ports if p != src)
    client = cluster_client(redis_cluster.url(), prefix, socket_timeout=5)
    a, b = f"{prefix}:a", f"{prefix}:b"
    client.mset({a: 10, b: 20})
    redis_cluster.start_migration(slot, src, dst)
    try:
        redis_cluster.node(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", a, b)
        pipe = client.pipeline()
        started = time.monotonic()
        try:
            pipe.watch(a)  # the source answers ASK: `a` is on the importing node now
            raised = None
        except WatchError as exc:
            raised = exc
        took = time.monotonic() - started
        pipe.reset()
        # `a` changes (the client follows the ASK): a connection still watching it would abort its next EXEC
        assert client.incr(a) == 11
        assert clients_with_a_touched_watch(redis_cluster, dst) == []
        assert client.pipeline(transaction=True).incr(a).incr(b).execute() == [12, 21]  # ASKING, MULTI .. EXEC
        assert raised is not None, "the WATCH was sent to the importing node on a connection of its own"
        assert took < 1, "a WATCH that met ASK does not wait for the migration to end"
        assert not pipe.watching and pipe.connection is None
        with pytest.raises(AssertionError, match="met WatchError"):  # each retry meets it while the slot migrates
            increment_as_rq_does(client, a, tries=2)
    finally:
        redis_cluster.migrate_keys(slot, src, dst)
        redis_cluster.finish_migration(slot, src, dst)
    # after the migration, the retried transaction runs once, on the new owner
    assert increment_as_rq_does(client, a) == (13, 1)
    assert redis_cluster.node(dst).mget(a, b) == [b"13", b"21"]
    assert clients_with_a_touched_watch(redis_cluster, dst) == []


RQ3 = tuple(int(p) for p in rq.__version__.split(".")[:2]) >= (3, 0)

# enqueues one job on argv[2] recording to argv[3]; RQ reads RQ_KEY_PREFIX at import, so it runs in a subprocess
ENQUEUE = """
import sys
from rq import Queue
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], "{rq}", socket_timeout=10, socket_connect_timeout=2)
Queue(sys.argv[2], connection=redis).enqueue("tests.cluster.record_run", sys.argv[3])
"""
# RQ's shutdown command to every worker of the queue argv[2]: a PUBLISH, which the cluster relays to every node
SHUTDOWN = """
import sys
from rq import Queue, Worker
from rq.command import send_shutdown_command
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], "{rq}", socket_timeout=10, socket_connect_timeout=2)
for worker in Worker.all(queue=Queue(sys.argv[2], connection=redis)):
    send_shutdown_command(redis, worker.name)
"""


@pytest.mark.skipif(not RQ3, reason="RQ_KEY_PREFIX (one hash-tagged slot per installation) arrived in rq 3.0")
@pytest.mark.parametrize("stop_by", ["SIGTERM", "shutdown command"])
def test_a_worker_stopped_after_its_slot_moved_shuts_down_cleanly(
    redis_cluster: LocalCluster, tmp_path: Path, stop_by: str
) -> None:
    prefix, queue = "{rq}", f"stopping-{stop_by[:4]}"
    slot = key_slot(prefix.encode())
    src = redis_cluster.owner(slot)  # the slot moves in each run: to the next node
    dst = next(p for p in redis_cluster.ports if p != src)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RQ_KEY_PREFIX": prefix,
        "RQSCOPE_REDIS_URL": redis_cluster.url(),
        "RQSCOPE_TASK_MODULES": "tests.cluster",
        "RQSCOPE_PUBLISH_INTERVAL": "1",
        "RQSCOPE_LOG_LEVEL": "INFO",
    }
    record, log = tmp_path / "runs", tmp_path / "worker.log"

    def run(code: str) -> None:
        run_python(redis_cluster, code, redis_cluster.url(), queue, str(record), env=env)

    def runs() -> int:
        return len(record.read_text().splitlines()) if record.exists() else 0

    with log.open("wb") as out:
        worker = spawn(rqscope_command("worker", queue), env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: redis_cluster.node(src).scard(Keys(prefix).workers_of(queue)), timeout=60)
            run(ENQUEUE)
            wait_for(lambda: runs() == 1, timeout=60)  # subscribed, and its pubsub thread is reading
            redis_cluster.move_slot(slot, src, dst)
            run(ENQUEUE)
            wait_for(lambda: runs() == 2, timeout=60)  # the worker followed the slot: it dequeued from dst
            if stop_by == "SIGTERM":
                worker.send_signal(signal.SIGTERM)
            else:  # the worker's subscription stayed on the old owner, which the PUBLISH reaches too
                run(SHUTDOWN)
            worker.wait(30)
        finally:
            stop(worker)
    text = log.read_text(errors="replace")
    assert "unsubscribing from channel" in text, text[-3000:]  # the stop that reconnected a marked PubSub
    for sign in ("Traceback", "TypeError", "SETINFO", "MAINT_NOTIFICATIONS", "pubsub thread exiting"):
        assert sign not in text, text[-3000:]
    assert worker.returncode == 0, text[-3000:]
