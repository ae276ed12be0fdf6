"""A big queue and a big failed registry: emptying 1M queued jobs while a PING loop runs, and the
failed-list page at 1M failed jobs.

State: one queue of 1,000,000 queued jobs (RQ 2.x job hashes), then one failed registry of 1,000,000
jobs with a failure result stream each (four exception types), written with pipelines. Measures:
- one batch of the previous delete (500 LREMs in one MULTI/EXEC), for comparison;
- emptying the queue through the API: total time, worst and p99 PING latency of a separate process
  pinging every millisecond, and the longest single command in SLOWLOG;
- the failed-list page, view after view: wall time, Redis command time (INFO commandstats), Redis
  CPU time (INFO cpu) and how many of the newest failed jobs the exception summary covers; and the
  previous summary's read of 10,000 rows for comparison.

Run: python -m bench.bigqueue [--jobs 1000000]
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import re
import time
import uuid
import zlib
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, cast

from redis import Redis
from rqscope.monitor.jobs import JobLister
from rqscope.monitor.settings import Settings
from rqscope.web import create_app

from bench.common import machine, percentile, throwaway_redis
from bench.fill import TRACEBACK, job_hash

QUEUE = "big"
FAILED_QUEUE = "big-failed"
EXCEPTIONS = ("rqscope.tasks.examples.CorruptUploadError", "TimeoutError", "KeyError", "ConnectionResetError")
PIPELINE_COMMANDS = 20_000
SLOW_MICROSECONDS = 10_000  # SLOWLOG keeps every command slower than 10 ms
HTML = {"Accept": "text/html"}


def settings(url: str) -> Settings:
    return Settings(redis_url=url, snapshot_ttl=1e-9, task_modules=("rqscope.tasks.examples",))


def fill(redis: Redis, count: int, queue: str, failed: bool) -> None:
    """Jobs as RQ 2.x leaves them: queued (hash + RPUSH) or failed (hash + result stream + ZADD)."""
    pipe = redis.pipeline(transaction=False)
    now = time.time()
    pipe.sadd("rq:queues", f"rq:queue:{queue}")
    # one traceback per exception type, stored as RQ stores exc_string: base64(zlib(text))
    tracebacks = [TRACEBACK.format(id="x").replace(EXCEPTIONS[0], name).encode() for name in EXCEPTIONS]
    stored = [base64.b64encode(zlib.compress(text)).decode() for text in tracebacks]
    for i in range(count):
        job_id = str(uuid.uuid4())
        age = (count - i) * 0.001
        fields: dict[Any, Any] = job_hash(job_id, queue, "failed" if failed else "queued", age)
        pipe.hset(f"rq:job:{job_id}", mapping=fields)
        if failed:
            exc = stored[i % len(stored)]
            pipe.xadd(f"rq:results:{job_id}", {"type": "2", "worker_name": "w1", "exc_string": exc}, maxlen=10)
            pipe.zadd(f"rq:failed:{queue}", {job_id: now + 31_536_000 - age})
        else:
            pipe.rpush(f"rq:queue:{queue}", job_id)
        if len(pipe) >= PIPELINE_COMMANDS:
            pipe.execute()
    pipe.execute()


def ping_loop(url: str, out: Connection) -> None:
    """PING every millisecond until told to stop; send back every latency in seconds."""
    client = Redis.from_url(url, socket_timeout=60)
    latencies = []
    while not out.poll():
        started = time.perf_counter()
        client.ping()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.001)
    out.send(latencies)


def with_pings(url: str, action: Callable[[], object]) -> tuple[float, list[float]]:
    """Run `action` while another process pings: (seconds it took, PING latencies)."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    pinger = multiprocessing.get_context("spawn").Process(target=ping_loop, args=(url, child), daemon=True)
    pinger.start()
    time.sleep(1.0)  # the child is pinging before the action starts
    started = time.perf_counter()
    try:
        action()
    finally:
        seconds = time.perf_counter() - started
        parent.send("stop")
        latencies: list[float] = parent.recv() if parent.poll(60) else []
        pinger.join(10)
        if pinger.is_alive():
            pinger.kill()
    return seconds, latencies


def redis_costs(admin: Redis, action: Callable[[], object]) -> tuple[float, float, int]:
    """Redis command time and CPU time (seconds) and commands while `action` ran."""
    admin.config_resetstat()
    cpu = admin.info("cpu")
    action()
    after = admin.info("cpu")
    stats = {
        k: v for k, v in admin.info("commandstats").items() if not k.startswith(("cmdstat_config", "cmdstat_info"))
    }
    used = sum(after[k] - cpu[k] for k in ("used_cpu_sys", "used_cpu_user"))
    return sum(v["usec"] for v in stats.values()) / 1e6, used, sum(int(v["calls"]) for v in stats.values())


