"""A full /metrics scrape over HTTP: `rqscope serve` against rq-exporter's own server, on the same Redis state.

Fills one Redis with 50 queues, 100k queued, 20k failed, 20k finished, 200 started jobs and 100 workers
(with --large, then 500 queues and 1,000 workers). Each exporter runs as its users run it: `rqscope serve`
(gunicorn with its default workers and threads, its 1 s snapshot cache) from this environment, rq-exporter's
console script from the peers' virtualenv (bench/peers.py). Scrapes alternate between the two, one every
1.2 s, each on a new connection, so rqscope's cache has always expired when it is scraped. Prints each one's
per-scrape p50 and p95, the ratio, what one scrape costs the Redis server (commands, CPU, the longest single
script), rqscope's in-process scrape (Flask test client, cache off) beside it, and a table row for the README.
`rqscope serve`'s /healthz is timed in the same alternation: with the time an in-process scrape waits for and
reads Redis's replies, it is the floor under any scrape that reads this state, and the highest ratio it allows.

With --churn, every worker's heartbeat and every queue's finished count change before each scrape (outside its
time), so that rqscope parses every worker and queue row again and formats each queue's finished line again: the
worst case for its reuse of what did not change since its last read.

Run: python -m bench.scrape [--rounds 30] [--large] [--churn] [--budget 900]   (builds the peers' venv on first run)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.settings import Settings
from rqscope.web import create_app

from bench.common import CountingConnection, RedisCost, counting_client, redis_cost, throwaway_redis
from bench.fill import fill_state, utc
from bench.peers import PeersEnv, ready_peers, rq_exporter_command
from bench.servers import Reply, Server, Summary, alternate, cold_gap, rqscope_serve, timed_request

PEER = "rq-exporter"
LIVENESS = "rqscope /healthz"
NO_COST = RedisCost(commands=0, cpu_seconds=0.0, script_seconds=0.0, longest_script_seconds=0.0)
T = TypeVar("T")
WARM_UP_ROUNDS = 5  # untimed, measured on the Redis side; enough for both gunicorn workers to warm up
IN_PROCESS_WARM_UP = 20  # imports, connections, the script cache, the reader's parsed rows
# the series in which each exporter reports queued jobs: (family, label naming the state)
QUEUED_SERIES = {"rqscope": ("rqscope_queue_jobs", "state"), PEER: ("rq_jobs", "status")}


def queued_total(name: str, body: bytes) -> int:
    family, label = QUEUED_SERIES[name]
    return int(
        sum(
            s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
            if s.name == family and s.labels.get(label) == "queued"
        )
    )


def typical(costs: list[RedisCost]) -> RedisCost:
    """The fewest commands, the median CPU and script time, and the longest script of any of `costs`."""
    return RedisCost(
        commands=min(c.commands for c in costs),
        cpu_seconds=statistics.median(c.cpu_seconds for c in costs),
        script_seconds=statistics.median(c.script_seconds for c in costs),
        longest_script_seconds=max(c.longest_script_seconds for c in costs),
    )


def warm_up(
    scrapes: Mapping[str, Callable[[], Reply]], admin: Redis, gap: float, change: Callable[[], None]
) -> dict[str, RedisCost]:
    """Untimed rounds, alternating like the timed ones, each scrape measured on the Redis side (after `change`,
    which is not measured)."""
    costs: dict[str, list[RedisCost]] = {name: [] for name in scrapes}
    for _ in range(WARM_UP_ROUNDS):
        for name, scrape in scrapes.items():
            time.sleep(gap)
            change()
            cost, reply = redis_cost(admin, scrape)
            assert isinstance(reply, Reply) and reply.status == 200, f"{name}: {reply}"
            costs[name].append(cost)
    return {name: typical(c) for name, c in costs.items()}


class Churn:
    """Changes every worker's heartbeat and every queue's finished count, in one pipeline, before a scrape."""

    def __init__(self, admin: Redis, on: bool = True) -> None:
        self.admin, self.on = admin, on
        self.workers = sorted(admin.smembers("rq:workers"))
        self.queues = sorted(k.removeprefix(b"rq:queue:") for k in admin.smembers("rq:queues"))

    def change(self) -> None:
        if not self.on:
            return
        pipe = self.admin.pipeline(transaction=False)
        for worker in self.workers:
            pipe.hset(worker, "last_heartbeat", utc(0))
        for queue in self.queues:
            pipe.zadd(b"rq:finished:" + queue, {f"churn-{time.monotonic_ns()}": time.time() + 3600})
        pipe.execute()

    def before(self, scrape: Callable[[], T]) -> Callable[[], T]:
        def changed_then_scraped() -> T:
            self.change()
            return scrape()  # timed on its own: the changes are not part of its time

        return changed_then_scraped


def over_http(
    url: str, admin: Redis, peers: PeersEnv, rounds: int, gap: float, deadline: float, churn: bool = False
) -> dict[str, tuple[Summary, RedisCost]]:
    exporter = Server(PEER, lambda port: rq_exporter_command(peers, url, port), peers.environ(), "/metrics")
    with rqscope_serve(url) as ours, exporter as theirs:
        scrapes = {
            "rqscope": lambda: timed_request(ours.url, "/metrics", timeout=60),
            PEER: lambda: timed_request(theirs.url, "/metrics", timeout=60),
        }
        seen = {name: queued_total(name, scrape().body) for name, scrape in scrapes.items()}
        if len(set(seen.values())) != 1:
            raise RuntimeError(f"the exporters disagree on the state: queued jobs {seen}")
        changes = Churn(admin, churn)
        costs = warm_up(scrapes, admin, gap, changes.change)
        timed = {name: changes.before(scrape) for name, scrape in scrapes.items()}
        # the same server's cheapest answer (no Redis read), for the HTTP and framework part of a scrape
        timed[LIVENESS] = lambda: timed_request(ours.url, "/healthz", timeout=60)
        seconds = alternate(timed, rounds, gap, deadline)
    if not seconds["rqscope"]:
        raise RuntimeError("the time budget ran out before the first timed round")
    return {name: (Summary.of(seconds[name]), costs.get(name, NO_COST)) for name in timed}


def in_process(url: str, admin: Redis, rounds: int, churn: bool = False) -> tuple[Summary, RedisCost, int, Summary]:
    """rqscope's scrape through Flask's test client with the snapshot cache off: no HTTP, no gunicorn. Also how long
    each scrape waited for and read Redis's replies."""
    settings = Settings(redis_url=url, snapshot_ttl=1e-9, task_modules=("rqscope.tasks.examples",))
    client = create_app(settings, redis=counting_client(url), testing=True).test_client()

    def scrape() -> None:
        assert client.get("/metrics").status_code == 200

    change = Churn(admin, churn).change
    for _ in range(IN_PROCESS_WARM_UP):
        scrape()
    costs = []
    for _ in range(WARM_UP_ROUNDS):
        change()
        costs.append(redis_cost(admin, scrape)[0])
    cost = typical(costs)
    before = CountingConnection.sends
    scrape()
    round_trips = CountingConnection.sends - before
    samples, reading = [], []
    for _ in range(rounds):
        change()
        read_before = CountingConnection.reading_seconds
        started = time.perf_counter()
        scrape()
        samples.append(time.perf_counter() - started)
        reading.append(CountingConnection.reading_seconds - read_before)
    return Summary.of(samples), cost, round_trips, Summary.of(reading)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def report(
    state: str,
    http: dict[str, tuple[Summary, RedisCost]],
    local: tuple[Summary, RedisCost, int, Summary],
    gap: float,
) -> str:
    """Print the figures; return the README table row."""
    (ours, our_cost), (theirs, their_cost), (liveness, _) = http["rqscope"], http[PEER], http[LIVENESS]
    local_summary, local_cost, round_trips, reading = local
    print(f"{state}: over HTTP, alternating {gap} s apart, {ours.count} scrapes each")
    for name, (summary, cost) in http.items():
        if name == LIVENESS:
            continue
        print(
            f"  {name:<12} p50 {ms(summary.p50):>8} ms   p95 {ms(summary.p95):>8} ms   mean {ms(summary.mean):>8} ms"
            f"   Redis: {cost.commands:,} commands, {ms(cost.cpu_seconds)} ms CPU per scrape"
        )
    print(f"  ratio {PEER} / rqscope: p50 {theirs.p50 / ours.p50:.1f}x, p95 {theirs.p95 / ours.p95:.1f}x")
    print(
        f"  rqscope's Redis time per scrape: {ms(our_cost.cpu_seconds)} ms CPU, {ms(our_cost.script_seconds)} ms "
        f"in read scripts, longest single script {our_cost.longest_script_seconds * 1000:.2f} ms"
    )
    print(
        f"  rqscope in-process (Flask test client, cache off, back to back): p50 {ms(local_summary.p50)} ms, "
        f"p95 {ms(local_summary.p95)} ms, {local_cost.commands:,} commands, {round_trips} round trips"
    )
    floor = liveness.p50 + reading.p50
    print(
        f"  floor: {LIVENESS} over HTTP p50 {ms(liveness.p50)} ms + waiting for and reading Redis's replies p50 "
        f"{ms(reading.p50)} ms = {ms(floor)} ms, so {theirs.p50 / floor:.1f}x is the most these reads allow here"
    )
    return (
        f"| {state} ({time.strftime('%Y-%m-%d')}, {ours.count} scrapes each) "
        f"| {ms(ours.p50)} / {ms(ours.p95)} ms | {ms(theirs.p50)} / {ms(theirs.p95)} ms "
        f"| {theirs.p50 / ours.p50:.1f}x / {theirs.p95 / ours.p95:.1f}x "
        f"| {ms(our_cost.cpu_seconds)} ms CPU, longest script {our_cost.longest_script_seconds * 1000:.2f} ms "
        f"| {our_cost.commands:,} vs {their_cost.commands:,} "
        f"| {ms(local_summary.p50)} ms ({theirs.p50 / local_summary.p50:.0f}x) |"
    )


