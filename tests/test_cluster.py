"""RQ on a real local Redis Cluster through rqscope's slot-following client (monitor.cluster).

RQ reads RQ_KEY_PREFIX once, at import, and this process imported it with the default prefix: every
step that runs RQ or reads RQ's keys runs in a subprocess started with RQ_KEY_PREFIX={rq}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rq
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError
from redis.retry import Retry
from rqscope.monitor.cluster import (
    FOLLOW_SECONDS,
    ClusterIsDownError,
    NoSlotOwnerError,
    SlotMovedError,
    check_cluster_url,
    cluster_client,
    prefix_slot,
)
from rqscope.monitor.embedded import free_port
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.redis_client import make_client
from rqscope.monitor.settings import from_env
from rqscope.tasks.rq_internals.keys import Keys

from tests import cluster as local_cluster
from tests.cluster import LocalCluster
from tests.helpers import REPO, rqscope_command, spawn, stop, wait_for

RQ3 = tuple(int(p) for p in rq.__version__.split(".")[:2]) >= (3, 0)
pytestmark = pytest.mark.skipif(
    not RQ3, reason="RQ_KEY_PREFIX (one hash-tagged slot per installation) arrived in rq 3.0"
)

PREFIX = "{rq}"
SLOT = key_slot(PREFIX.encode())
redis_cluster = local_cluster.redis_cluster  # the module-scoped fixture: one cluster for this file

STOCK_WORKER = """
import json, sys
from rq import Queue, Worker
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], "{rq}", socket_timeout=10, socket_connect_timeout=2)
queue = Queue("default", connection=redis)
ids = [queue.enqueue("tests.cluster.record_run", sys.argv[2]).id for _ in range(int(sys.argv[3]))]
if sys.argv[4] == "work":
    Worker([queue], connection=redis).work(burst=True, logging_level="WARNING")
print(json.dumps(ids))
"""

# enqueues job-0 .. job-N-1, each retried with its id until it is in: a redirected enqueue applied nothing
# enqueues <queue>-0 .. <queue>-N-1 on the queue named in argv[5] (a client with the socket timeout in argv[6]),
# each retried with its id until it is in: a refused enqueue applied nothing
PRODUCER = """
import json, sys, time
from redis.exceptions import ConnectionError
from rq import Queue
from rqscope.monitor.cluster import cluster_client
url, record, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
name, timeout = sys.argv[5], float(sys.argv[6])
queue = Queue(name, connection=cluster_client(url, "{rq}", socket_timeout=timeout, socket_connect_timeout=2))
failures, slowest = [], 0.0
for i in range(count):
    while True:
        started = time.monotonic()
        try:
            queue.enqueue("tests.cluster.record_run", record, job_id=f"{name}-{i}")
            slowest = max(slowest, time.monotonic() - started)
            break
        except ConnectionError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)
    time.sleep(pause)
print(json.dumps({"failures": failures, "slowest": slowest}), flush=True)
"""

# the sidecar's read: one client from the settings, a SnapshotCache read on every poll
READER = """
import json, os, sys, time
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.redis_client import make_client
from rqscope.monitor.settings import from_env
from rqscope.tasks.rq_internals.keys import Keys
client = make_client(from_env(os.environ))
cache = SnapshotCache(client, ttl=0)
while True:
    started = time.time()
    snapshot = cache.get()
    queue = snapshot.queue(sys.argv[2])
    runs = sum(s.outcomes.get("success", 0) for (_, name), s in snapshot.tasks.items() if name == sys.argv[2])
    print(json.dumps({
        "at": started, "took": time.time() - started, "up": snapshot.redis.up, "error": snapshot.redis.error,
        "port": client.connection_pool.connection_kwargs["port"], "runs": runs,
        "finished": queue.counts["finished"] if queue else None,
    }), flush=True)
    time.sleep(float(sys.argv[1]))
