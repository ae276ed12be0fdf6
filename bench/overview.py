"""The overview page's server time over HTTP at 50 queues and 24 h of chart history, cold cache (goal: 50 ms).

State: bench/fill.py's 50 queues (100k queued, 20k finished, 20k failed, 200 started, 100 workers), and
history as the product writes it: 24 h of per-minute run rollups for one task per queue (five outcomes,
three histogram buckets each), the last 23 hours folded into hourly hashes by the leader's own script,
six more days of hourly hashes, and a depth and latency point a minute for every queue. `rqscope serve`
(gunicorn, 1 s snapshot cache) answers each request on a new connection, 1.2 s apart, so the snapshot
cache has always expired. The overview has no peer to compare with: the figure is printed against its goal,
with the chart pages and series beside it.

Run: python -m bench.overview [--rounds 15]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from redis import Redis
from redis.typing import EncodableT, FieldT
from rqscope.monitor.alerts.keys import LEASE_KEY
from rqscope.monitor.alerts.lease import Lease
from rqscope.monitor.history import MinuteRecorder
from rqscope.monitor.queue_history import history_key
from rqscope.monitor.rollups import HOURLY_KEY_TEMPLATE, HOURLY_TTL_SECONDS
from rqscope.monitor.snapshot import RedisState, Snapshot
from rqscope.tasks.metrics import BUCKET_LABELS, METRICS_KEY, ROLLUP_KEY_TEMPLATE, ROLLUP_TTL_SECONDS, SEP, total_field

from bench.common import count_commands, machine, throwaway_redis
from bench.fill import fill_state
from bench.servers import Summary, alternate, cold_gap, rqscope_serve, timed_request

GOAL_SECONDS = 0.050
MINUTES = 24 * 60
WEEK_HOURS = 7 * 24


OUTCOME_RUNS = {"success": 40, "failure": 3, "retried": 1, "timeout": 1, "killed": 1}


def totals(pairs: int, scale: int) -> dict[FieldT, EncodableT]:
    """A rollup's per-outcome totals over its (task, queue) pairs, as the workers' writes keep them."""
    return {total_field(o): str(n * pairs * scale) for o, n in OUTCOME_RUNS.items()}


def rollup(task: str, queue: str, scale: int) -> dict[FieldT, EncodableT]:
    """One minute (or hour, scaled) of one task's runs: every outcome, a sum and three buckets."""
    fields = {f"o:{o}": n for o, n in OUTCOME_RUNS.items()}
    fields |= {f"b:{BUCKET_LABELS[i]}": n for i, n in ((3, 20), (5, 20), (9, 6))}
    out: dict[FieldT, EncodableT] = {f"{task}{SEP}{queue}{SEP}{kind}": str(n * scale) for kind, n in fields.items()}
    out[f"{task}{SEP}{queue}{SEP}sum"] = repr(13.7 * scale)
    return out


def fill_history(redis: Redis, queues: list[str], now: float) -> None:
    """24 h of minutes, a week of hours and a day of queue points, written in pipelines."""
    minute_now = int(now // 60)
    pipe = redis.pipeline(transaction=False)
    for minute in range(minute_now - MINUTES + 1, minute_now + 1):
        key = ROLLUP_KEY_TEMPLATE.format(minute=minute)
        for index, queue in enumerate(queues):
            pipe.hset(key, mapping=rollup(f"task-{index % 20:02d}", queue, 1))
        pipe.hset(key, mapping=totals(len(queues), 1))
        pipe.expire(key, ROLLUP_TTL_SECONDS)
        for queue in queues:
            pipe.rpush(history_key(queue), f"{minute} {(minute * 7) % 500} {(minute % 90) / 3:.3f}")
        if minute % 60 == 0:
            pipe.execute()
    for index, queue in enumerate(queues):  # the totals since metrics began, as the Tasks page reads them
        pipe.hset(METRICS_KEY, mapping=rollup(f"task-{index % 20:02d}", queue, WEEK_HOURS * 60))
    hour_now = int(now // 3600)
    for hour in range(hour_now - WEEK_HOURS + 1, hour_now - 24):  # older than the minutes: hours only
        key = HOURLY_KEY_TEMPLATE.format(hour=hour)
        pipe.hset(key, "compacted", "1")
        for index, queue in enumerate(queues):
            pipe.hset(key, mapping=rollup(f"task-{index % 20:02d}", queue, 60))
        pipe.hset(key, mapping=totals(len(queues), 60))
        pipe.expire(key, HOURLY_TTL_SECONDS)
    pipe.execute()
    # the leader's own step folds the hours the minutes cover
    lease = Lease(redis, "bench", 3600.0, 60.0)
    lease.renew()
    MinuteRecorder(redis, lease, lambda: Snapshot(now, RedisState(up=True)), clock=lambda: now).step()
    redis.delete(LEASE_KEY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--gap", type=cold_gap, default=1.2, help="seconds between requests (cold cache)")
    args = parser.parse_args()
    with throwaway_redis() as (server, redis):
        queues = fill_state(redis, queues=50)
        started = time.perf_counter()
        fill_history(redis, queues, time.time())
        print(
            f"state: 50 queues, 24 h of minute rollups, 7 d of hours ({time.perf_counter() - started:.0f} s to write)"
        )
        print(f"redis memory: {redis.info('memory')['used_memory_human']}; {machine()}")
        with rqscope_serve(server.url) as serve:
            paths = {
                "overview (GET /)": "/",
                "runs 24 h (GET /api/series/runs?window=24h)": "/api/series/runs?window=24h",
                "runs 7 d (GET /api/series/runs?window=7d)": "/api/series/runs?window=7d",
                "queue page, 24 h (GET /queues/queue-000?window=24h)": "/queues/queue-000?window=24h",
                "task page, 7 d (GET /tasks/task-00?window=7d)": "/tasks/task-00?window=7d",
            }
            for path in paths.values():  # the first request of each imports templates: not what is measured
                timed_request(serve.url, path)
            seconds = alternate(
                {name: partial(timed_request, serve.url, path) for name, path in paths.items()},
                args.rounds,
                args.gap,
            )
            time.sleep(args.gap)
            commands, _ = count_commands(redis, lambda: timed_request(serve.url, "/"))
    print(f"{'read':<55} {'p50':>8} {'p95':>8} {'mean':>8}")
    for name, samples in seconds.items():
        summary = Summary.of(samples)
        print(f"{name:<55} {summary.p50 * 1000:7.1f}ms {summary.p95 * 1000:7.1f}ms {summary.mean * 1000:7.1f}ms")
    overview = Summary.of(seconds["overview (GET /)"])
    verdict = "meets" if overview.p50 <= GOAL_SECONDS else "misses"
    print(
        f"overview p50 {overview.p50 * 1000:.1f} ms {verdict} the {GOAL_SECONDS * 1000:.0f} ms goal "
        f"({args.rounds} cold requests; {commands} Redis commands per request, background work included)"
    )


if __name__ == "__main__":
    main()