def old_batch(admin: Redis, queue: str, batch: int = 500) -> float:
    """One step of the previous delete: LREM key 0 id for 500 ids in one MULTI/EXEC; seconds it took."""
    ids = cast(list[bytes], admin.lrange(f"rq:queue:{queue}", -batch, -1))
    pipe = admin.pipeline()
    for job_id in ids:
        pipe.lrem(f"rq:queue:{queue}", 0, job_id.decode())
        pipe.delete(b"rq:job:" + job_id)
    started = time.perf_counter()
    pipe.execute()
    return time.perf_counter() - started


def empty_figures(url: str, admin: Redis, jobs: int) -> None:
    started = time.perf_counter()
    fill(admin, jobs, QUEUE, failed=False)
    print(f"fill: {jobs:,} queued jobs in {time.perf_counter() - started:.0f} s")
    print(f"previous delete, one batch of 500 at {jobs:,}: {old_batch(admin, QUEUE) * 1000:,.0f} ms in one EXEC")
    client = create_app(settings(url), testing=True).test_client()
    remaining = int(admin.llen(f"rq:queue:{QUEUE}"))
    admin.config_set("slowlog-log-slower-than", SLOW_MICROSECONDS)
    admin.config_set("slowlog-max-len", 100_000)
    admin.slowlog_reset()
    answers: list[object] = []
    seconds, pings = with_pings(url, lambda: answers.append(client.delete(f"/api/queues/{QUEUE}/registries/queued")))
    slow = admin.execute_command("SLOWLOG", "GET", "-1")
    longest = max(slow, key=lambda entry: entry[2], default=None)
    left = len(admin.keys("rq:job:*"))
    print(
        f"empty {remaining:,} queued jobs: {seconds:.1f} s ({remaining / seconds:,.0f} jobs/s), answer "
        f"{answers[0].get_json()}, job hashes left {left}"
    )  # type: ignore[attr-defined]
    print(
        f"  PING during the empty: worst {max(pings) * 1000:.1f} ms, p99 {percentile(pings, 0.99) * 1000:.2f} ms, "
        f"p50 {percentile(pings, 0.5) * 1000:.2f} ms ({len(pings):,} pings)"
    )
    if longest is not None:
        name = b" ".join(longest[3][:1]).decode()
        print(f"  longest command (SLOWLOG): {longest[2] / 1000:.1f} ms ({name}); {len(slow)} commands over 10 ms")
    admin.config_set("slowlog-log-slower-than", 10_000)


def summary_label(page: str) -> str:
    found = re.search(r'<p class="summary">(.*?):', page, re.S)
    return " ".join(found.group(1).split()) if found else "no summary"


def page_figures(url: str, admin: Redis, jobs: int, views: int) -> None:
    admin.flushall()
    started = time.perf_counter()
    fill(admin, jobs, FAILED_QUEUE, failed=True)
    print(f"fill: {jobs:,} failed jobs in {time.perf_counter() - started:.0f} s")
    client = create_app(settings(url), testing=True).test_client()
    path = f"/queues/{FAILED_QUEUE}/failed"
    pages: list[str] = []
    for view in range(1, views + 2):
        if view == views + 1:
            fill(admin, 100, FAILED_QUEUE, failed=True)
        began = time.perf_counter()
        command_s, cpu_s, commands = redis_costs(admin, lambda: pages.append(client.get(path, headers=HTML).text))
        wall = time.perf_counter() - began
        name = f"view {view}" if view <= views else "after 100 new failures"
        print(
            f"failed page, {name}: {wall * 1000:4.0f} ms wall, Redis {command_s * 1000:4.1f} ms command time "
            f"/ {cpu_s * 1000:3.0f} ms CPU, {commands:,} commands; summary: {summary_label(pages[-1])}"
        )
    ids = cast(list[bytes], admin.zrevrange(f"rq:failed:{FAILED_QUEUE}", 0, 9_999))
    began = time.perf_counter()
    command_s, cpu_s, commands = redis_costs(admin, lambda: JobLister(admin).rows([i.decode() for i in ids], True))
    wall = time.perf_counter() - began
    print(
        f"previous summary (10,000 rows read per view): {wall * 1000:.0f} ms wall, Redis {command_s * 1000:.1f} ms "
        f"command time / {cpu_s * 1000:.0f} ms CPU, {commands:,} commands"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--part", choices=("empty", "page", "both"), default="both")
    args = parser.parse_args()
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    with throwaway_redis() as (server, admin):
        print(f"redis-server {admin.info('server')['redis_version']}")
        if args.part != "page":
            empty_figures(server.url, admin, args.jobs)
        if args.part != "empty":
            page_figures(server.url, admin, args.jobs, args.views)


if __name__ == "__main__":
    main()
