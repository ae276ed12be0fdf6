"""Process helpers for tests: start rqscope commands and always clean them up by pid."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

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
