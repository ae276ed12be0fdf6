"""Cron metrics: how late each cron job is, and how many cron schedulers are alive or dead."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from rqscope.monitor.cron import CronState


def cron_families(state: CronState) -> list[Metric]:
    """Pure shaping: a cron read -> metric families; nothing when Redis did not answer."""
    if not state.up:
        return []
    overdue = GaugeMetricFamily(
        "rqscope_cron_job_overdue_seconds",
        "How long a cron job is past the run it is due (0 when on time); with its scheduler dead, past the run missed",
        labels=["cron_job"],
    )
    worst: dict[str, float] = {}
    for job in state.jobs:  # RQ lets cron jobs share a name: their label carries the most overdue
        name = job.name  # made a label, one per name, when rendered
        worst[name] = max(worst.get(name, 0.0), job.overdue_seconds)
    for name, seconds in sorted(worst.items()):
        overdue.add_metric([name], seconds)
    schedulers = GaugeMetricFamily(
        "rqscope_cron_schedulers", "RQ cron schedulers by state (dead: no heartbeat for 90 s)", labels=["state"]
    )
    dead = len(state.dead_schedulers)
    schedulers.add_metric(["alive"], len(state.schedulers) - dead)
    schedulers.add_metric(["dead"], dead)
    return [overdue, schedulers]


class CronCollector:
    """Cron metrics from the shared, cached cron read; skipped when this scrape's snapshot found Redis down."""

    def __init__(self, cron: Callable[[], CronState], redis_up: Callable[[], bool]) -> None:
        self.cron = cron
        self.redis_up = redis_up

    def collect(self) -> Iterable[Metric]:
        if not self.redis_up():  # this scrape already waited for Redis once: not twice
            return []
        return cron_families(self.cron())
