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
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from redis import Redis

from bench.common import machine, percentile, throwaway_redis
from bench.ledger import Reconciliation, exported_runs, reconcile, settled
from bench.stack import QUEUES, TASK, TOKEN, Scraper, Stack, Viewer, send, wait_until


def job_bodies(count: int, fail_every: int = 20, seconds: float = 0.0, prefix: str = "load") -> list[dict[str, Any]]:
    """Jobs with ids chosen by the client, so that a retried request cannot enqueue twice."""
    return [
        {
            "task": TASK,
            "args": [n],
            "kwargs": {"fail": fail_every > 0 and n % fail_every == 0, "seconds": seconds},
            "queue": QUEUES[n % len(QUEUES)],
            "job_id": f"{prefix}-{n}",
        }
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