"""

STATUSES = """
import json, sys
from rq.job import Job
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], "{rq}")
ids = json.loads(sys.stdin.read())
print(json.dumps({job.id: job.get_status(refresh=False) for job in Job.fetch_many(ids, connection=redis)}))
"""


def env_for(cluster: LocalCluster, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RQ_KEY_PREFIX": PREFIX,
        "RQSCOPE_REDIS_URL": cluster.url(),
        "RQSCOPE_TASK_MODULES": "tests.cluster",
        "RQSCOPE_PUBLISH_INTERVAL": "1",
        "RQSCOPE_LOG_LEVEL": "WARNING",
        **extra,
    }


def run_python(
    cluster: LocalCluster, code: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> str:
    """`code`'s output, run by this interpreter in a process of its own (env_for(cluster) unless `env`)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env if env is not None else env_for(cluster),
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_times(record: Path) -> list[tuple[str, float]]:
    """(job id, when it ran) of every run recorded by tests.cluster.record_run, in the order they ran."""
    lines = record.read_text().splitlines() if record.exists() else []
    return [(job_id, float(at)) for job_id, at in (line.split() for line in lines if line.strip())]


def runs_recorded(record: Path) -> list[str]:
    return [job_id for job_id, _ in run_times(record)]


def statuses(cluster: LocalCluster, ids: list[str]) -> dict[str, str]:
    return json.loads(run_python(cluster, STATUSES, cluster.url(), stdin=json.dumps(ids)))


def other_node(cluster: LocalCluster, *not_these: int) -> int:
    return next(p for p in cluster.ports if p not in not_these)


def test_the_client_talks_to_the_node_that_owns_each_prefix(redis_cluster: LocalCluster) -> None:
    owners = {prefix: redis_cluster.owner(key_slot(prefix.encode())) for prefix in ("{rq}", "{billing}")}
    assert owners["{rq}"] != owners["{billing}"], "the two hash tags must land on different nodes"
    for prefix, owner in owners.items():
        seed = other_node(redis_cluster, owner)  # the seed is never the owner: the client has to look
        client = cluster_client(redis_cluster.url(seed), prefix, socket_timeout=5, client_name="rqscope-test")
        assert client.execute_command("CLUSTER", "MYID").decode() == redis_cluster.node_id(owner)
        assert client.client_getname() == "rqscope-test"
        client.set(f"{prefix}:probe", prefix)
        assert redis_cluster.node(owner).get(f"{prefix}:probe") == prefix.encode()
        assert client.connection_pool.connection_kwargs["port"] == owner


def test_settings_refuse_what_cannot_work_on_a_cluster(redis_cluster: LocalCluster) -> None:
    assert prefix_slot("{rq}") == prefix_slot("{rq}:anything") == SLOT
    assert prefix_slot("rq") is None and prefix_slot("{}rq") is None and prefix_slot("a{b") is None
    for bad, why in [
        ("redis+cluster://127.0.0.1:7000/2", "database other than 0"),
        ("redis+cluster:///nohost", "needs a seed node"),
        ("redis+cluster://127.0.0.1:port", "not a number"),
    ]:
        with pytest.raises(SettingsError, match=why) as caught:
            check_cluster_url("RQSCOPE_REDIS_URL", bad)
        assert str(caught.value).startswith("RQSCOPE_REDIS_URL=") and "\n" not in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        check_cluster_url("RQSCOPE_REDIS_URL", "redis+cluster://user:s3cret@127.0.0.1:1/9")
    assert "s3cret" not in str(caught.value)
    # this process runs RQ's default prefix `rq`, which has no hash tag: its keys would spread over slots
    with pytest.raises(SettingsError, match="needs a hash tag"):
        make_client(from_env({"RQSCOPE_REDIS_URL": redis_cluster.url()}))


