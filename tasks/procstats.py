"""Per-process figures (RSS, CPU, Redis pool use) published into Redis with a TTL."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from redis import ConnectionError, ConnectionPool, Redis, RedisError
from rqscope.tasks.rq_internals.keys import OWN, OWN_FORMAT

log = logging.getLogger(__name__)

PROCS_KEY = OWN + "procs"  # sorted set: process id -> expiry (epoch seconds)
PROC_KEY_TEMPLATE = OWN_FORMAT + "proc:{id}"
# `rqscope worker` writes its publish interval into its RQ worker hash under this field: its samples
# expire three intervals after its last sign of life, so a killed worker shows as dead in seconds
LIVENESS_FIELD = "rqscope_publish_interval"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessSample:
    """One process's resource use at one moment."""

    role: str
    host: str
    pid: int
    name: str
    rss_bytes: int
    cpu_seconds: float
    pool_in_use: int
    pool_idle: int
    pool_max: int
    at: float
    pool_exhausted: int = 0  # times the pool had no connection to give, since the process started
    pool_exhausted_recent: int = 0  # of those, since the previous publication

    @property
    def id(self) -> str:
        return f"{self.role}:{self.host}:{self.pid}"


class CountingConnectionPool(ConnectionPool):
    """A ConnectionPool that counts the times it had no connection to give ("Too many connections")."""

    exhausted = 0

    def make_connection(self):  # type: ignore[no-untyped-def]
        try:
            return super().make_connection()
        except ConnectionError:
            self.exhausted += 1
            raise


def pool_usage(client: Redis) -> tuple[int, int, int]:
    """Connections of the client's pool: (in use, idle, max)."""
    pool = client.connection_pool
    in_use = len(getattr(pool, "_in_use_connections", ()))
    idle = len(getattr(pool, "_available_connections", ()))
    maximum = getattr(pool, "max_connections", 0) or 0
    return in_use, idle, int(min(maximum, 2**31 - 1))


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sample(client: Redis, role: str, name: str = "", exhausted_before: int = 0) -> ProcessSample:
    times = os.times()
    in_use, idle, maximum = pool_usage(client)
    exhausted = int(getattr(client.connection_pool, "exhausted", 0))
    return ProcessSample(
        role=role,
        host=socket.gethostname(),
        pid=os.getpid(),
        name=name,
        rss_bytes=rss_bytes(),
        cpu_seconds=round(times.user + times.system, 3),
        pool_in_use=in_use,
        pool_idle=idle,
        pool_max=maximum,
        at=time.time(),
        pool_exhausted=exhausted,
        pool_exhausted_recent=max(0, exhausted - exhausted_before),
    )


def publish(client: Redis, item: ProcessSample, ttl: float) -> None:
    """Store the sample for `ttl` seconds and drop expired entries, in one round trip."""
    expires = item.at + ttl
    pipe = client.pipeline(transaction=False)
    pipe.hset(PROC_KEY_TEMPLATE.format(id=item.id), mapping={k: str(v) for k, v in asdict(item).items()})
    pipe.pexpire(PROC_KEY_TEMPLATE.format(id=item.id), int(ttl * 1000))
    pipe.zadd(PROCS_KEY, {item.id: expires})
    pipe.zremrangebyscore(PROCS_KEY, "-inf", item.at)
    pipe.execute()


def retract(client: Redis, process_id: str) -> None:
    """Remove a process's publication when it stops, so it is not reported until its TTL runs out."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(PROC_KEY_TEMPLATE.format(id=process_id))
    pipe.zrem(PROCS_KEY, process_id)
    pipe.execute()


def parse_sample(raw: Mapping[bytes | str, bytes | str]) -> ProcessSample | None:
    """A ProcessSample from a stored hash, or None when fields are missing or garbage."""
    data = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    try:
        return ProcessSample(
            role=data["role"],
            host=data["host"],
            pid=int(data["pid"]),
            name=data.get("name", ""),
            rss_bytes=int(data["rss_bytes"]),
            cpu_seconds=float(data["cpu_seconds"]),
            pool_in_use=int(data["pool_in_use"]),
            pool_idle=int(data["pool_idle"]),
            pool_max=int(data["pool_max"]),
            at=float(data["at"]),
            pool_exhausted=int(data.get("pool_exhausted", 0)),
            pool_exhausted_recent=int(data.get("pool_exhausted_recent", 0)),
        )
    except (KeyError, ValueError):
        return None


class Publisher(threading.Thread):
    """Publishes this process's sample every `interval` seconds until stopped."""

    def __init__(self, client: Redis, role: str, interval: float, name: str = "") -> None:
        super().__init__(name=f"rqscope-publisher-{role}", daemon=True)
        self.client = client
        self.role = role
        self.interval = interval
        self.proc_name = name
        self.stopped = threading.Event()
        self.process_id: str | None = None
        self.exhausted = 0

    def publish_once(self) -> None:
        item = sample(self.client, self.role, self.proc_name, self.exhausted)
        self.exhausted = item.pool_exhausted
        self.process_id = item.id
        publish(self.client, item, ttl=self.interval * 3)

    def run(self) -> None:
        delay = self.interval
        while not self.stopped.is_set():
            try:
                self.publish_once()
                delay = self.interval
            except RedisError as exc:
                delay = min(delay * 2, 60.0)
                log.warning("could not publish %s process stats: %s", self.role, exc)
            self.stopped.wait(delay)

    def stop(self) -> None:
        """Stop publishing and withdraw the last publication."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=2)
        if self.process_id is not None:
            try:
                retract(self.client, self.process_id)
            except RedisError as exc:
                log.warning("could not withdraw %s process stats: %s", self.role, exc)
