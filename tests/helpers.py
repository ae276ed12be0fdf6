"""Process helpers for tests: start rqscope commands and always clean them up by pid."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from redis import Redis

from bench.common import stop_process as stop
from bench.common import wait_until
from bench.stack import rqscope as rqscope_command  # noqa: F401 - the tests' names for them
from bench.stack import status as http_status  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


def spawn(args: list[str], env: Mapping[str, str] | None = None, **kwargs: object) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(args, cwd=REPO, env=full_env, **kwargs)  # type: ignore[call-overload,no-any-return]


@contextmanager
def running(
    args: list[str], env: Mapping[str, str] | None = None, **kwargs: object
) -> Iterator[subprocess.Popen[bytes]]:
    process = spawn(args, env, **kwargs)
    try:
        yield process
    finally:
        stop(process)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> object:
    try:
        return wait_until(predicate, timeout, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def current_job(redis: Redis, worker: str) -> str | None:
    """The job a worker is running, as the sidecar reads it (RQ 2's `current_job`, RQ 3's executions)."""
    from rqscope.monitor.reader import fetch_snapshot

    return next((w.current_job for w in fetch_snapshot(redis).workers if w.name == worker), None)
