"""The parts a load or chaos run drives: `rqscope serve` and `rqscope worker`s started and stopped by
pid, HTTP helpers, a Prometheus-style scraper and the dashboard open in Chromium."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from prometheus_client.parser import text_string_to_metric_families
from rqscope.monitor.embedded import free_port
from werkzeug.security import generate_password_hash

from bench.common import REPO, stop_process, wait_until

QUEUES = ("high", "default", "low")
TASK = "load_step"
TOKEN = "load-operator-token-7f3a9c2e51d84b6a"
USER, PASSWORD = "ops", "load test password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
DASHBOARD_PAGES = ("/", "/queues/default/failed", "/workers", "/tasks", "/queues/high/queued")


def rqscope(*args: str) -> list[str]:
    return [sys.executable, "-m", "rqscope.web.cli", *args]


class Stack:
    """`rqscope serve` plus instrumented workers on one Redis, each started and stopped by pid."""

    def __init__(self, redis_url: str, workers: int = 4, env: dict[str, str] | None = None, logs: Path | None = None):
        self.redis_url = redis_url
        self.worker_count = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = logs or Path(tempfile.mkdtemp(prefix="rqscope-load-"))
        users = f"{USER}:operator:{generate_password_hash(PASSWORD)}"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "RQSCOPE_REDIS_URL": redis_url,
                    "RQSCOPE_API_TOKEN": TOKEN, "RQSCOPE_USERS": users, "RQSCOPE_LOG_LEVEL": "WARNING",
                    "RQSCOPE_TASK_MODULES": "bench.load_tasks", "RQSCOPE_PUBLISH_INTERVAL": "1",
                    **(env or {})}  # fmt: skip
        self.serve: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / log_name, "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def start_worker(self, name: str, queues: Sequence[str] = QUEUES) -> subprocess.Popen[bytes]:
        process = self._spawn(rqscope("worker", *queues, "--name", name), f"worker-{name}.log")
        self.workers[name] = process
        return process

    def __enter__(self) -> Stack:
        try:
            self.serve = self._spawn(rqscope("serve", "--port", str(self.port)), "serve.log")
            wait_until(lambda: status(self.url + "/healthz") == 200, 60, what="sidecar health")
            for n in range(self.worker_count):
                self.start_worker(f"load-{n}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for process in self.workers.values():
            stop_process(process)
        if self.serve is not None:
            stop_process(self.serve)

    def sidecar_rss(self) -> int:
        """Resident memory of `rqscope serve` and its gunicorn workers, in bytes."""
        if self.serve is None:
            return 0
        try:
            root = psutil.Process(self.serve.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0

    def logs_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*.log")))


def status(url: str, token: str = "") -> int:
    """The status of a GET, or 0 when nothing answers."""
    try:
        return request("GET", url, token=token)[0]
    except OSError:
        return 0


def request(method: str, url: str, body: Any = None, token: str = TOKEN, timeout: float = 10) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        return send(connection, method, parts.path + (f"?{parts.query}" if parts.query else ""), body, token)
    finally:
        connection.close()


def send(connection: http.client.HTTPConnection, method: str, path: str, body: Any, token: str) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def samples(metrics: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The (labels, value) samples of one series in a /metrics body."""
    return [(s.labels, s.value) for family in text_string_to_metric_families(metrics)
            for s in family.samples if s.name == name]  # fmt: skip


def in_flight(metrics: str) -> int:
    """Jobs queued or running, from rqscope_queue_jobs in a /metrics body."""
    jobs = samples(metrics, "rqscope_queue_jobs")
    return int(sum(value for labels, value in jobs if labels["state"] in ("queued", "started")))


class Scraper(threading.Thread):
    """Scrapes /metrics once a second, as Prometheus would, and samples the sidecar's memory."""

    def __init__(self, stack: Stack, interval: float = 1.0):
        super().__init__(daemon=True)
        self.stack, self.interval = stack, interval
        self.latencies: list[float] = []
        self.up: list[float] = []
        self.failures = 0
        self.max_in_flight = 0
        self.rss: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=10)
        while not self._stop_event.is_set():
            started = time.perf_counter()
            try:
                code, body = send(connection, "GET", "/metrics", None, TOKEN)
            except (OSError, http.client.HTTPException):
                connection.close()
                code, body = 0, b""
            elapsed = time.perf_counter() - started
            if code == 200:
                text = body.decode()
                self.latencies.append(elapsed)
                self.up.append(sum(v for _, v in samples(text, "rqscope_redis_up")))
                self.max_in_flight = max(self.max_in_flight, in_flight(text))
            else:
                self.failures += 1
            self.rss.append(self.stack.sidecar_rss())
            self._stop_event.wait(max(0.0, self.interval - elapsed))
        connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)


class Viewer(threading.Thread):
    """The dashboard open in Debian's Chromium, signed in, moving between pages that refresh themselves."""

    def __init__(self, url: str, dwell: float = 4.0):
        super().__init__(daemon=True)
        self.url, self.dwell = url, dwell
        self.responses: Counter[int] = Counter()
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    self._browse(browser)
                finally:
                    browser.close()
        except BaseException as exc:  # reported by the caller, never swallowed
            self.error = exc
        finally:
            self.ready.set()

    def _browse(self, browser: Any) -> None:
        page = browser.new_page(base_url=self.url)
        page.set_default_timeout(30_000)
        page.on("response", lambda response: self.responses.update([response.status]))
        page.goto("/login")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        self.ready.set()
        n = 0
        while not self._stop_event.is_set():
            page.goto(DASHBOARD_PAGES[n % len(DASHBOARD_PAGES)])
            n += 1
            # the page's own poller refreshes it while we wait; drive its timers from this thread
            deadline = time.monotonic() + self.dwell
            while time.monotonic() < deadline and not self._stop_event.is_set():
                page.wait_for_timeout(250)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
