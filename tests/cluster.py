"""A local three-master Redis Cluster for tests, started and stopped by pid, and a mover of one slot.

Import the `redis_cluster` fixture into a test module (`from tests.cluster import redis_cluster`).
`record_run` is a task for workers in other processes: it appends its job id to a file, so that a
test counts how often each job ran.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from redis import Redis
from redis.crc import key_slot
from rqscope.monitor.embedded import free_port
from rqscope.tasks.registry import task

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
START_TIMEOUT = 30.0


@task(queue="default")
def record_run(path: str) -> str:
    """Append this job's id and the time to `path` (one write, so concurrent horses never interleave)."""
    from rq import get_current_job

    job = get_current_job()
    job_id = job.id if job is not None else "?"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{job_id} {time.time():.3f}\n".encode())
    finally:
        os.close(fd)
    return job_id


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(50):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class LocalCluster:
    """Three masters on loopback; every helper talks to one node with a plain client."""

    directory: Path
    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def node(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, socket_timeout=10, socket_connect_timeout=2)

    def url(self, port: int | None = None) -> str:
        return f"redis+cluster://127.0.0.1:{port or self.ports[0]}"

    def node_id(self, port: int) -> str:
        return self.node(port).execute_command("CLUSTER", "MYID").decode()

    def owner(self, slot: int, asked: int | None = None) -> int:
        """The port of the node that owns `slot`, as the node on `asked` sees it."""
        for start, end, master, *_ in self.node(asked or self.ports[0]).execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise AssertionError(f"slot {slot} is not served")

    def describe(self, prefix: str, queue: str) -> str:
        """What an RQ queue and its workers left on the slot's owner, for a test's failure message."""
        from rqscope.tasks.rq_internals.keys import Keys

        keys = Keys(prefix)
        owner = self.owner(key_slot(prefix.encode()))
        node = self.node(owner)
        pipe = node.pipeline(transaction=False)
        pipe.llen(keys.queue(queue))
        pipe.lrange(keys.intermediate(queue), 0, 9)
        for state in ("started", "finished", "failed", "scheduled"):
            pipe.zcard(keys.registry(state, queue))
        pipe.smembers(keys.workers)
        queued, dequeuing, started, finished, failed, scheduled, workers = pipe.execute()
        workers = sorted(workers)
        pipe = node.pipeline(transaction=False)
        for worker in workers:
            pipe.hmget(worker, "state", "last_heartbeat", "successful_job_count", "failed_job_count")
            pipe.hgetall(worker + b":rqscope-claim")
        described = pipe.execute()
        return "\n".join(
            [
                f"slot {key_slot(prefix.encode())} on {owner}; queue {queue!r}: {queued} queued, dequeuing "
                f"{dequeuing}, {started} started, {finished} finished, {failed} failed, {scheduled} scheduled",
                *(
                    f"worker {name!r}: state, last heartbeat, jobs finished, failed {fields}; claim {claim}"
                    for name, fields, claim in zip(workers, described[::2], described[1::2], strict=True)
                ),
            ]
        )

    def keys_on(self, port: int) -> list[bytes]:
        return sorted(cast(list[bytes], self.node(port).keys("*")))

    def start_migration(self, slot: int, src: int, dst: int) -> None:
        self.node(dst).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(src))
        self.node(src).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(dst))

    def migrate_keys(self, slot: int, src: int, dst: int, batch: int = 100, limit: int | None = None) -> int:
        """Move the slot's keys (all, or up to `limit`) from src to dst in batches; the number moved."""
        moved = 0
        source = self.node(src)
        while limit is None or moved < limit:
            count = batch if limit is None else min(batch, limit - moved)
            keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, count)
            if not keys:
                break
            source.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        return moved

    def reshard(self, slot: int, src: int, dst: int, seconds: float, batch: int = 10) -> int:
        """Move a slot's keys in MIGRATE batches with clients' traffic between, over about `seconds`; the keys
        moved. Batches of `batch` keys, larger when the machine is too slow to end on time."""
        started = time.monotonic()
        self.start_migration(slot, src, dst)
        source = self.node(src)
        total = max(1, source.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
        moved = batches = 0
        while left := source.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot):
            elapsed = time.monotonic() - started
            rounds = max(1.0, (seconds - elapsed) / max(elapsed / max(batches, 1), 0.003))
            size = max(batch, math.ceil(left / rounds))
            moved += self.migrate_keys(slot, src, dst, batch=size, limit=size)
            batches += 1
            ahead = started + seconds * min(1.0, moved / total) - time.monotonic()
            time.sleep(min(max(ahead, 0.003), 0.1))  # the clients' traffic between batches
        self.finish_migration(slot, src, dst)
        return moved

    def finish_migration(self, slot: int, src: int, dst: int) -> None:
        """Give the slot to dst: dst first, then src, then every other master (the order redis-cli uses)."""
        dst_id = self.node_id(dst)
        for port in [dst, src, *(p for p in self.ports if p not in (src, dst))]:
            self.node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)

    def move_slot(self, slot: int, src: int, dst: int, batch: int = 100) -> int:
        """Move one slot and its keys from src to dst while clients keep running; the keys moved."""
        self.start_migration(slot, src, dst)
        moved = self.migrate_keys(slot, src, dst, batch)
        self.finish_migration(slot, src, dst)
        return moved

    def settled(self) -> bool:
        """Every node reports cluster_state:ok and sees the same owner for every slot range."""
        views = []
        for port in self.ports:
            info = self.node(port).execute_command("CLUSTER", "INFO").decode()
            if "cluster_state:ok" not in info:
                return False
            views.append(
                sorted((s, e, int(m[1])) for s, e, m, *_ in self.node(port).execute_command("CLUSTER", "SLOTS"))
            )
        return all(view == views[0] for view in views) and sum(e - s + 1 for s, e, _ in views[0]) == 16384

    def wait_settled(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.settled():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not settle")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(masters: int = 3) -> LocalCluster:
    """Start `masters` cluster-enabled redis-servers and join them with `redis-cli --cluster create`."""
    directory = Path(tempfile.mkdtemp(prefix="rqscope-cluster-"))
    cluster = LocalCluster(directory, [])
    try:
        for _ in range(masters):
            port = _cluster_port()
            cluster.ports.append(port)
            log = open(directory / f"redis-{port}.log", "ab")  # noqa: SIM115 - the server owns it
            args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
            args += ["--cluster-config-file", str(directory / f"nodes-{port}.conf"), "--dir", str(directory)]
            args += ["--save", "", "--appendonly", "no", "--cluster-node-timeout", "5000"]
            cluster.processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=directory))
        deadline = time.monotonic() + START_TIMEOUT
        for port in cluster.ports:
            while True:
                try:
                    cluster.node(port).ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node on {port} did not start") from None
                    time.sleep(0.05)
        create = [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.ports)]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60
        )
        cluster.wait_settled()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[LocalCluster]:
    if not (os.access(REDIS_SERVER, os.X_OK) and os.access(REDIS_CLI, os.X_OK)):
        pytest.skip("redis-server and redis-cli are needed for a local Redis Cluster")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
