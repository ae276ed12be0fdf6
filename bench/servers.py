"""HTTP servers a benchmark starts on loopback and stops by pid, timed requests, and the alternating schedule."""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rqscope.monitor.embedded import free_port
from rqscope.monitor.settings import DEFAULT_SNAPSHOT_TTL

from bench.common import REPO, percentile, stop_process, wait_until

# rqscope's alert evaluator reads through the same snapshot cache as /metrics; an hour between evaluations
# keeps it from warming the cache just before a measured request
ALERT_INTERVAL = "3600"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    seconds: float


def timed_request(url: str, path: str, method: str = "GET", body: bytes | None = None, timeout: float = 120) -> Reply:
    """One request on a new connection, timed from connecting to the last byte of the body."""
    host, _, port = url.removeprefix("http://").partition(":")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    return Reply(response.status, data, time.perf_counter() - started)


def answers(url: str, path: str) -> bool:
    try:
        return timed_request(url, path, timeout=5).status == 200
    except (OSError, http.client.HTTPException):
        return False


class Server:
    """One HTTP server process bound to 127.0.0.1 on a free port, ready once `ready_path` answers 200."""

    def __init__(self, name: str, command: Callable[[int], list[str]], env: Mapping[str, str], ready_path: str):
        self.name, self.command, self.env, self.ready_path = name, command, dict(env), ready_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkdtemp(prefix="rqscope-bench-")) / f"{name.replace(' ', '-')}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        return answers(self.url, self.ready_path)

    def __enter__(self) -> Server:
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.command(self.port),
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until(self._ready, 90, interval=0.2, what=f"{self.name} answering on {self.url}")
        except TimeoutError as exc:
            tail = self.log_tail()
            self.close()
            raise RuntimeError(f"{exc}; its log ends:\n{tail}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and what it started, by pid; its log goes too (a failed start quotes it)."""
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.log.parent, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def rqscope_env(redis_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The product's environment with no inherited RQSCOPE_* setting, so `--no-auth` meets no credentials."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("RQSCOPE_")}
    return {**env, "PYTHONPATH": str(REPO), "RQSCOPE_REDIS_URL": redis_url, "RQSCOPE_LOG_LEVEL": "WARNING"}


def rqscope_serve(redis_url: str) -> Server:
    """`rqscope serve` as shipped (gunicorn, its default workers, threads and 1 s snapshot cache), no auth."""

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rqscope.web.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-auth",
            "--alert-interval",
            ALERT_INTERVAL,
        ]

    return Server("rqscope serve", command, rqscope_env(redis_url), "/readyz")


def cold_gap(text: str | float) -> float:
    """A gap between requests after which rqscope's snapshot cache has expired by its next turn of two."""
    gap = float(text)
    if 2 * gap <= DEFAULT_SNAPSHOT_TTL:
        raise argparse.ArgumentTypeError(
            f"{gap} s apart, rqscope is asked again within its {DEFAULT_SNAPSHOT_TTL} s cache"
        )
    return gap


def alternate(
    requests: Mapping[str, Callable[[], Reply]], rounds: int, gap: float, deadline: float | None = None
) -> dict[str, list[float]]:
    """Each request in turn, `rounds` times, starting `gap` s apart (or when the previous one ends, if later);
    no round starts after `deadline` (time.monotonic()), so fewer rounds may come back."""
    seconds: dict[str, list[float]] = {name: [] for name in requests}
    next_start = time.monotonic()
    for _ in range(rounds):
        if deadline is not None and time.monotonic() + len(requests) * gap > deadline:
            break
        for name, send in requests.items():
            time.sleep(max(0.0, next_start - time.monotonic()))
            next_start = time.monotonic() + gap
            reply = send()
            if reply.status != 200:
                raise RuntimeError(f"{name}: HTTP {reply.status}: {reply.body[:300]!r}")
            seconds[name].append(reply.seconds)
    return seconds


@dataclass(frozen=True)
class Summary:
    p50: float
    mean: float
    count: int
    p95: float = float("nan")

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        return cls(statistics.median(samples), statistics.fmean(samples), len(samples), percentile(samples, 0.95))
