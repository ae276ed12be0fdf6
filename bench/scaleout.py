"""Scale out: /metrics of one sidecar watching 4 Redis instances against one watching 1, then one instance paused.

Four redis-servers on loopback hold the same RQ state: bench/fill.py's 50 queues (100k queued, 20k failed,
20k finished, 200 started jobs, 100 workers; --quick: 2% of the jobs) written into the first, the others
started from its dump. Two `rqscope serve` sidecars (gunicorn, default workers and threads, 1 s snapshot
cache) run side by side, one watching `a` and one watching `a,b,c,d`; scrapes alternate between them, 1.2 s
apart on new connections, so each finds its cache expired. Printed: each one's p50 and p95, the ratio of
4 instances to 1, the ratio to 4x the single (what reading them one after the other would cost), and the CPU
one scrape costs the sidecar and each redis-server.

Then a third sidecar watches all four with RQSCOPE_REDIS_TIMEOUT=1 and RQSCOPE_REDIS_CONNECT_TIMEOUT=1, and
`d` is paused with DEBUG SLEEP: /metrics, a healthy instance's overview (`/?redis=b`) and /api/instances
are timed before the pause (1.2 s apart) and during it (from one cache lifetime after its start, 3.6 s apart:
a read that waits for `d` still leaves the next one an expired cache). Every reply during the pause must show
`d` down and the others up.

With --prefixes, a third sidecar watches the four each under its own RQ key prefix (a sidecar process per prefix);
with --per-instance instead, a third sidecar reads each of the four, all under one prefix, in a process of its own
(RQSCOPE_PROCESS_PER_INSTANCE).

Run: python -m bench.scaleout [--rounds 20] [--pause-rounds 5] [--quick] [--budget 300] [--prefixes] [--per-instance]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

from redis import Redis, RedisError
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.settings import DEFAULT_SNAPSHOT_TTL

from bench.common import machine, wait_until
from bench.instances import NAMES, cpu_seconds, redis_cpu_seconds, same_state, sidecar, up_by_instance
from bench.peers import HEADLINE_JOBS
from bench.scrape import queued_total
from bench.servers import Reply, Server, Summary, alternate, cold_gap, timed_request

HEALTHY, PAUSED = "b", "d"
PREFIXES = ("rq", "pb", "pc", "pd")  # --prefixes: a, b, c and d each under its own RQ key prefix
FOUR_PREFIXES = "4 instances, 4 prefixes"
PER_INSTANCE = "4 instances, a process each"  # --per-instance: RQSCOPE_PROCESS_PER_INSTANCE
# the optional sidecars: what they are, as the report names them
EXTRAS = {FOUR_PREFIXES: "a sidecar process per prefix", PER_INSTANCE: "RQSCOPE_PROCESS_PER_INSTANCE, one prefix"}
TIMEOUT = 1.0  # RQSCOPE_REDIS_TIMEOUT and RQSCOPE_REDIS_CONNECT_TIMEOUT of the paused run
BOUND = 2 * TIMEOUT + 0.5  # what web/app.py gives the fan-out: connect + reply timeouts + 0.5 s
WARM_UP_ROUNDS = 3  # untimed: imports, connections and templates in both gunicorn workers
IDLE_SECONDS = 5.0  # measures the CPU sidecars and redis-servers use without scrapes (publications, timers)


@dataclass(frozen=True)
class Paused:
    """The paused run: seconds per read before and during the pause, and what the replies got wrong."""

    before: dict[str, list[float]]
    during: dict[str, list[float]]
    problems: list[str]
    seconds: int  # the DEBUG SLEEP


PAUSE_PATHS = {
    "GET /metrics": "/metrics",
    f"GET /?redis={HEALTHY}": f"/?redis={HEALTHY}",
    "GET /api/instances": "/api/instances",
}


@dataclass(frozen=True)
class FanIn:
    """Each sidecar's scrape time, and the CPU one scrape cost: the sidecar's, and one instance's redis-server's."""

    scrapes: dict[str, Summary]
    sidecar_cpu: dict[str, float]
    redis_cpu: float


def fan_in(
    servers: list[EmbeddedRedis],
    rounds: int,
    gap: float,
    deadline: float,
    prefixes: bool = False,
    per_instance: bool = False,
) -> FanIn:
    """/metrics of a sidecar watching `a` and of one watching all four (and, with `prefixes`, of one watching each
    under its own RQ key prefix: a sidecar process per prefix; with `per_instance`, of one reading each instance in
    a process of its own), alternating."""
    with ExitStack() as started:
        sidecars = {"1 instance": started.enter_context(sidecar(servers[:1]))}
        sidecars["4 instances"] = started.enter_context(sidecar(servers))
        if prefixes:
            sidecars[FOUR_PREFIXES] = started.enter_context(sidecar(servers, PREFIXES))
        if per_instance:
            sidecars[PER_INSTANCE] = started.enter_context(sidecar(servers, RQSCOPE_PROCESS_PER_INSTANCE="1"))
        scrapes = {name: partial(timed_request, s.url, "/metrics", timeout=60) for name, s in sidecars.items()}
        single = scrapes["1 instance"]().body
        for name in list(sidecars)[1:]:  # a sidecar per other prefix answers a few seconds after its front
            wait_until(lambda n=name: up_by_instance(scrapes[n]().body) == dict.fromkeys(NAMES, 1.0), 60, 0.5)
            every = scrapes[name]().body
            if up_by_instance(every) != dict.fromkeys(NAMES, 1.0) or queued_total("rqscope", every) != 4 * queued_total(
                "rqscope", single
            ):
                raise RuntimeError(f"the sidecar of {name} does not see 4 x the state: up {up_by_instance(every)}")
        alternate(scrapes, WARM_UP_ROUNDS, gap)
        idle = cpu_used(sidecars, servers, IDLE_SECONDS)  # their work between scrapes, left out below
        started, before = time.monotonic(), cpu_used(sidecars, servers)
        seconds = alternate(scrapes, rounds, gap, deadline)
        busy, after = time.monotonic() - started, cpu_used(sidecars, servers)
        count = len(seconds["1 instance"])
        if not count:
            raise RuntimeError("the time budget ran out before the first timed round")
        cpu = {k: (after[k] - before[k] - idle[k] * busy / IDLE_SECONDS) / count for k in after}
    readers = len(sidecars) - 1  # the sidecars that read b, c and d
    return FanIn({name: Summary.of(samples) for name, samples in seconds.items()}, cpu, cpu.pop("redis") / 3 / readers)


def cpu_used(sidecars: dict[str, Server], servers: list[EmbeddedRedis], over: float = 0.0) -> dict[str, float]:
    """CPU seconds each sidecar and b, c and d's redis-servers (read by the 4-instance one only) have used, or
    used over the next `over` seconds."""
    now = {name: cpu_seconds(s) for name, s in sidecars.items()} | {"redis": sum(map(redis_cpu_seconds, servers[1:]))}
    if not over:
        return now
    time.sleep(over)
    return {k: v - now[k] for k, v in cpu_used(sidecars, servers).items()}


@contextmanager
def paused(server: EmbeddedRedis, seconds: int) -> Iterator[float]:
    """DEBUG SLEEP `seconds` on `server` from a thread; yields when it ends (time.monotonic()), then waits for it."""
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
        yield started + seconds
    finally:
        thread.join(seconds + 30)
        client.close()


def recorded(url: str, path: str, into: list[Reply]) -> Callable[[], Reply]:
    """A timed request that also keeps its reply."""

    def send() -> Reply:
        into.append(timed_request(url, path, timeout=60))
        return into[-1]

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
    sent: dict[str, list[Reply]] = {name: [] for name in PAUSE_PATHS}
    with sidecar(servers, **timeouts) as serve:
        reads = {name: recorded(serve.url, path, sent[name]) for name, path in PAUSE_PATHS.items()}
        alternate(reads, WARM_UP_ROUNDS, gap)
        before = alternate(reads, rounds, gap)
        problems = [p for name, got in sent.items() for r in got for p in instance_problems(name, r, None)]
        for got in sent.values():
            got.clear()
        # during the pause a read ends up to BOUND after it starts; the next read, a cache lifetime after
        # that, finds every snapshot expired, as each read before the pause did
        slow_gap = max(gap, BOUND + DEFAULT_SNAPSHOT_TTL + 0.1)
        seconds = math.ceil(DEFAULT_SNAPSHOT_TTL + rounds * len(reads) * slow_gap + BOUND + 2)
        with paused(servers[NAMES.index(PAUSED)], seconds) as until:
            time.sleep(DEFAULT_SNAPSHOT_TTL + 0.1)  # no snapshot read before the pause is served during it
            during = alternate(reads, rounds, slow_gap, deadline=until - BOUND - 1)
    problems += [p for name, got in sent.items() for r in got for p in instance_problems(name, r, PAUSED)]
    return Paused(before, during, problems, seconds)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def report_fan_in(run: FanIn, gap: float) -> None:
    one, four = run.scrapes["1 instance"], run.scrapes["4 instances"]
    print(f"\n/metrics over HTTP, cold cache, alternating {gap} s apart, {one.count} scrapes each")
    print(f"{'sidecar':<28} {'p50':>9} {'p95':>9} {'mean':>9}")
    for name, s in (("watching 1 instance (a)", one), ("watching 4 instances (a-d)", four)):
        print(f"{name:<28} {ms(s.p50):>6} ms {ms(s.p95):>6} ms {ms(s.mean):>6} ms")
    print(f"ratio 4 instances / 1: p50 {four.p50 / one.p50:.2f}x, p95 {four.p95 / one.p95:.2f}x")
    print(
        f"ratio 4 instances / (4 x 1), the sum if read one after the other: "
        f"p50 {four.p50 / (4 * one.p50):.2f}, p95 {four.p95 / (4 * one.p95):.2f}"
    )
    for name, what in EXTRAS.items():
        if name not in run.scrapes:
            continue
        spread = run.scrapes[name]
        print(
            f"{name:<28} {ms(spread.p50):>6} ms {ms(spread.p95):>6} ms {ms(spread.mean):>6} ms"
            f"   ({what}; ratio to 1 instance: p50 {spread.p50 / one.p50:.2f}x, p95 {spread.p95 / one.p95:.2f}x; "
            f"CPU per scrape {ms(run.sidecar_cpu[name])} ms)"
        )
    single, every = run.sidecar_cpu["1 instance"], run.sidecar_cpu["4 instances"]
    print(
        f"CPU per scrape, without what they use between scrapes: sidecar {ms(single)} ms (1 instance), "
        f"{ms(every)} ms (4 instances); each instance's "
        f"redis-server {ms(run.redis_cpu)} ms; a 4-instance scrape takes {ms(every + 4 * run.redis_cpu)} ms of CPU "
        f"on {os.cpu_count()} cores"
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
            f'every reply during the pause: rqscope_redis_up{{redis="{PAUSED}"}} 0 and the other three 1 '
            f"in /metrics, {PAUSED} down and the others up in /api/instances"
        )
    return not run.problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="timed scrapes of each sidecar")
    parser.add_argument("--pause-rounds", type=int, default=5, help="timed rounds of 3 reads, before and during")
    parser.add_argument("--gap", type=cold_gap, default=1.2, help="seconds between the starts of two requests")
    parser.add_argument("--quick", action="store_true", help="2%% of the jobs, 4 scrapes and 2 paused rounds")
    parser.add_argument("--budget", type=float, default=300, help="seconds for the scrapes of both sidecars")
    # the state is written under one prefix, or under four: one of the two
    spread = parser.add_mutually_exclusive_group()
    spread.add_argument("--prefixes", action="store_true", help="also a sidecar watching each under its own prefix")
    spread.add_argument("--per-instance", action="store_true", help="also a sidecar reading each in its own process")
    args = parser.parse_args(argv)
    scale, rounds, pause_rounds = (0.02, 4, 2) if args.quick else (1.0, args.rounds, args.pause_rounds)
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    jobs = {k: int(n * scale) for k, n in HEADLINE_JOBS.items()}
    with same_state(jobs, PREFIXES if args.prefixes else ("rq",)) as servers:
        deadline = time.monotonic() + args.budget
        report_fan_in(fan_in(servers, rounds, args.gap, deadline, args.prefixes, args.per_instance), args.gap)
        return 0 if report_pause(pause_one(servers, pause_rounds, args.gap)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
