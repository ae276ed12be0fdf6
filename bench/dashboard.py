"""The dashboard's JSON reads and retry-all: rqscope against rq-dashboard 0.9.0 on the same Redis state.

State: 50 queues, 100k queued, 20k finished, 200 started, 100 workers (as bench/scrape.py), plus a
20k-job failed registry on one queue. Measures, in one run, with both apps in-process:
- the queues overview JSON and the workers list;
- the failed list's first, middle and last page at 8 and 100 per page;
- retry-all of 10k failed jobs: time, Redis commands, and jobs lost or duplicated.

Run: python -m bench.dashboard [--rounds 7]   (needs the bench extra: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from flask.testing import FlaskClient
from redis import Redis
from rqscope.monitor.settings import Settings
from rqscope.web import create_app

from bench.common import count_commands, machine, median, throwaway_redis
from bench.fill import fill_state

FAILED_QUEUE = "queue-000"
RETRY_QUEUE = "retry-me"


def rqscope_client(url: str) -> FlaskClient:
    settings = Settings(redis_url=url, snapshot_ttl=1e-9, task_modules=("rqscope.tasks.examples",))
    return create_app(settings, testing=True).test_client()


def rq_dashboard_client(url: str) -> FlaskClient:
    os.environ.update(RQ_DASHBOARD_REDIS_URL=url, RQ_DASHBOARD_URL_PREFIX="")
    from rq_dashboard.app import create_app as dashboard_app

    return dashboard_app().test_client()  # type: ignore[no-any-return]


def routes(per_page: int, page: int) -> dict[str, tuple[str, str]]:
    """(rqscope path, rq-dashboard path) per measured read."""
    return {
        "queues overview": ("/api/queues", "/0/data/queues.json"),
        "workers": ("/api/workers", "/0/data/workers.json"),
    } | {
        f"failed page {label} ({per_page}/page)": (
            f"/api/queues/{FAILED_QUEUE}/jobs?state=failed&per_page={per_page}&page={number}&order=newest",
            f"/0/data/jobs/{FAILED_QUEUE}/failed/{per_page}/desc/{number}.json",
        )
        for label, number in (("first", 1), ("middle", page // 2), ("last", page))
    }


def timed(get: Callable[[], object], rounds: int) -> float:
    get()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        get()
        samples.append(time.perf_counter() - started)
    return median(samples)


def read_figures(ours: FlaskClient, theirs: FlaskClient, admin: Redis, rounds: int) -> None:
    total = int(admin.zcard(f"rq:failed:{FAILED_QUEUE}"))
    print(f"{'read':<34} {'rqscope':>10} {'rq-dashboard':>13} {'ratio':>7}   commands (rqscope / rq-dashboard)")
    for per_page in (8, 100):
        for name, (our_path, their_path) in routes(per_page, -(-total // per_page)).items():
            if name in ("queues overview", "workers") and per_page == 100:
                continue
            ours_get = lambda p=our_path: _ok(ours.get(p))  # noqa: E731
            theirs_get = lambda p=their_path: _ok(theirs.get(p))  # noqa: E731
            ours_s, theirs_s = timed(ours_get, rounds), timed(theirs_get, rounds)
            ours_n, _ = count_commands(admin, ours_get)
            theirs_n, _ = count_commands(admin, theirs_get)
            print(f"{name:<34} {ours_s * 1000:8.1f}ms {theirs_s * 1000:11.1f}ms {theirs_s / ours_s:6.1f}x"
                  f"   {ours_n} / {theirs_n}")  # fmt: skip


def _ok(response: object) -> object:
    assert getattr(response, "status_code", 0) == 200, getattr(response, "data", b"")[:300]
    return response


def retry_figures(ours: FlaskClient, theirs: FlaskClient, admin: Redis, jobs: int) -> None:
    results = {}
    for name, action in (
        ("rq-dashboard", lambda: _ok(theirs.post(f"/requeue/{RETRY_QUEUE}"))),
        ("rqscope", lambda: _ok(ours.post(f"/api/queues/{RETRY_QUEUE}/retry", json={}))),
    ):
        _clear(admin)
        fill_state(admin, queues=0, queued=0, failed=jobs, finished=0, started=0, workers=0, failed_queue=RETRY_QUEUE)
        admin.sadd("rq:queues", f"rq:queue:{RETRY_QUEUE}")
        ids = {i.decode() for i in admin.zrange(f"rq:failed:{RETRY_QUEUE}", 0, -1)}
        started = time.perf_counter()
        commands, _ = count_commands(admin, action)
        seconds = time.perf_counter() - started
        queued = [i.decode() for i in admin.lrange(f"rq:queue:{RETRY_QUEUE}", 0, -1)]
        lost = len(ids - set(queued)) + int(admin.zcard(f"rq:failed:{RETRY_QUEUE}"))
        duplicated = len(queued) - len(set(queued))
        results[name] = seconds
        print(f"retry-all {jobs:,} failed: {name:<12} {seconds:7.2f} s  {commands:7,} commands  "
              f"lost {lost}  duplicated {duplicated}")  # fmt: skip
    _clear(admin)
    print(f"retry-all ratio: {results['rq-dashboard'] / results['rqscope']:.1f}x")


def _clear(admin: Redis) -> None:
    keys = admin.keys(f"rq:*{RETRY_QUEUE}*")
    pipe = admin.pipeline(transaction=False)
    for job_id in admin.lrange(f"rq:queue:{RETRY_QUEUE}", 0, -1) + admin.zrange(f"rq:failed:{RETRY_QUEUE}", 0, -1):
        pipe.delete(f"rq:job:{job_id.decode()}")
    if keys:
        pipe.delete(*keys)
    pipe.srem("rq:queues", f"rq:queue:{RETRY_QUEUE}")
    pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--retry-jobs", type=int, default=10_000)
    args = parser.parse_args()
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    with throwaway_redis() as (server, admin):
        fill_state(admin, queues=50, queued=100_000, failed=20_000, finished=20_000, started=200, workers=100,
                   failed_queue=FAILED_QUEUE)  # fmt: skip
        ours, theirs = rqscope_client(server.url), rq_dashboard_client(server.url)
        read_figures(ours, theirs, admin, args.rounds)
        retry_figures(ours, theirs, admin, args.retry_jobs)


if __name__ == "__main__":
    main()
