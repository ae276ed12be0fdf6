"""Prometheus collectors over Redis; each builds fresh metric families per scrape."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric
from redis import Redis

from tasks.metrics import METRICS_KEY, parse_metrics, task_families


class TaskCollector:
    """Task run counters and duration histograms, aggregated in Redis by every worker."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterable[Metric]:
        return task_families(parse_metrics(self.redis.hgetall(METRICS_KEY)))
