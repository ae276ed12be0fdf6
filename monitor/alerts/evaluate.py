"""Pure evaluation: rules x (Snapshot, rollups, cron read) -> what each rule observes now. No I/O here."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.cron import CronState
from rqscope.monitor.rates import Series
from rqscope.monitor.snapshot import QueueState, Snapshot


@dataclass(frozen=True)
class Observation:
    """One rule's condition for one label set at one moment."""

    rule: Rule
    labels: tuple[tuple[str, str], ...]
    value: float
    active: bool

    @property
    def queue(self) -> str:
        return dict(self.labels).get("queue", "")


def _per_queue_rates(series: Series | None, window: float) -> dict[str, tuple[int, int]]:
    """(runs, failed) per queue over the window, from the per-minute rollups."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    if series is None:
        return {}
    minutes = max(1, int(window // 60))
    for queue, minutes_list in series.by_queue.items():
        for minute in minutes_list[-minutes:]:
            totals[queue][0] += minute.runs
            totals[queue][1] += minute.failed
    return {q: (r, f) for q, (r, f) in totals.items()}


def _queue_value(rule: Rule, queue: QueueState, runs: int, failed: int) -> tuple[float, bool]:
    if rule.kind == "queue_depth":
        return float(queue.queued), queue.queued > rule.threshold
    if rule.kind == "queue_latency":
        return queue.latency_seconds, queue.latency_seconds > rule.threshold
    if rule.kind == "failed_jobs":
        return float(failed), failed > rule.threshold
    if rule.kind == "failure_ratio":
        ratio = failed / runs if runs else 0.0
        return ratio, bool(runs) and ratio > rule.threshold
    return float(queue.queued), queue.queued > 0 and queue.workers == 0  # queue_without_workers


def _global(rule: Rule, value: float, active: bool) -> list[Observation]:
    return [Observation(rule, (), value, active)]


def _cron_overdue(rule: Rule, cron: CronState) -> list[Observation]:
    """One observation per cron job name (RQ lets cron jobs share one): the most overdue of them."""
    worst: dict[str, float] = {}
    for job in cron.jobs:
        worst[job.name] = max(worst.get(job.name, 0.0), job.overdue_seconds)
    return [Observation(rule, (("cron_job", n),), late, late > rule.threshold) for n, late in sorted(worst.items())]


def evaluate(
    rules: tuple[Rule, ...], snapshot: Snapshot, series: Series | None, now: float, cron: CronState | None = None
) -> list[Observation]:
    """Every rule's observations; a down Redis makes every rule but redis_down observe nothing.

    cron_overdue observes nothing without a cron read that Redis answered (`cron`), so its alerts hold.
    """
    observations: list[Observation] = []
    for rule in rules:
        if rule.kind == "redis_down":
            observations += _global(rule, 0.0 if snapshot.redis.up else 1.0, not snapshot.redis.up)
            continue
        if not snapshot.redis.up:
            continue
        if rule.per_queue:
            rates = _per_queue_rates(series, rule.window_seconds) if rule.kind.startswith("fail") else {}
            for queue in snapshot.queues:
                if not rule.applies_to(queue.name):
                    continue
                value, active = _queue_value(rule, queue, *rates.get(queue.name, (0, 0)))
                observations.append(Observation(rule, (("queue", queue.name),), value, active))
            continue
        info = snapshot.redis.info
        if rule.kind == "workers_below":
            live = len(snapshot.live_workers)
            observations += _global(rule, live, live < rule.threshold)
        elif rule.kind == "dead_workers":
            dead = len(snapshot.dead_workers)
            observations += _global(rule, dead, dead > rule.threshold)
        elif rule.kind == "pool_utilisation":
            pools: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for sample in snapshot.processes:
                pools[sample.role][0] += sample.pool_in_use
                pools[sample.role][1] += sample.pool_max
            for role, (in_use, limit) in sorted(pools.items()):
                ratio = in_use / limit if limit else 0.0
                observations.append(Observation(rule, (("role", role),), ratio, ratio > rule.threshold))
        elif rule.kind == "pool_exhausted":
            errors = sum(sample.pool_exhausted_recent for sample in snapshot.processes)
            observations += _global(rule, errors, errors > rule.threshold)
        elif rule.kind == "redis_clients" and info.get("maxclients"):
            ratio = info.get("connected_clients", 0.0) / info["maxclients"]
            observations += _global(rule, ratio, ratio > rule.threshold)
        elif rule.kind == "redis_rejected_connections":
            rejected = info.get("rejected_connections", 0.0)
            observations += _global(rule, rejected, rejected > rule.threshold)
        elif rule.kind == "rate_limit_held":
            for limit in snapshot.rate_limits:
                waited = limit.oldest_held_seconds
                observations.append(Observation(rule, (("key", limit.key),), waited, waited > rule.threshold))
        elif rule.kind == "cron_overdue" and cron is not None and cron.up:
            observations += _cron_overdue(rule, cron)
        elif rule.kind == "redis_memory" and info.get("maxmemory"):
            ratio = info.get("used_memory", 0.0) / info["maxmemory"]
            observations += _global(rule, ratio, ratio > rule.threshold)
    return observations
