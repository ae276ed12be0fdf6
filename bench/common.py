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


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


class CountingConnection(Connection):
    """Counts what a client sends: one packed send is one round trip."""

    sends = 0

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


def counting_client(url: str) -> Redis:
    pool = ConnectionPool.from_url(url, connection_class=CountingConnection, socket_timeout=60)
    return Redis(connection_pool=pool)
