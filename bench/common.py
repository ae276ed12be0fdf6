"""Helpers shared by the benchmarks: a throwaway Redis, subprocesses, statistics."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from redis import Connection, ConnectionPool, Redis
from rqscope.monitor.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent


def redis_binary() -> str | None:
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else shutil.which("redis-server")


@contextmanager
def throwaway_redis() -> Iterator[tuple[EmbeddedRedis, Redis]]:
    server = EmbeddedRedis(binary=redis_binary()).start()
    client = Redis.from_url(server.url, socket_timeout=30)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def timed_run(command: Sequence[str], env: dict[str, str], timeout: float = 600) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=REPO, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process and every child it left behind."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """The first truthy value of `predicate`, polled every `interval` s; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def count_commands(client: Redis, action: Callable[[], object]) -> tuple[int, object]:
    """Commands the server processed while `action` ran (from INFO commandstats), and its result."""

    def total() -> int:
        stats = client.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())

    client.config_resetstat()
    before = total()
    result = action()
    return total() - before - 1, result  # the INFO that read `before` is counted too


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return ""


def machine() -> str:
    model = f" ({cpu_model()})" if cpu_model() else ""
    return f"{platform.machine()}, {os.cpu_count()} cores{model}, Python {platform.python_version()}"


@dataclass(frozen=True)
class RedisCost:
    """What one action cost the Redis server: commands, CPU time, time inside scripts and the longest script."""

    commands: int
    cpu_seconds: float
    script_seconds: float
    longest_script_seconds: float


# what redis_cost itself sends, left out of the counts (neither exporter sends CONFIG or SLOWLOG)
MEASURING = ("cmdstat_config", "cmdstat_slowlog")


def redis_cost(client: Redis, action: Callable[[], object]) -> tuple[RedisCost, object]:
    """Run `action`, measuring the server from INFO commandstats, INFO cpu and a SLOWLOG that logs every command."""
    threshold = client.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 100_000)
    try:
        client.slowlog_reset()
        client.config_resetstat()
        before = client.info("cpu")
        result = action()
        after = client.info("cpu")
        stats = client.info("commandstats")
        log = client.slowlog_get(100_000)
    finally:
        client.config_set("slowlog-log-slower-than", threshold)
    calls = sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(MEASURING)) - 2  # the INFO cpu pair
    scripts = [e["duration"] / 1e6 for e in log if e["command"].split(b" ", 1)[0].upper() in (b"EVAL", b"EVALSHA")]
    cost = RedisCost(
        commands=calls,
        cpu_seconds=sum(after[k] - before[k] for k in ("used_cpu_user", "used_cpu_sys")),
        script_seconds=sum(float(v["usec"]) for k, v in stats.items() if k in ("cmdstat_eval", "cmdstat_evalsha"))
        / 1e6,
        longest_script_seconds=max(scripts, default=0.0),
    )
    return cost, result


class CountingConnection(Connection):
    """Counts what a client sends (one packed send is one round trip) and the time spent waiting for and reading
    Redis's replies."""

    sends = 0
    reading_seconds = 0.0

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)

    def read_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return super().read_response(*args, **kwargs)
        finally:
            CountingConnection.reading_seconds += time.perf_counter() - started


def counting_client(url: str) -> Redis:
    pool = ConnectionPool.from_url(url, connection_class=CountingConnection, socket_timeout=60)
    return Redis(connection_pool=pool)
