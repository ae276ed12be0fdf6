"""Several Redis instances for the scale-out benchmark: one RQ state on each, sidecars watching them, CPU used."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis

from bench.common import redis_binary
from bench.fill import fill_state
from bench.servers import Server, rqscope_serve

NAMES = ("a", "b", "c", "d")


@contextmanager
def same_state(jobs: dict[str, int], prefixes: Sequence[str] = ("rq",)) -> Iterator[list[EmbeddedRedis]]:
    """Four redis-servers (DEBUG allowed from loopback) with one RQ state under each of `prefixes`: the first
    filled, the rest from its dump."""
    servers = [EmbeddedRedis(binary=redis_binary(), extra_args=("--enable-debug-command", "local")) for _ in NAMES]
    try:
        first = servers[0].start()
        admin = Redis.from_url(first.url, socket_timeout=120)
        started = time.perf_counter()
        for prefix in prefixes:
            fill_state(admin, 50, jobs["queued"], jobs["failed"], jobs["finished"], jobs["started"], 100, prefix=prefix)
        admin.save()
        admin.close()
        for server in servers[1:]:
            shutil.copy(Path(first.dir) / "dump.rdb", Path(server.dir) / "dump.rdb")
            server.start(timeout=120)  # it answers once the dump is loaded
        print(
            f"state: 4 x (50 queues, 100 workers, {sum(jobs.values()):,} jobs), "
            f"{time.perf_counter() - started:.0f} s to write and load"
        )
        yield servers
    finally:
        for server in servers:
            server.stop()


def watching(servers: Sequence[EmbeddedRedis], prefixes: Sequence[str] = ()) -> str:
    """RQSCOPE_REDIS_URL naming the servers a, b, c, d in order, each under its prefix if given."""
    fragments = [f"#prefix={p}" for p in prefixes] or [""] * len(servers)
    return ",".join(f"{n}={s.url}{f}" for n, s, f in zip(NAMES, servers, fragments, strict=False))


def sidecar(servers: Sequence[EmbeddedRedis], prefixes: Sequence[str] = (), **env: str) -> Server:
    """`rqscope serve` watching `servers` (each under its prefix if given), with these RQSCOPE_* settings besides."""
    server = rqscope_serve(watching(servers, prefixes))
    server.env.update(env)
    return server


def up_by_instance(body: bytes) -> dict[str, float]:
    """rqscope_redis_up of each instance in a /metrics body."""
    return {
        s.labels["redis"]: s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == "rqscope_redis_up"
    }


def cpu_seconds(server: Server) -> float:
    """User and system CPU time of a server process and its children (gunicorn's workers) so far."""
    assert server.process is not None
    root = psutil.Process(server.process.pid)
    return sum(p.cpu_times().user + p.cpu_times().system for p in (root, *root.children(recursive=True)))


def redis_cpu_seconds(server: EmbeddedRedis) -> float:
    """The redis-server's user and system CPU time so far."""
    client = Redis.from_url(server.url, socket_timeout=10)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
