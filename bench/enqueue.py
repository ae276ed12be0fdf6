"""Enqueue throughput: POST /api/tasks/batch and POST /api/tasks on `rqscope serve`, and RQ's own enqueue_many
in-process beside them, on the same redis-server, in alternating rounds.

    python -m bench.enqueue [--rounds 10] [--batch 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from collections.abc import Callable

from redis import Redis
from rq import Queue
from rqscope.tasks.examples import send_email

from bench.common import machine, median, percentile, throwaway_redis
from bench.servers import rqscope_serve

HEADERS = {"Content-Type": "application/json"}


def item(n: int) -> dict[str, object]:
    return {"task": "send_email", "args": [f"user{n}@example.com", "Notification", "Your weekly summary is ready"]}


class Client:
    """One keep-alive connection to the sidecar."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)

    def post(self, path: str, body: bytes) -> float:
        started = time.perf_counter()
        self.connection.request("POST", path, body=body, headers=HEADERS)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 202:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
        return time.perf_counter() - started


def batch_round(clients: list[Client], size: int, start: int) -> float:
    """Jobs per second with every client posting one batch of `size` at once."""
    firsts = [start + c * size for c in range(len(clients))]
    bodies = [json.dumps({"tasks": [item(first + n) for n in range(size)]}).encode() for first in firsts]
    threads = [
        threading.Thread(target=client.post, args=("/api/tasks/batch", body))
        for client, body in zip(clients, bodies, strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(clients) * size / (time.perf_counter() - started)


def rq_round(redis: Redis, size: int, start: int) -> float:
    """Jobs per second through RQ's own enqueue_many, in this process, for the same calls."""
    queue = Queue("high", connection=redis)
    started = time.perf_counter()
    with redis.pipeline() as pipe:
        queue.enqueue_many([Queue.prepare_data(send_email, args=item(start + n)["args"]) for n in range(size)], pipe)
        pipe.execute()
    return size / (time.perf_counter() - started)


def singles(url: str, connections: int, seconds: float) -> tuple[float, list[float]]:
    """Requests per second and every latency, `connections` keep-alive clients posting one job each time."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def run(worker: int) -> None:
        client, n, mine = Client(url), 0, []
        while time.perf_counter() < deadline:
            n += 1
            mine.append(client.post("/api/tasks", json.dumps(item(worker * 10_000_000 + n)).encode()))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds of each batch measure")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per batch (at most RQSCOPE_MAX_BATCH)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the single-job run")
    args = parser.parse_args()
    with throwaway_redis() as (server, redis), rqscope_serve(server.url) as sidecar:
        one, two = [Client(sidecar.url)], [Client(sidecar.url), Client(sidecar.url)]
        measures: dict[str, Callable[[int], float]] = {
            "batch API, 1 connection": lambda start: batch_round(one, args.batch, start),
            "batch API, 2 connections": lambda start: batch_round(two, args.batch, start),
            "RQ enqueue_many, in-process": lambda start: rq_round(redis, args.batch, start),
        }
        rates: dict[str, list[float]] = {name: [] for name in measures}
        measures["batch API, 1 connection"](0)  # the first request of each gunicorn worker imports the app
        measures["batch API, 2 connections"](0)
        for round_number in range(args.rounds):
            for offset, (name, measure) in enumerate(measures.items()):
                rates[name].append(measure((round_number * 3 + offset + 1) * 2 * args.batch))
        single_rate, latencies = singles(sidecar.url, 4, args.seconds)
        jobs = Queue("high", connection=redis).count
    print(f"{time.strftime('%Y-%m-%d')}, {machine()}; redis-server on loopback; {jobs} jobs enqueued in all")
    print(f"{'measure':<32}{'jobs/s (median)':>18}{'min':>10}{'max':>10}")
    for name, values in rates.items():
        print(f"{name:<32}{median(values):>18,.0f}{min(values):>10,.0f}{max(values):>10,.0f}")
    print(
        f"{'single-job API, 4 connections':<32}{single_rate:>18,.0f}"
        f"   p50 {median(latencies) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    ratio = median(rates["batch API, 2 connections"]) / median(rates["RQ enqueue_many, in-process"])
    print(f"batch API (2 connections) / RQ enqueue_many in-process: {ratio:.2f}")
    print(f"batch API (2 connections) / single-job API: {median(rates['batch API, 2 connections']) / single_rate:.1f}")


if __name__ == "__main__":
    main()
