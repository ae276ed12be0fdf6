"""The dashboard's JSON reads and retry-all over HTTP: `rqscope serve` against rq-dashboard 0.9.0's own server.

State: 50 queues, 100k queued, 20k finished, 200 started, 100 workers (as bench/scrape.py), plus a
20k-job failed registry on one queue. rqscope serve (gunicorn, 1 s snapshot cache) runs from this
environment, rq-dashboard's console script from the peers' virtualenv (bench/peers.py). Measures, in one run:
- the queues overview JSON and the workers list;
- the failed list's first, middle and last page at 8 and 100 per page;
each request alternating between the two servers, 1.2 s apart, on a new connection (so rqscope's cache has
always expired), p50 and mean of --rounds and the Redis commands of one request; then
- retry-all of 10k failed jobs: time, Redis commands, and jobs lost or duplicated.

Run: python -m bench.dashboard [--rounds 7]   (builds the peers' venv on first run)
"""

from __future__ import annotations

import argparse
import json
import time

from redis import Redis

from bench.common import count_commands, throwaway_redis
from bench.fill import fill_state
from bench.peers import ready_peers, rq_dashboard_command
from bench.servers import Reply, Server, Summary, alternate, cold_gap, rqscope_serve, timed_request

PEER = "rq-dashboard"
FAILED_QUEUE = "queue-000"
RETRY_QUEUE = "retry-me"


def routes(per_page: int, page: int) -> dict[str, tuple[str, str]]:
    """(rqscope path, rq-dashboard path) per measured read."""
    return {
        "queues overview": ("/api/queues", "/0/data/queues.json"),
        "workers": ("/api/workers", "/0/data/workers.json"),
    } | {
        f"failed page {label} ({per_page}/page)": (
            f"/api/queues/{FAILED_QUEUE}/jobs?state=failed&per_page={per_page}&page={number}&order=oldest",
            f"/0/data/jobs/{FAILED_QUEUE}/failed/{per_page}/asc/{number}.json",
        )
        for label, number in (("first", 1), ("middle", page // 2), ("last", page))
    }


def _ok(reply: Reply) -> Reply:
    assert reply.status == 200, reply.body[:300]
    return reply


def page_note(ours: Reply, theirs: Reply) -> str:
    """Empty when rq-dashboard's page starts with rqscope's jobs in the same order; else what differs."""
    our_ids = [j["id"] for j in json.loads(ours.body)["jobs"]]
    their_ids = [j["id"] for j in json.loads(theirs.body)["jobs"]]
    if their_ids[: len(our_ids)] != our_ids:
        return "  (the pages list different jobs)"
    return f"  ({PEER} returned {len(their_ids):,} jobs)" if len(their_ids) != len(our_ids) else ""


def read_figures(ours: Server, theirs: Server, admin: Redis, rounds: int, gap: float) -> None:
    total = int(admin.zcard(f"rq:failed:{FAILED_QUEUE}"))
    print(f"reads over HTTP, alternating {gap} s apart, {rounds} requests each; p50 (mean), Redis commands per request")
    print(f"{'read':<34} {'rqscope':>20} {PEER:>22} {'ratio p50':>10}  commands")
    for per_page in (8, 100):
        for name, (our_path, their_path) in routes(per_page, -(-total // per_page)).items():
            if name in ("queues overview", "workers") and per_page == 100:
                continue
            requests = {
                "rqscope": lambda p=our_path: _ok(timed_request(ours.url, p)),
                PEER: lambda p=their_path: _ok(timed_request(theirs.url, p)),
            }
            commands: dict[str, int] = {}
            replies: dict[str, Reply] = {}
            for server, send in requests.items():  # untimed: warms up, counts commands, checks the answers agree
                time.sleep(gap)
                commands[server], reply = count_commands(admin, send)
                assert isinstance(reply, Reply)
                replies[server] = reply
            note = page_note(replies["rqscope"], replies[PEER]) if "failed" in name else ""
            seconds = {server: Summary.of(s) for server, s in alternate(requests, rounds, gap).items()}
            ours_s, theirs_s = seconds["rqscope"], seconds[PEER]
            print(
                f"{name:<34} {_ms(ours_s):>20} {_ms(theirs_s):>22} {theirs_s.p50 / ours_s.p50:9.1f}x  "
                f"{commands['rqscope']:,} / {commands[PEER]:,}{note}"
            )


def _ms(summary: Summary) -> str:
    return f"{summary.p50 * 1000:.1f} ({summary.mean * 1000:.1f}) ms"


def retry_figures(ours: Server, theirs: Server, admin: Redis, jobs: int) -> None:
    results = {}
    for name, action in (
        (PEER, lambda: _ok(timed_request(theirs.url, f"/requeue/{RETRY_QUEUE}", "POST", b""))),
        ("rqscope", lambda: _ok(timed_request(ours.url, f"/api/queues/{RETRY_QUEUE}/retry", "POST", b"{}"))),
    ):
        _clear(admin)
        fill_state(admin, queues=0, queued=0, failed=jobs, finished=0, started=0, workers=0, failed_queue=RETRY_QUEUE)
        admin.sadd("rq:queues", f"rq:queue:{RETRY_QUEUE}")
        ids = {i.decode() for i in admin.zrange(f"rq:failed:{RETRY_QUEUE}", 0, -1)}
        commands, reply = count_commands(admin, action)
        assert isinstance(reply, Reply)
        queued = [i.decode() for i in admin.lrange(f"rq:queue:{RETRY_QUEUE}", 0, -1)]
        lost = len(ids - set(queued)) + int(admin.zcard(f"rq:failed:{RETRY_QUEUE}"))
        duplicated = len(queued) - len(set(queued))
        results[name] = reply.seconds
        print(
            f"retry-all {jobs:,} failed over HTTP: {name:<12} {reply.seconds:7.2f} s  {commands:7,} commands  "
            f"lost {lost}  duplicated {duplicated}"
        )
    _clear(admin)
    print(f"retry-all ratio {PEER} / rqscope: {results[PEER] / results['rqscope']:.1f}x")


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
    parser.add_argument("--rounds", type=int, default=7, help="timed requests of each server per read")
    parser.add_argument("--gap", type=cold_gap, default=1.2, help="seconds between the starts of two requests")
    parser.add_argument("--retry-jobs", type=int, default=10_000)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts (for a quick run)")
    args = parser.parse_args()
    peers, jobs = ready_peers(PEER, args.scale)
    with throwaway_redis() as (server, admin):
        fill_state(admin, queues=50, workers=100, failed_queue=FAILED_QUEUE, **jobs)
        dashboard = Server(PEER, lambda port: rq_dashboard_command(peers, server.url, port), peers.environ(), "/")
        with rqscope_serve(server.url) as ours, dashboard as theirs:
            read_figures(ours, theirs, admin, args.rounds, args.gap)
            retry_figures(ours, theirs, admin, args.retry_jobs)


if __name__ == "__main__":
    main()
