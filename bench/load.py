"""Load over the whole stack, on loopback: jobs enqueued over HTTP by concurrent clients into three
priority queues, four `rqscope worker`s, the dashboard open in Chromium, /metrics scraped every second.

    python -m bench.load [--jobs 20000] [--clients 8] [--workers 4] [--no-browser]

It reports enqueue latency, jobs processed per second, scrape latency under load, the sidecar's
memory, and two invariants: every job ended in exactly one terminal registry, and the exported run
counters equal the jobs run. The chaos scenarios (tests/test_chaos.py) drive the same parts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from redis import Redis
from werkzeug.security import generate_password_hash

from bench.common import REPO, machine, percentile, stop_process, throwaway_redis
from monitor.embedded import free_port

QUEUES = ("high", "default", "low")
TASK = "load_step"
TOKEN = "load-operator-token-7f3a9c2e51d84b6a"
USER, PASSWORD = "ops", "load test password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
DASHBOARD_PAGES = ("/", "/queues/default/failed", "/workers", "/tasks", "/queues/high/queued")


def rqscope(*args: str) -> list[str]:
    return [sys.executable, "-m", "web.cli", *args]


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not met within {timeout:.0f}s")
        time.sleep(interval)


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


def job_bodies(count: int, fail_every: int = 20, seconds: float = 0.0, prefix: str = "load") -> list[dict[str, Any]]:
    """Jobs with ids chosen by the client, so that a retried request cannot enqueue twice."""
    return [
        {
            "task": TASK,
            "args": [n],
            "kwargs": {"fail": fail_every > 0 and n % fail_every == 0, "seconds": seconds},
            "queue": QUEUES[n % len(QUEUES)],
            "job_id": f"{prefix}-{n}",
        }  # fmt: skip
        for n in range(count)
    ]


@dataclass
class EnqueueResult:
    accepted: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    elapsed: float = 0.0


def enqueue_all(url: str, bodies: Sequence[dict[str, Any]], clients: int, deadline: float = 600) -> EnqueueResult:
    """POST every body from `clients` keep-alive connections; a failed request is retried until accepted."""
    result = EnqueueResult()
    lock = threading.Lock()
    parts = urlsplit(url)
    give_up = time.monotonic() + deadline

    def client(share: Sequence[dict[str, Any]]) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        for body in share:
            while True:
                started = time.perf_counter()
                try:
                    code, _ = send(connection, "POST", "/api/tasks", body, TOKEN)
                except (OSError, http.client.HTTPException):
                    connection.close()
                    code = 0
                latency = time.perf_counter() - started
                with lock:
                    if code in (200, 202):
                        result.accepted.append(body["job_id"])
                        result.latencies.append(latency)
                    else:
                        result.refused[code] += 1
                if code in (200, 202):
                    break
                if time.monotonic() > give_up:
                    raise TimeoutError(f"{body['job_id']} not accepted: last status {code}")
                time.sleep(0.2)
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(bodies[i::clients],), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline + 30)
    result.elapsed = time.perf_counter() - started
    return result


def in_flight(metrics: str) -> int:
    """Jobs queued or running, from rqscope_queue_jobs in a /metrics body."""
    total = 0
    for line in metrics.splitlines():
        if line.startswith("rqscope_queue_jobs{") and ('state="queued"' in line or 'state="started"' in line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def metric_value(metrics: str, name: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ", 1)[1])
    return None


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
                self.up.append(metric_value(text, "rqscope_redis_up") or 0.0)
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


def settled(redis: Redis) -> bool:
    """No job queued, being dequeued or running on any load queue."""
    with redis.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(f"rq:queue:{queue}")
            pipe.llen(f"rq:queue:{queue}:intermediate")
            pipe.zcard(f"rq:wip:{queue}")
        return not any(pipe.execute())


def places(redis: Redis) -> dict[str, list[str]]:
    """Every job id rq has on the load queues, by place."""
    found: dict[str, list[str]] = {}
    for queue in QUEUES:
        found[f"{queue}:queued"] = [i.decode() for i in redis.lrange(f"rq:queue:{queue}", 0, -1)]
        found[f"{queue}:dequeuing"] = [i.decode() for i in redis.lrange(f"rq:queue:{queue}:intermediate", 0, -1)]
        found[f"{queue}:started"] = [e.decode().split(":")[0] for e in redis.zrange(f"rq:wip:{queue}", 0, -1)]
        for registry in ("finished", "failed", "scheduled", "deferred", "canceled"):
            found[f"{queue}:{registry}"] = [i.decode() for i in redis.zrange(f"rq:{registry}:{queue}", 0, -1)]
    return found


@dataclass
class Reconciliation:
    finished: int
    failed: int
    missing: list[str]
    duplicated: list[str]
    not_terminal: list[str]

    @property
    def exact(self) -> bool:
        return not (self.missing or self.duplicated or self.not_terminal)


def reconcile(redis: Redis, ids: Sequence[str]) -> Reconciliation:
    """Where each id ended: exactly one terminal registry is the only right answer."""
    seen: dict[str, list[str]] = {}
    for place, members in places(redis).items():
        for job_id in members:
            seen.setdefault(job_id, []).append(place)
    missing = [i for i in ids if i not in seen]
    duplicated = [i for i in ids if len(seen.get(i, ())) > 1]
    not_terminal = [
        i for i in ids if len(seen.get(i, ())) == 1 and seen[i][0].split(":")[1] not in ("finished", "failed")
    ]
    kinds = Counter(seen[i][0].split(":")[1] for i in ids if len(seen.get(i, ())) == 1)
    return Reconciliation(kinds["finished"], kinds["failed"], missing, duplicated, not_terminal)


def exported_runs(url: str, task: str = TASK) -> Counter[str]:
    """rqscope_task_runs_total for one task, summed over queues, by outcome."""
    code, body = request("GET", url + "/metrics")
    if code != 200:
        raise RuntimeError(f"/metrics answered {code}")
    runs: Counter[str] = Counter()
    for line in body.decode().splitlines():
        if line.startswith("rqscope_task_runs_total{") and f'task="{task}"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            runs[outcome] += int(float(line.rsplit(" ", 1)[1]))
    return runs


@dataclass
class LoadReport:
    jobs: int
    clients: int
    workers: int
    enqueue: EnqueueResult
    processing_seconds: float
    scraper: Scraper
    viewer_responses: Counter[int]
    reconciliation: Reconciliation
    runs: Counter[str]

    @property
    def counters_match(self) -> bool:
        r = self.reconciliation
        return (
            sum(self.runs.values()) == self.jobs
            and self.runs["success"] == r.finished
            and (self.runs["failure"] == r.failed)
        )

    def rows(self) -> list[tuple[str, str]]:
        e, s, r = self.enqueue, self.scraper, self.reconciliation
        responses = ", ".join(f"{n} x {code}" for code, n in sorted(self.viewer_responses.items()))
        return [
            ("jobs enqueued over HTTP", f"{len(set(e.accepted)):,} by {self.clients} clients, {len(QUEUES)} queues"),
            ("enqueue latency p50 / p99", milliseconds(e.latencies)),
            ("enqueue rate", f"{len(e.accepted) / e.elapsed:,.0f} jobs/s"),
            ("most jobs in flight (queued + running)", f"{s.max_in_flight:,}"),
            ("jobs processed", f"{self.jobs / self.processing_seconds:,.0f} jobs/s by {self.workers} workers"),
            ("scrape latency p50 / p99 under load", f"{milliseconds(s.latencies)} ({len(s.latencies)} scrapes, "
                                                    f"{s.failures} failed)"),
            ("sidecar RSS, peak", f"{max(s.rss or [0]) / 2**20:.0f} MiB"),
            ("dashboard responses in Chromium", responses or "browser off"),
            ("ended in exactly one terminal registry", f"{r.finished + r.failed:,} of {self.jobs:,} "
                                                       f"({r.finished:,} finished, {r.failed:,} failed)"),
            ("missing / duplicated / not terminal", f"{len(r.missing)} / {len(r.duplicated)} / {len(r.not_terminal)}"),
            ("exported rqscope_task_runs_total", f"{sum(self.runs.values()):,} {dict(sorted(self.runs.items()))}"),
            ("counters equal to jobs run", "yes" if self.counters_match else "NO"),
        ]  # fmt: skip


def milliseconds(latencies: Sequence[float]) -> str:
    return f"{percentile(latencies, 0.5) * 1000:.1f} / {percentile(latencies, 0.99) * 1000:.1f} ms"


def run_load(redis: Redis, stack: Stack, jobs: int, clients: int, browser: bool, fail_every: int = 20,
             settle_timeout: float = 900) -> LoadReport:  # fmt: skip
    """Drive one load run against a started stack and check where every job ended."""
    viewer = Viewer(stack.url) if browser else None
    if viewer is not None:
        viewer.start()
        viewer.ready.wait(90)
        if viewer.error is not None:
            raise viewer.error
    scraper = Scraper(stack)
    scraper.start()
    try:
        started = time.perf_counter()
        enqueued = enqueue_all(stack.url, job_bodies(jobs, fail_every), clients)
        wait_until(lambda: settled(redis), settle_timeout, interval=0.2, what="every job done")
        processing = time.perf_counter() - started
    finally:
        scraper.stop()
        if viewer is not None:
            viewer.stop()
    if viewer is not None and viewer.error is not None:
        raise viewer.error
    ids = [f"load-{n}" for n in range(jobs)]
    reconciliation = reconcile(redis, ids)
    runs = wait_until(lambda: (r := exported_runs(stack.url)) and sum(r.values()) >= jobs and r, 30, what="counters")
    return LoadReport(
        jobs, clients, stack.worker_count, enqueued, processing, scraper,
        viewer.responses if viewer else Counter(), reconciliation, runs,
    )  # fmt: skip


@contextmanager
def load_stack(workers: int) -> Iterator[tuple[Redis, Stack]]:
    with throwaway_redis() as (server, client), Stack(server.url, workers) as stack:
        yield client, stack


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    with load_stack(args.workers) as (redis, stack):
        report = run_load(redis, stack, args.jobs, args.clients, browser=not args.no_browser)
    print(f"# rqscope load, {time.strftime('%Y-%m-%d')}, {machine()}")
    width = max(len(name) for name, _ in report.rows())
    for name, value in report.rows():
        print(f"{name:<{width}}  {value}")
    ok = report.reconciliation.exact and report.counters_match
    print("invariants held" if ok else "INVARIANTS BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
