"""A full /metrics scrape: rqscope against rq-exporter's collector, on the same Redis state.

Fills one Redis with 50 queues, 100k queued, 20k failed, 20k finished, 200 started jobs and
100 workers; times each exporter's scrape (median of --rounds), counts the Redis commands and
round trips each issued, and prints the ratio. Then repeats at 10x the queues and workers.

Run: python -m bench.scrape [--rounds 15]   (needs the bench extra: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from redis import Redis
from rqscope.monitor.settings import Settings
from rqscope.web import create_app

from bench.common import CountingConnection, count_commands, counting_client, machine, median, throwaway_redis
from bench.fill import fill_state


def rqscope_scraper(url: str) -> Callable[[], bytes]:
    settings = Settings(redis_url=url, snapshot_ttl=1e-9, task_modules=("rqscope.tasks.examples",))
    client = create_app(settings, redis=counting_client(url), testing=True).test_client()

    def scrape() -> bytes:
        response = client.get("/metrics")
        assert response.status_code == 200
        return response.data

    return scrape


def rq_exporter_scraper(url: str) -> Callable[[], bytes]:
    from prometheus_client import REGISTRY
    from rq_exporter.collector import RQCollector

    collector = RQCollector(counting_client(url))
    REGISTRY.unregister(collector.summary)  # it registers itself globally; keep runs independent
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: generate_latest(registry)


def cost(scrape: Callable[[], bytes], admin: Redis) -> dict[str, float]:
    for _ in range(20):  # warm up imports, connections and the script cache
        scrape()
    commands, _ = count_commands(admin, scrape)
    before = CountingConnection.sends
    scrape()
    return {"commands": commands, "round_trips": CountingConnection.sends - before}


def timed(scrape: Callable[[], bytes]) -> float:
    started = time.perf_counter()
    scrape()
    return time.perf_counter() - started


def compare(url: str, admin: Redis, rounds: int) -> dict[str, dict[str, float]]:
    """Median scrape times two ways: back to back (warm caches), and alternating with the peer (cold)."""
    scrapers = {"rqscope": rqscope_scraper(url), "rq-exporter": rq_exporter_scraper(url)}
    results = {name: cost(scrape, admin) for name, scrape in scrapers.items()}
    for name, scrape in scrapers.items():
        results[name]["median_s"] = median([timed(scrape) for _ in range(rounds)])
    alternating: dict[str, list[float]] = {name: [] for name in scrapers}
    for _ in range(rounds):
        for name, scrape in scrapers.items():
            alternating[name].append(timed(scrape))
    for name in scrapers:
        results[name]["alternating_s"] = median(alternating[name])
    return results


def report(title: str, results: dict[str, dict[str, float]]) -> None:
    print(title)
    for name, figures in results.items():
        print(f"  {name:<12} median {figures['median_s'] * 1000:7.1f} ms back to back, "
              f"{figures['alternating_s'] * 1000:7.1f} ms alternating;  "
              f"{figures['commands']:5.0f} Redis commands, {figures['round_trips']:4.0f} round trips")  # fmt: skip
    warm = results["rq-exporter"]["median_s"] / results["rqscope"]["median_s"]
    cold = results["rq-exporter"]["alternating_s"] / results["rqscope"]["alternating_s"]
    print(f"  ratio: {warm:.1f}x back to back, {cold:.1f}x alternating (goal >= 20x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts (for a quick run)")
    args = parser.parse_args()
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    jobs = {k: int(v * args.scale) for k, v in
            {"queued": 100_000, "failed": 20_000, "finished": 20_000, "started": 200}.items()}  # fmt: skip
    with throwaway_redis() as (server, admin):
        fill_state(admin, queues=50, workers=100, **jobs)
        report("50 queues, 100 workers, 140k jobs:", compare(server.url, admin, args.rounds))
        admin.flushall()
        fill_state(admin, queues=500, workers=1000, **jobs)
        report("500 queues, 1000 workers (10x), 140k jobs:", compare(server.url, admin, max(3, args.rounds // 3)))


if __name__ == "__main__":
    main()