def test_rq_and_a_stock_forking_worker_run_jobs_on_the_cluster(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    owner = redis_cluster.owner(SLOT)
    record = tmp_path / "runs"
    started = time.monotonic()
    ids = json.loads(run_python(redis_cluster, STOCK_WORKER, redis_cluster.url(), str(record), "5", "work"))
    assert sorted(runs_recorded(record)) == sorted(ids)
    assert set(statuses(redis_cluster, ids).values()) == {"finished"}
    for port in redis_cluster.ports:  # every key of the installation lives on the slot's owner
        assert any(key.startswith(b"{rq}:") for key in redis_cluster.keys_on(port)) == (port == owner)
    assert time.monotonic() - started < 60


def test_rqscope_worker_runs_jobs_on_the_cluster(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    record = tmp_path / "runs"
    ids = json.loads(run_python(redis_cluster, STOCK_WORKER, redis_cluster.url(), str(record), "4", "enqueue"))
    done = subprocess.run(
        rqscope_command("worker", "default", "--burst"),
        env=env_for(redis_cluster),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(runs_recorded(record)) == sorted(ids)
    assert set(statuses(redis_cluster, ids).values()) == {"finished"}


def test_a_redirected_transaction_or_script_applies_nothing(redis_cluster: LocalCluster) -> None:
    prefix = "{tx}"
    slot = key_slot(prefix.encode())
    src = redis_cluster.owner(slot)
    dst = other_node(redis_cluster, src)
    client = cluster_client(redis_cluster.url(), prefix, socket_timeout=5, follow_seconds=0.3)
    raising = cluster_client(redis_cluster.url(), prefix, socket_timeout=5, follow_seconds=0)
    a, b = f"{prefix}:a", f"{prefix}:b"
    client.mset({a: 10, b: 20})
    assert raising.get(a) == b"10"  # both clients now point at src

    # mid-migration: `a` already moved (ASK), `b` still on the source, which would run it alone
    redis_cluster.start_migration(slot, src, dst)
    redis_cluster.node(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", a)
    started = time.monotonic()
    with pytest.raises(SlotMovedError):  # sent again for follow_seconds, every time refused whole
        client.pipeline(transaction=True).incr(b).incr(a).incr(b).execute()
    assert 0.3 <= time.monotonic() - started < 2
    assert redis_cluster.node(src).get(b) == b"20"  # EXEC aborted: not even the commands before the redirect

    # the slot is gone: a client that does not follow gets the error, and nothing ran
    redis_cluster.migrate_keys(slot, src, dst)
    redis_cluster.finish_migration(slot, src, dst)
    with pytest.raises(SlotMovedError):
        raising.pipeline(transaction=True).incr(a).incr(b).execute()
    assert redis_cluster.node(dst).mget(a, b) == [b"10", b"20"]
    assert raising.pipeline(transaction=True).incr(a).incr(b).execute() == [11, 21]  # the next try: the new owner
    # one that follows sends the refused transaction again, once, to the new owner
    assert client.connection_pool.router.owner == ("127.0.0.1", src)
    assert client.pipeline(transaction=True).incr(a).incr(b).execute() == [12, 22]
    assert redis_cluster.node(dst).mget(a, b) == [b"12", b"22"]

    # a pipeline without MULTI that writes is never sent again: it raises, and here ran nothing
    back = other_node(redis_cluster, dst)
    redis_cluster.move_slot(slot, dst, back)
    with pytest.raises(SlotMovedError):
        client.pipeline(transaction=False).incr(a).incr(b).execute()
    assert redis_cluster.node(back).mget(a, b) == [b"12", b"22"]

    # a script is refused before it runs, then followed
    redis_cluster.move_slot(slot, back, dst)
    script = client.register_script("redis.call('INCR', KEYS[1]) return redis.call('INCR', KEYS[2])")
    assert script(keys=[a, b]) == 23 and redis_cluster.node(dst).mget(a, b) == [b"13", b"23"]
    assert client.connection_pool.router.moves == 3
    assert {a.encode(), b.encode()}.isdisjoint([*redis_cluster.keys_on(src), *redis_cluster.keys_on(back)])


# A worker that ran no job for this long while jobs wait is stuck, not slow: a run takes well under a second even
# with six CPU-burning processes on two cores (0.44 s at most between runs, measured)
STALLED_SECONDS = 30.0
TRAFFIC_SECONDS = 240.0  # the most the traffic phase of a test may take, however slowly it progresses
RESHARD_SECONDS = 4.0  # a long reshard: twice the client's old 2 s budget, well within FOLLOW_SECONDS (10 s)


def duplicates_and_missing(ran: list[str], ids: list[str]) -> str:
    twice = sorted({job_id for job_id in ran if ran.count(job_id) > 1})
    missing = sorted(set(ids) - set(ran))
    return f"ran more than once {twice[:10]}, never ran {missing[:10]} ({len(missing)})"


def wait_for_runs(record: Path, target: int, deadline: float, left_behind: Callable[[], str]) -> float:
    """Wait until `target` runs are recorded; the longest wait between two runs, in seconds.

    Fails when no run was added for STALLED_SECONDS, or at `deadline` (time.monotonic()), with what was left.
    """
    started = last = time.monotonic()
    runs, longest = len(runs_recorded(record)), 0.0
    while runs < target:
        time.sleep(0.05)
        now, seen = time.monotonic(), len(runs_recorded(record))
        if seen != runs:
            runs, longest, last = seen, max(longest, now - last), now
        elif now - last > STALLED_SECONDS or now > deadline:
            raise AssertionError(
                f"{runs} of {target} runs after {now - started:.1f} s; none in the last {now - last:.1f} s "
                f"(longest wait between runs before that {longest:.1f} s)\n{left_behind()}"
            )
    return longest


def left_behind(
    cluster: LocalCluster,
    queue: str,
    record: Path,
    ids: list[str],
    processes: dict[str, subprocess.Popen[bytes]],
    log: Path,
    polls: Path | None = None,
) -> str:
    """What a test under traffic left: its processes, the runs, the queue on the cluster, the reader, the log."""
    ran = runs_recorded(record)
    alive = {name: "running" if p.poll() is None else f"exited {p.returncode}" for name, p in processes.items()}
    return "\n".join(
        [
            f"processes: {alive}",
            f"{len(ran)} runs; {duplicates_and_missing(ran, ids)}",
            cluster.describe(PREFIX, queue),
            f"last reader polls: {_read_lines(polls)[-2:] if polls else None}",
            f"worker log (tail):\n{_tail(log)}",
        ]
    )


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The reader's polls (anything else it printed, a warning or a traceback, is not a poll)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def test_a_slot_move_under_traffic_loses_nothing_and_the_reader_fails_at_most_one_poll(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    count, poll = 150, 0.25
    src = redis_cluster.owner(SLOT)
    dst = other_node(redis_cluster, src)
    record, polls, worker_log = tmp_path / "runs", tmp_path / "polls", tmp_path / "worker.log"
    ids = [f"moving-{i}" for i in range(count)]
    env = env_for(redis_cluster)
    with polls.open("wb") as polls_out, worker_log.open("wb") as worker_out:
        worker = spawn(rqscope_command("worker", "moving"), env, stdout=worker_out, stderr=subprocess.STDOUT)
        reader = spawn(
            [sys.executable, "-c", READER, str(poll), "moving"], env, stdout=polls_out, stderr=subprocess.STDOUT
        )
        producer = spawn(
            [sys.executable, "-c", PRODUCER, redis_cluster.url(), str(record), str(count), "0.02", "moving", "5"],
            env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        processes = {"worker": worker, "reader": reader, "producer": producer}

        def state() -> str:
            return left_behind(redis_cluster, "moving", record, ids, processes, worker_log, polls)

        deadline = time.monotonic() + TRAFFIC_SECONDS
        try:
            wait_for_runs(record, count // 3, deadline, state)
            move_started = time.time()
            moved_keys = redis_cluster.move_slot(SLOT, src, dst)
            move_done = time.time()
            try:
                out, err = producer.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the producer did not finish its {count} enqueues\n{state()}") from None
            assert producer.returncode == 0, err.decode()[-3000:]
            longest_wait = wait_for_runs(record, count, deadline, state)
            while not any(p["finished"] == count for p in _read_lines(polls)[-3:]):
                assert time.monotonic() < deadline, f"the reader never counted {count} finished\n{state()}"
                time.sleep(0.05)
        finally:
            for process in (producer, reader, worker):
                stop(process)
    ran = runs_recorded(record)
    assert sorted(ran) == sorted(ids), f"every job ran exactly once: {duplicates_and_missing(ran, ids)}"
    assert statuses(redis_cluster, ids) == dict.fromkeys(ids, "finished")
    assert redis_cluster.owner(SLOT) == dst and moved_keys > count

    seen = _read_lines(polls)
    failed_during_move = [p for p in seen if not p["up"] and move_started - poll <= p["at"] <= move_done]
    failed_after = [p for p in seen if not p["up"] and p["at"] > move_done]
    assert not [p for p in seen if not p["up"] and p["at"] < move_started - poll], "no failure before the move"
    assert len(failed_after) <= 1, failed_after
    first_good = next(p for p in seen if p["up"] and p["at"] > move_done)
    assert first_good["port"] == dst
    assert all(p["up"] for p in seen if p["at"] > first_good["at"]), "the reader keeps reading from the new owner"
    assert seen[-1]["runs"] == count  # rqscope's run counts moved with the slot (they share its hash tag)
    last_run = max(at for _, at in run_times(record))
    print(
        f"\nslot move: {moved_keys} keys in {move_done - move_started:.3f} s; reader polls failed "
        f"during the move {len(failed_during_move)}, after it {len(failed_after)}; first good poll "
        f"{first_good['at'] - move_done:.3f} s after the move; last run {last_run - move_done:.1f} s after it, "
        f"longest wait between runs after it {longest_wait:.2f} s; producer retries {json.loads(out)['failures']}"
    )


def importing_mget(cluster: LocalCluster, port: int, *keys: str) -> list[Any]:
    """MGET on a node importing the keys' slot, which answers only after ASKING on the same connection."""
    return cluster.node(port).pipeline(transaction=False).execute_command("ASKING").mget(*keys).execute()[1]


def test_a_migrating_slot_is_followed_by_asking_the_importing_node(redis_cluster: LocalCluster) -> None:
    prefix = "{ask}"
    slot = key_slot(prefix.encode())
    src = redis_cluster.owner(slot)
    dst = other_node(redis_cluster, src)
    client = cluster_client(redis_cluster.url(), prefix, socket_timeout=5)
    a, b, c = (f"{prefix}:{name}" for name in "abc")
    client.mset({a: 10, b: 20, c: 30})
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    assert script(keys=[c]) == 31  # loaded on the source only

    # mid-migration, for longer than any budget: a, b and c have moved, the rest of the slot has not
    redis_cluster.start_migration(slot, src, dst)
    try:
        redis_cluster.node(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", a, b, c)
        started = time.monotonic()
        assert client.get(a) == b"10"  # ASK, then ASKING + GET on the importing node
        assert client.set(f"{prefix}:new", "n") and importing_mget(redis_cluster, dst, f"{prefix}:new") == [b"n"]
        assert client.pipeline(transaction=True).incr(a).incr(b).execute() == [11, 21]  # ASKING, MULTI .. EXEC
        assert script(keys=[c]) == 32  # the importing node is given the script it lacked
        assert client.pipeline(transaction=False).get(b).get(f"{prefix}:new").get(f"{prefix}:none").execute() == [
            b"21",
            b"n",
            None,
        ]
        assert time.monotonic() - started < 1, "nothing waited for the migration to end"
        assert importing_mget(redis_cluster, dst, a, b, c) == [b"11", b"21", b"32"]
        assert not {a.encode(), b.encode(), c.encode()} & set(redis_cluster.keys_on(src))
        assert client.connection_pool.router.owner == ("127.0.0.1", src)  # the slot is still the source's
    finally:
        redis_cluster.migrate_keys(slot, src, dst)
        redis_cluster.finish_migration(slot, src, dst)
    assert client.get(a) == b"11" and client.connection_pool.router.owner == ("127.0.0.1", dst)


def test_a_long_reshard_under_traffic_runs_every_job_once_and_the_producer_sees_no_error(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    count, padding = 120, 8000
    ids = [f"resharded-{i}" for i in range(count)]
    src = redis_cluster.owner(SLOT)
    dst = other_node(redis_cluster, src)
    node = redis_cluster.node(src)
    pad = node.pipeline(transaction=False)
    for i in range(padding):
        pad.set(f"{{rq}}:pad:{i}", "x" * 100)
    pad.execute()
    record, worker_log = tmp_path / "runs", tmp_path / "worker.log"
    env = env_for(redis_cluster)
    with worker_log.open("wb") as worker_out:
        worker = spawn(rqscope_command("worker", "resharded"), env, stdout=worker_out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TRAFFIC_SECONDS
        # the producer starts once the worker is up, and enqueues for longer than the reshard takes (however
        # slow the machine), so the reshard runs under its traffic
        wait_for(lambda: node.scard(Keys(PREFIX).workers_of("resharded")), timeout=60)
        producer = spawn(  # its socket timeout (10 s) lets it follow for the whole budget
            [sys.executable, "-c", PRODUCER, redis_cluster.url(), str(record), str(count), "0.05", "resharded", "10"],
            env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        processes = {"worker": worker, "producer": producer}

        def state() -> str:
            return left_behind(redis_cluster, "resharded", record, ids, processes, worker_log)

        try:
            wait_for_runs(record, 10, deadline, state)
            move_started = time.monotonic()
            moved = redis_cluster.reshard(SLOT, src, dst, RESHARD_SECONDS)
            took = time.monotonic() - move_started
            under_traffic = producer.poll() is None
            out, err = producer.communicate(timeout=120)
            assert producer.returncode == 0, err.decode()[-3000:]
            wait_for_runs(record, count, deadline, state)
        finally:
            for process in (producer, worker):
                stop(process)
    produced = json.loads(out)
    # the reshard is paced to RESHARD_SECONDS: longer than the old 2 s budget, shorter than the producer's
    assert under_traffic, "the producer had finished before the reshard did"
    assert 2 < took < FOLLOW_SECONDS, f"the reshard took {took:.1f} s: it proves nothing unless 2 s < it < budget"
    assert produced["failures"] == [], f"the reshard took {took:.1f} s"
    ran = runs_recorded(record)
    assert sorted(ran) == sorted(ids), f"every job ran exactly once: {duplicates_and_missing(ran, ids)}"
    assert statuses(redis_cluster, ids) == dict.fromkeys(ids, "finished")
    assert redis_cluster.owner(SLOT) == dst and moved > padding
    print(f"\nreshard: {moved} keys in {took:.1f} s; the slowest enqueue waited {produced['slowest']:.1f} s")


def test_clusterdown_fails_at_once(redis_cluster: LocalCluster) -> None:
    prefix = "{down}"
    slot = key_slot(prefix.encode())
    owner = redis_cluster.owner(slot)
    client = cluster_client(redis_cluster.url(), prefix, socket_timeout=5)
    client.set(f"{prefix}:k", 1)
    for port in redis_cluster.ports:
        redis_cluster.node(port).execute_command("CLUSTER", "DELSLOTS", slot)
    try:
        started = time.monotonic()
        with pytest.raises(ClusterIsDownError, match="CLUSTERDOWN") as caught:
            client.get(f"{prefix}:k")
        assert isinstance(caught.value, ConnectionError) and time.monotonic() - started < 1
    finally:
        redis_cluster.node(owner).execute_command("CLUSTER", "ADDSLOTS", slot)
        redis_cluster.wait_settled()
    assert client.get(f"{prefix}:k") == b"1"


def test_retries_are_never_given_to_a_write_pipeline_that_partly_ran(redis_cluster: LocalCluster) -> None:
    prefix = "{retry}"
    slot = key_slot(prefix.encode())
    src = redis_cluster.owner(slot)
    dst = other_node(redis_cluster, src)
    client = cluster_client(redis_cluster.url(), prefix, socket_timeout=5, retry=Retry(NoBackoff(), 3))
    a, b = f"{prefix}:a", f"{prefix}:b"
    client.mset({a: 10, b: 20})
    redis_cluster.start_migration(slot, src, dst)
    try:
        redis_cluster.node(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", b)
        with pytest.raises(ConnectionError):  # `a` ran on the source, `b` was sent elsewhere (ASK)
            client.pipeline(transaction=False).incr(a).incr(b).execute()
        assert redis_cluster.node(src).get(a) == b"11", "the pipeline was sent once, not four times"
    finally:
        redis_cluster.migrate_keys(slot, src, dst)
        redis_cluster.finish_migration(slot, src, dst)


def test_a_seed_that_is_down_is_named(redis_cluster: LocalCluster) -> None:
    port = free_port()
    client = cluster_client(f"redis+cluster://127.0.0.1:{port}", "{rq}", socket_timeout=1, socket_connect_timeout=1)
    with pytest.raises(NoSlotOwnerError) as caught:
        client.get("{rq}:k")
    assert f"seed 127.0.0.1:{port}" in str(caught.value) and "learnt from the seed" in str(caught.value)


def test_a_password_or_a_bad_ipv6_host_in_the_url_is_one_masked_line() -> None:
    for url in ("redis+cluster://127.0.0.1:1/9?password=s3cret", "redis+cluster://:s3cret@127.0.0.1:1/9"):
        with pytest.raises(SettingsError, match="database other than 0") as caught:
            check_cluster_url("RQSCOPE_REDIS_URL", url)
        assert "s3cret" not in str(caught.value)
    for url in ("redis+cluster://[::1:7000", "redis://[::1:7000", "redis://:s3cret@[::1:7000/0"):
        with pytest.raises(SettingsError, match="IPv6") as caught:
            from_env({"RQSCOPE_REDIS_URL": url})
        message = str(caught.value)
        assert message.startswith("RQSCOPE_REDIS_URL") and "\n" not in message and "s3cret" not in message