TABLE_HEAD = (
    "| state (date, scrapes) | rqscope serve, p50 / p95 | rq-exporter, p50 / p95 | ratio p50 / p95 "
    "| Redis per rqscope scrape | Redis commands per scrape | rqscope in-process p50 (ratio) |\n"
    "|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed scrapes of each exporter per state")
    parser.add_argument("--large", action="store_true", help="then the same at 500 queues and 1,000 workers")
    parser.add_argument("--large-rounds", type=int, default=10, help="timed scrapes of each at 500 queues")
    parser.add_argument("--gap", type=cold_gap, default=1.2, help="seconds between the starts of two scrapes")
    parser.add_argument("--churn", action="store_true", help="change every worker and queue before each scrape")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts (for a quick run)")
    parser.add_argument("--budget", type=float, default=900, help="seconds for the whole run; fewer rounds if short")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    peers, jobs = ready_peers(PEER, args.scale)
    states = [(50, 100, args.rounds)] + ([(500, 1000, args.large_rounds)] if args.large else [])
    rows = []
    with throwaway_redis() as (server, admin):
        for queues, workers, rounds in states:
            admin.flushall()
            fill_state(admin, queues=queues, workers=workers, **jobs)
            state = f"{queues:,} queues, {workers:,} workers" + (
                ", every row changed before each scrape" if args.churn else ""
            )
            print(f"{state}, {sum(jobs.values()):,} jobs")
            http = over_http(server.url, admin, peers, rounds, args.gap, deadline, args.churn)
            rows.append(report(state, http, in_process(server.url, admin, rounds, args.churn), args.gap))
    print("\nREADME rows:\n" + TABLE_HEAD + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
