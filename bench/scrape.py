"""A full /metrics scrape over HTTP: `rqscope serve` against rq-exporter's own server, on the same Redis state.

Fills one Redis with 50 queues, 100k queued, 20k failed, 20k finished, 200 started jobs and 100 workers.
Each exporter runs as its users run it: `rqscope serve` (gunicorn, its 1 s snapshot cache) from this
environment, rq-exporter's console script from the peers' virtualenv (bench/peers.py). Scrapes alternate
between the two, one every 1.2 s, each on a new connection, so rqscope's cache has always expired when it
is scraped. Prints each one's per-scrape p50 and mean, Redis commands per scrape, and the ratio; beside it,
rqscope's in-process scrape (Flask test client, cache off) as a secondary figure. Then the same at 10x the
queues and workers.

Run: python -m bench.scrape [--rounds 30] [--tenfold-rounds 10]   (builds the peers' venv on first run)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.settings import Settings
from rqscope.web import create_app

from bench.common import CountingConnection, count_commands, counting_client, median, throwaway_redis
from bench.fill import fill_state
from bench.peers import PeersEnv, ready_peers, rq_exporter_command
from bench.servers import Reply, Server, Summary, alternate, cold_gap, rqscope_serve, timed_request

PEER = "rq-exporter"
WARM_UP_ROUNDS = 4  # enough for both gunicorn workers to load their scripts and connections before timing
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


def commands_per_scrape(scrapes: Mapping[str, Callable[[], Reply]], admin: Redis, gap: float) -> dict[str, int]:
    """Warm-up rounds, alternating like the timed ones, counting each scrape's Redis commands (fewest seen)."""
    fewest: dict[str, int] = {}
    for _ in range(WARM_UP_ROUNDS):
        for name, scrape in scrapes.items():
            time.sleep(gap)
            commands, reply = count_commands(admin, scrape)
            assert isinstance(reply, Reply) and reply.status == 200, f"{name}: {reply}"
            fewest[name] = min(commands, fewest.get(name, commands))
    return fewest


def over_http(url: str, admin: Redis, peers: PeersEnv, rounds: int, gap: float) -> dict[str, tuple[Summary, int]]:
    exporter = Server(PEER, lambda port: rq_exporter_command(peers, url, port), peers.environ(), "/metrics")
    with rqscope_serve(url) as ours, exporter as theirs:
        scrapes = {
            "rqscope": lambda: timed_request(ours.url, "/metrics"),
            PEER: lambda: timed_request(theirs.url, "/metrics"),
        }
        seen = {name: queued_total(name, scrape().body) for name, scrape in scrapes.items()}
        if len(set(seen.values())) != 1:
            raise RuntimeError(f"the exporters disagree on the state: queued jobs {seen}")
        commands = commands_per_scrape(scrapes, admin, gap)
        seconds = alternate(scrapes, rounds, gap)
    return {name: (Summary.of(seconds[name]), commands[name]) for name in scrapes}


def in_process(url: str, admin: Redis, rounds: int) -> dict[str, float]:
    """rqscope's scrape through Flask's test client with the snapshot cache off: no HTTP, no gunicorn."""
    settings = Settings(redis_url=url, snapshot_ttl=1e-9, task_modules=("rqscope.tasks.examples",))
    client = create_app(settings, redis=counting_client(url), testing=True).test_client()

    def scrape() -> None:
        assert client.get("/metrics").status_code == 200

    for _ in range(20):  # imports, connections, the script cache
        scrape()
    commands, _ = count_commands(admin, scrape)
    before = CountingConnection.sends
    scrape()
    round_trips = CountingConnection.sends - before
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        scrape()
        samples.append(time.perf_counter() - started)
    return {"median_s": median(samples), "commands": commands, "round_trips": round_trips}


def report(title: str, http: dict[str, tuple[Summary, int]], local: dict[str, float], gap: float) -> None:
    ours, theirs = http["rqscope"][0], http[PEER][0]
    print(f"{title} over HTTP, alternating {gap} s apart, {ours.count} scrapes each:")
    for name, (summary, commands) in http.items():
        print(
            f"  {name:<12} p50 {summary.p50 * 1000:8.1f} ms   mean {summary.mean * 1000:8.1f} ms   "
            f"{commands:6,} Redis commands per scrape"
        )
    print(f"  ratio {PEER} / rqscope: p50 {theirs.p50 / ours.p50:.1f}x, mean {theirs.mean / ours.mean:.1f}x")
    print(
        "  (secondary) rqscope in-process, Flask test client, cache off, back to back: "
        f"median {local['median_s'] * 1000:.1f} ms, {local['commands']:,.0f} commands, "
        f"{local['round_trips']:.0f} round trips"
    )


def run_state(url: str, admin: Redis, peers: PeersEnv, title: str, rounds: int, gap: float) -> None:
    report(title, over_http(url, admin, peers, rounds, gap), in_process(url, admin, rounds), gap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed scrapes of each exporter")
    parser.add_argument("--tenfold-rounds", type=int, default=10, help="the same at 10x queues and workers (0: skip)")
    parser.add_argument("--gap", type=cold_gap, default=1.2, help="seconds between the starts of two scrapes")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts (for a quick run)")
    args = parser.parse_args()
    peers, jobs = ready_peers(PEER, args.scale)
    with throwaway_redis() as (server, admin):
        fill_state(admin, queues=50, workers=100, **jobs)
        run_state(
            server.url, admin, peers, f"50 queues, 100 workers, {sum(jobs.values()):,} jobs:", args.rounds, args.gap
        )
        if args.tenfold_rounds:
            admin.flushall()
            fill_state(admin, queues=500, workers=1000, **jobs)
            run_state(
                server.url,
                admin,
                peers,
                f"500 queues, 1000 workers (10x), {sum(jobs.values()):,} jobs:",
                args.tenfold_rounds,
                args.gap,
            )


if __name__ == "__main__":
    main()
