"""Overhead of rqscope's instrumentation, and the HTTP enqueue API's throughput and latency.

1. The same no-op jobs through a bare `rq worker --burst` and through `rqscope worker --burst`
   on one Redis; prints jobs/s for both and the ratio (goal: >= 0.95).
2. Enqueues over HTTP to `rqscope serve` as shipped from concurrent clients (wrk): the first 10 s after
   start, then warmed, beside direct in-process `Queue.enqueue`; prints requests/s and p50/p99
   (goal: p99 < 10 ms at 4 connections from the first second).

Run: python -m bench.instrumentation [--jobs 2000] [--requests 10000] [--http-only]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

from redis import Redis
from rq import Queue
from rqscope.monitor.embedded import free_port
from rqscope.monitor.snapshot import parse_time
from rqscope.tasks.registry import REGISTRY, enqueue_task

from bench.common import (
    env_with,
    machine,
    median,
    percentile,
    python_module,
    stop_process,
    throwaway_redis,
    timed_run,
)
from bench.noop_tasks import bare_noop


def fill(client: Redis, jobs: int, instrumented: bool) -> list[str]:
    client.flushall()
    queue = Queue("default", connection=client)
    spec = REGISTRY.get("noop")
    ids = []
    with client.pipeline() as pipe:
        for _ in range(jobs):
            if instrumented:
                ids.append(enqueue_task(spec, [], {}, connection=client)[0].id)
            else:
                ids.append(queue.enqueue(bare_noop, result_ttl=500, pipeline=pipe).id)
        pipe.execute()
    return ids


def processing_seconds(client: Redis, ids: list[str]) -> float:
    """From the first job's start to the last job's end: the worker's start-up is not counted."""
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"rq:job:{job_id}", ["started_at", "ended_at"])
    stamps = pipe.execute()
    started = min(parse_time(s) for s, _ in stamps if s)
    ended = max(parse_time(e) for _, e in stamps if e)
    assert started is not None and ended is not None and all(s and e for s, e in stamps), "a job did not run"
    return (ended - started).total_seconds()


def worker_throughput(url: str, client: Redis, jobs: int, rounds: int) -> dict[str, float]:
    env = env_with(RQSCOPE_REDIS_URL=url, RQSCOPE_TASK_MODULES="bench.noop_tasks", RQSCOPE_LOG_LEVEL="WARNING")
    commands = {
        "rq": ["rq", "worker", "--burst", "--url", url, "--quiet", "-c", "bench.noop_tasks", "default"],
        "rqscope": python_module("rqscope.web.cli", "worker", "default", "--burst"),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(rounds):
        order = list(commands.items())
        if round_number % 2:
            order.reverse()  # neither worker always runs second
        for name, command in order:
            ids = fill(client, jobs, instrumented=name == "rqscope")
            timed_run(command, env)
            left = Queue("default", connection=client).count
            assert left == 0, f"{name} left {left} jobs"
            times[name].append(processing_seconds(client, ids))
    for name, values in times.items():
        print(f"  {name:<8} per round: " + ", ".join(f"{jobs / v:.0f}" for v in values) + " jobs/s")
    return {name: jobs / median(values) for name, values in times.items()}


def direct_enqueue_latency(client: Redis, requests: int) -> dict[str, float]:
    client.flushall()
    queue = Queue("default", connection=client)
    latencies = []
    started = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        queue.enqueue(bare_noop)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {
        "rps": requests / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"task": "send_email", "args": ["ann@example.com", "Your receipt", "Thanks"], "kwargs": {"duration": 0}}'
wrk.headers["Content-Type"] = "application/json"
"""
HTTP_RUNS = (("first 10 s after start", 4), ("warmed", 4), ("warmed", 16))  # (label, connections), 10 s each


def wrk(base: str, script: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, base + "/api/tasks"],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    return {
        "connections": connections,
        "rps": parse_rps(out),
        "p50_ms": parse_latency(out, "50%"),
        "p99_ms": parse_latency(out, "99%"),
        "requests": parse_requests(out),
        "non2xx": parse_non2xx(out),
    }


def http_enqueue(url: str, client: Redis, seconds: int = 10) -> list[dict[str, object]]:
    """`rqscope serve` as shipped (2 gunicorn workers x 4 threads), POST /api/tasks with wrk: the first run
    starts the moment /readyz answers, as a freshly deployed sidecar meets its traffic."""
    client.flushall()
    port = free_port()
    env = env_with(RQSCOPE_REDIS_URL=url, RQSCOPE_LOG_LEVEL="WARNING")
    server = subprocess.Popen(python_module("rqscope.web.cli", "serve", "--port", str(port)), env=env)
    base = f"http://127.0.0.1:{port}"
    results: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(WRK_SCRIPT)
            script.flush()
            for label, connections in HTTP_RUNS:
                before = Queue("high", connection=client).count
                run = wrk(base, script.name, connections, seconds)
                results.append({"run": label, **run, "enqueued": Queue("high", connection=client).count - before})
    finally:
        stop_process(server)
    return results


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_latency(out: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    return _ms(*match.groups()) if match else float("nan")


def parse_rps(out: str) -> float:
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else float("nan")


def parse_requests(out: str) -> int:
    match = re.search(r"(\d+) requests in", out)
    return int(match.group(1)) if match else 0


def parse_non2xx(out: str) -> int:
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(match.group(1)) if match else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--http-only", action="store_true", help="only the HTTP enqueue part")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    with throwaway_redis() as (server, client):
        if not args.http_only:
            throughput = worker_throughput(server.url, client, args.jobs, args.rounds)
            results["worker_jobs_per_s"] = throughput
            results["worker_ratio"] = throughput["rqscope"] / throughput["rq"]
            print(f"worker, {args.jobs} no-op jobs (median of {args.rounds}):")
            print(f"  rq worker       {throughput['rq']:8.0f} jobs/s")
            print(f"  rqscope worker  {throughput['rqscope']:8.0f} jobs/s")
            print(f"  ratio           {results['worker_ratio']:8.3f}  (goal >= 0.95)")
            direct = direct_enqueue_latency(client, args.requests)
            results["direct_enqueue"] = direct
            print(
                f"direct Queue.enqueue x{args.requests}: {direct['rps']:.0f}/s, "
                f"p50 {direct['p50_ms']:.2f} ms, p99 {direct['p99_ms']:.2f} ms"
            )
        if shutil.which("wrk"):
            results["http_enqueue"] = runs = http_enqueue(server.url, client)
            print("HTTP POST /api/tasks of send_email, rqscope serve (2 gunicorn workers x 4 threads), wrk 10 s each:")
            for run in runs:
                print(
                    f"  {run['run']:<24} {run['connections']:>2} connections: {run['rps']:6.0f}/s, "
                    f"p50 {run['p50_ms']:5.2f} ms, p99 {run['p99_ms']:5.2f} ms, non-2xx {run['non2xx']}, "
                    f"enqueued {run['enqueued']} of {run['requests']}"
                )
            print("  goal: p99 < 10 ms at 4 connections, from the first second")
        else:
            print("wrk not installed (apt-get install wrk): HTTP part skipped")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
