"""Scale out: /metrics of one sidecar watching 4 Redis instances against one watching 1, then one instance paused.

Four redis-servers on loopback hold the same RQ state: bench/fill.py's 50 queues (100k queued, 20k failed,
20k finished, 200 started jobs, 100 workers; --quick: 2% of the jobs) written into the first, the others
started from its dump. Two `rqscope serve` sidecars (gunicorn, default workers and threads, 1 s snapshot
cache) run side by side, one watching `a` and one watching `a,b,c,d`; scrapes alternate between them, 1.2 s
apart on new connections, so each finds its cache expired. Printed: each one's p50 and p95, the ratio of
4 instances to 1, and the ratio to 4x the single (what reading them one after the other would cost).

Then a third sidecar watches all four with RQSCOPE_REDIS_TIMEOUT=1 and RQSCOPE_REDIS_CONNECT_TIMEOUT=1, and
`d` is paused with DEBUG SLEEP: /metrics, a healthy instance's overview (`/?redis=b`) and /api/instances
are timed before and during the pause, every reply during it must show `d` down and the others up.

Run: python -m bench.scaleout [--rounds 20] [--pause-rounds 6] [--quick] [--budget 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis, RedisError
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.settings import DEFAULT_SNAPSHOT_TTL

from bench.common import machine, redis_binary, wait_until
from bench.fill import fill_state
from bench.peers import HEADLINE_JOBS
from bench.scrape import queued_total
from bench.servers import Reply, Server, Summary, alternate, cold_gap, rqscope_serve, timed_request

NAMES = ("a", "b", "c", "d")
HEALTHY, PAUSED = "b", "d"
TIMEOUT = 1.0  # RQSCOPE_REDIS_TIMEOUT and RQSCOPE_REDIS_CONNECT_TIMEOUT of the paused run
BOUND = 2 * TIMEOUT + 0.5  # what web/app.py gives the fan-out: connect + reply timeouts + 0.5 s
WARM_UP_ROUNDS = 3  # untimed: imports, connections and templates in both gunicorn workers


@dataclass(frozen=True)
class Paused:
    """The paused run: seconds per read before and during the pause, and what the replies got wrong."""

    before: dict[str, list[float]]
    during: dict[str, list[float]]
    problems: list[str]
    seconds: int  # the DEBUG SLEEP
    checked: int  # replies during the pause whose instances were checked
    stale: int  # replies within one snapshot cache lifetime of the pause's start, not checked


PAUSE_PATHS = {
    "GET /metrics": "/metrics",
    f"GET /?redis={HEALTHY}": f"/?redis={HEALTHY}",
    "GET /api/instances": "/api/instances",
}


@contextmanager
def same_state(jobs: dict[str, int]) -> Iterator[list[EmbeddedRedis]]:
    """Four redis-servers (DEBUG allowed from loopback) with one RQ state: the first filled, the rest from its dump."""
    servers = [EmbeddedRedis(binary=redis_binary(), extra_args=("--enable-debug-command", "local")) for _ in NAMES]
    try:
        first = servers[0].start()
        admin = Redis.from_url(first.url, socket_timeout=120)
        started = time.perf_counter()
        fill_state(
            admin,
            queues=50,
            workers=100,
            queued=jobs["queued"],
            failed=jobs["failed"],
            finished=jobs["finished"],
            started=jobs["started"],
        )
        admin.save()
        admin.close()
        for server in servers[1:]:
            shutil.copy(Path(first.dir) / "dump.rdb", Path(server.dir) / "dump.rdb")
            server.start(timeout=120)  # it answers once the dump is loaded
        print(
            f"state: 4 x (50 queues, 100 workers, {sum(jobs.values()):,} jobs), "
            f"{time.perf_counter() - started:.0f} s to write and load"
        )
        yield servers
    finally:
        for server in servers:
            server.stop()


def watching(servers: Sequence[EmbeddedRedis]) -> str:
    return ",".join(f"{name}={server.url}" for name, server in zip(NAMES, servers, strict=False))


def sidecar(servers: Sequence[EmbeddedRedis], **env: str) -> Server:
    server = rqscope_serve(watching(servers))
    server.env.update(env)
    return server


def up_by_instance(body: bytes) -> dict[str, float]:
    return {
        s.labels["redis"]: s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == "rqscope_redis_up"
    }


def fan_in(servers: list[EmbeddedRedis], rounds: int, gap: float, deadline: float) -> dict[str, Summary]:
    """/metrics of a sidecar watching `a` and of one watching all four, alternating."""
    with sidecar(servers[:1]) as one, sidecar(servers) as four:
        scrapes = {
            "1 instance": partial(timed_request, one.url, "/metrics", timeout=60),
            "4 instances": partial(timed_request, four.url, "/metrics", timeout=60),
        }
        single, every = scrapes["1 instance"]().body, scrapes["4 instances"]().body
        if up_by_instance(every) != dict.fromkeys(NAMES, 1.0) or queued_total("rqscope", every) != 4 * queued_total(
            "rqscope", single
        ):
            raise RuntimeError(f"the 4-instance sidecar does not see 4 x the state: up {up_by_instance(every)}")
        alternate(scrapes, WARM_UP_ROUNDS, gap)
        seconds = alternate(scrapes, rounds, gap, deadline)
    if not seconds["1 instance"]:
        raise RuntimeError("the time budget ran out before the first timed round")
    return {name: Summary.of(samples) for name, samples in seconds.items()}


@contextmanager
def paused(server: EmbeddedRedis, seconds: int) -> Iterator[tuple[float, float]]:
    """DEBUG SLEEP `seconds` on `server` from a thread; yields when it began and ends (monotonic), then waits."""
    client = Redis.from_url(server.url, socket_timeout=seconds + 30)
    failed: list[BaseException] = []

    def sleep() -> None:
        try:
            client.execute_command("DEBUG", "SLEEP", seconds)
        except BaseException as exc:  # noqa: B036 - reported by the waiting thread
            failed.append(exc)

    def asleep() -> bool:
        if failed:
            raise RuntimeError(f"DEBUG SLEEP failed: {failed[0]}")
        probe = Redis.from_url(server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
        try:
            probe.ping()
            return False
        except RedisError:
            return True
        finally:
            probe.close()

    thread = threading.Thread(target=sleep, daemon=True)
    started = time.monotonic()
    thread.start()
    wait_until(asleep, 5, interval=0.05, what=f"{server.url} paused")
    try:
        yield started, started + seconds
    finally:
        thread.join(seconds + 30)
        client.close()


def recorded(url: str, path: str, into: list[tuple[float, Reply]]) -> Callable[[], Reply]:
    """A timed request that also keeps its reply and when it was sent (time.monotonic())."""

    def send() -> Reply:
        sent = time.monotonic()
        into.append((sent, timed_request(url, path, timeout=60)))
        return into[-1][1]

    return send


def instance_problems(name: str, reply: Reply, paused_name: str | None) -> list[str]:
    """What a reply says wrongly about which instances are up: the paused one down, the others up."""
    expected = {n: n != paused_name for n in NAMES}
    if name == "GET /metrics":
        seen = {n: up == 1.0 for n, up in up_by_instance(reply.body).items()}
    elif name == "GET /api/instances":
        seen = {row["name"]: row["up"] for row in json.loads(reply.body)["instances"]}
    else:
        return []
    return [] if seen == expected else [f"{name}: up {seen}, expected {expected}"]


def pause_one(servers: list[EmbeddedRedis], rounds: int, gap: float) -> Paused:
    """The three reads before and during a pause of `d`, and what any reply got wrong about who is up."""
    timeouts = {"RQSCOPE_REDIS_TIMEOUT": str(TIMEOUT), "RQSCOPE_REDIS_CONNECT_TIMEOUT": str(TIMEOUT)}
    sent: dict[str, list[tuple[float, Reply]]] = {name: [] for name in PAUSE_PATHS}
    with sidecar(servers, **timeouts) as serve:
        reads = {name: recorded(serve.url, path, sent[name]) for name, path in PAUSE_PATHS.items()}
        alternate(reads, WARM_UP_ROUNDS, gap)
        before = alternate(reads, rounds, gap)
        problems = [p for name, got in sent.items() for _, r in got for p in instance_problems(name, r, None)]
        for got in sent.values():
            got.clear()
        # each read waits about TIMEOUT for the paused one; the last round may take BOUND a read and still fit
        seconds = round(rounds * len(reads) * max(gap, TIMEOUT + 0.3) + len(reads) * BOUND + 2)
        with paused(servers[NAMES.index(PAUSED)], seconds) as (began, until):
            during = alternate(reads, rounds, gap, deadline=until - 1 - len(reads) * (BOUND - gap))
    # a read within one cache lifetime of the pause may be served a snapshot taken just before it
    stale = [(name, r) for name, got in sent.items() for at, r in got if at < began + DEFAULT_SNAPSHOT_TTL]
    checked = [(name, r) for name, got in sent.items() for at, r in got if at >= began + DEFAULT_SNAPSHOT_TTL]
    problems += [p for name, r in checked for p in instance_problems(name, r, PAUSED)]
    return Paused(before, during, problems, seconds, len(checked), len(stale))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def report_fan_in(scrapes: dict[str, Summary], gap: float) -> None:
    one, four = scrapes["1 instance"], scrapes["4 instances"]
    print(f"\n/metrics over HTTP, cold cache, alternating {gap} s apart, {one.count} scrapes each")
    print(f"{'sidecar':<28} {'p50':>9} {'p95':>9} {'mean':>9}")
    for name, s in (("watching 1 instance (a)", one), ("watching 4 instances (a-d)", four)):
        print(f"{name:<28} {ms(s.p50):>6} ms {ms(s.p95):>6} ms {ms(s.mean):>6} ms")
    print(f"ratio 4 instances / 1: p50 {four.p50 / one.p50:.2f}x, p95 {four.p95 / one.p95:.2f}x")
    print(
        f"ratio 4 instances / (4 x 1), the sum if read one after the other: "
        f"p50 {four.p50 / (4 * one.p50):.2f}, p95 {four.p95 / (4 * one.p95):.2f}"
    )


def report_pause(run: Paused) -> bool:
    print(
        f"\n{PAUSED} paused by DEBUG SLEEP {run.seconds} s; RQSCOPE_REDIS_TIMEOUT={TIMEOUT:g}, "
        f"RQSCOPE_REDIS_CONNECT_TIMEOUT={TIMEOUT:g} (the fan-out waits at most {BOUND:g} s)"
    )
    print(f"{'read':<22} {'before p50':>10} {'during p50':>10} {'during max':>10} {'added p50':>10} {'added max':>10}")
    worst = 0.0
    for name in PAUSE_PATHS:
        calm, slow = Summary.of(run.before[name]), Summary.of(run.during[name])
        added = max(run.during[name]) - calm.p50
        worst = max(worst, added)
        print(
            f"{name:<22} {ms(calm.p50):>7} ms {ms(slow.p50):>7} ms {ms(max(run.during[name])):>7} ms "
            f"{ms(slow.p50 - calm.p50):>7} ms {ms(added):>7} ms   ({slow.count} during)"
        )
    print(f"the pause added at most {ms(worst)} ms to any read, against a {ms(TIMEOUT)} ms timeout")
    for problem in run.problems:
        print(f"WRONG: {problem}")
    if not run.problems:
        print(
            f'{run.checked} replies during the pause: rqscope_redis_up{{redis="{PAUSED}"}} 0 and the other three 1 '
            f"in /metrics, {PAUSED} down and the others up in /api/instances ({run.stale} sent within the "
            f"{DEFAULT_SNAPSHOT_TTL:g} s snapshot cache of the pause's start not checked)"
        )
    return not run.problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="timed scrapes of each sidecar")
    parser.add_argument(
        "--pause-rounds", type=int, default=6, help="timed rounds of the three reads, before and during"
    )
    parser.add_argument("--gap", type=cold_gap, default=1.2, help="seconds between the starts of two requests")
    parser.add_argument("--quick", action="store_true", help="2%% of the jobs, 4 scrapes and 2 paused rounds")
    parser.add_argument("--budget", type=float, default=300, help="seconds for the scrapes of both sidecars")
    args = parser.parse_args(argv)
    scale, rounds, pause_rounds = (0.02, 4, 2) if args.quick else (1.0, args.rounds, args.pause_rounds)
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    with ExitStack() as stack:
        servers = stack.enter_context(same_state({k: int(n * scale) for k, n in HEADLINE_JOBS.items()}))
        report_fan_in(fan_in(servers, rounds, args.gap, time.monotonic() + args.budget), args.gap)
        return 0 if report_pause(pause_one(servers, pause_rounds, args.gap)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
