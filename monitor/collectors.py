"""Prometheus collectors; each builds fresh metric families per scrape."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import Metric
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.cron import CronState
from rqscope.monitor.cron_collector import CronCollector
from rqscope.monitor.families import snapshot_families

log = logging.getLogger(__name__)


class SelfMetrics:
    """The exporter's own health, on the registry it serves, with labels pre-initialised."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Gauge(
            "rqscope_scrape_duration_seconds", "Time the last scrape spent reading and shaping", registry=registry
        )
        self.errors = Counter(
            "rqscope_scrape_errors", "Scrapes that could not read Redis, by cause", ["cause"], registry=registry
        )
        for cause in ("redis", "shaping"):
            self.errors.labels(cause)


class SnapshotCollector:
    """Queues, workers, pools, Redis and task metrics from one cached snapshot."""

    def __init__(self, cache: SnapshotCache, self_metrics: SelfMetrics) -> None:
        self.cache = cache
        self.self_metrics = self_metrics
        self.redis_up = True  # as this scrape's snapshot found it

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        snapshot = self.cache.get()
        self.redis_up = snapshot.redis.up
        if not snapshot.redis.up:
            self.self_metrics.errors.labels("redis").inc()
        try:
            families = list(snapshot_families(snapshot))
        except Exception:  # a shaping bug must not take the whole scrape down
            log.exception("could not shape the snapshot into metrics")
            self.self_metrics.errors.labels("shaping").inc()
            families = []
        self.self_metrics.duration.set(time.perf_counter() - started)
        return families


def build_registry(cache: SnapshotCache, cron: Callable[[], CronState] | None = None) -> CollectorRegistry:
    """A private registry: the snapshot collector first, so self-metrics describe this scrape."""
    registry = CollectorRegistry(auto_describe=False)
    holder = CollectorRegistry(auto_describe=False)
    self_metrics = SelfMetrics(holder)
    snapshots = SnapshotCollector(cache, self_metrics)
    registry.register(snapshots)
    if cron is not None:
        registry.register(CronCollector(cron, lambda: snapshots.redis_up))
    registry.register(holder)  # type: ignore[arg-type]
    return registry
