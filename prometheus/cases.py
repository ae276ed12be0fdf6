"""What each kind's promtool case feeds Prometheus: series that cross the threshold, and series that stay at it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rqscope.monitor.alerts.rules import Rule

from prometheus.promql import RUNS

Values = Callable[[int], float]  # sample index -> value
Series = tuple[str, dict[str, str], Values]  # metric, labels besides the target's and the queue, values


@dataclass(frozen=True)
class Timeline:
    """Sample indices: the condition starts at `start` and must fire `hold` steps later."""

    hold: int  # the rule's `for:` in steps
    window: int  # the rule's window in steps
    start: int = 2  # one quiet sample before the start shows that nothing fires early

    @property
    def fire(self) -> int:
        return self.start + self.hold

    def gauge(self, quiet: float, crossing: float) -> Values:
        return lambda i: crossing if self.start <= i <= self.fire else quiet

    def counter(self, per_step: float) -> Values:
        """Grows from `start` until the alert fires, then stands still, so that increase() falls back to 0."""
        return lambda i: per_step * min(max(i - self.start + 1, 0), self.hold + 1)

    def increase(self, per_step: float) -> float:
        """increase() over the window at the firing sample."""
        # the counter's first sample in the window is 0, or it grew every step: extrapolation gives exactly this
        return per_step * min(self.hold + 1, self.window)


def const(value: float) -> Values:
    return lambda i: value


def steady(per_step: float) -> Values:
    return lambda i: per_step * i


@dataclass
class Case:
    series: list[Series]
    keep: dict[str, str] = field(default_factory=dict)  # labels of the series that the alert keeps
    value: float = 0.0  # the alert's value when it fires
    late: float | None = None  # its value two steps before the window passes the last increase, when exact


def above(t: float, scale: int = 1) -> int:
    """The smallest n with n / scale > t, compared as Prometheus compares floats."""
    n = math.floor(t * scale)
    while n / scale <= t:
        n += 1
    return n


def below(t: float, scale: int = 1) -> int:
    """The largest n >= 0 with n / scale < t."""
    n = math.ceil(t * scale)
    while n / scale >= t:
        n -= 1
    if n < 0:
        raise ValueError(f"no value below {t} can be observed")
    return n


def at_most(t: float, scale: int = 1) -> int:
    n = math.floor(t * scale)
    return n - 1 if n / scale > t else n


def _gauge(metric: str, extra: dict[str, str] | None = None) -> Callable[[Rule, Timeline, bool], Case]:
    def case(rule: Rule, tl: Timeline, hot: bool) -> Case:
        n = above(rule.threshold)
        values = tl.gauge(0, n) if hot else const(at_most(rule.threshold))
        return Case([(metric, extra or {}, values)], dict(extra or {}), n)

    return case


def _share(numerator: str, denominator: str) -> Callable[[Rule, Timeline, bool], Case]:
    def case(rule: Rule, tl: Timeline, hot: bool) -> Case:
        n = above(rule.threshold, 100)
        values = tl.gauge(0, n) if hot else const(at_most(rule.threshold, 100))
        return Case([(numerator, {}, values), (denominator, {}, const(100))], {}, n / 100)

    return case


def _counter(metric: str, extra: dict[str, str]) -> Callable[[Rule, Timeline, bool], Case]:
    def case(rule: Rule, tl: Timeline, hot: bool) -> Case:
        n = above(rule.threshold)
        quiet = max(0, math.ceil(rule.threshold / tl.window) - 1)  # its increase over the window stays below
        values = tl.counter(n) if hot else steady(quiet)
        keep = {k: v for k, v in extra.items() if k == "role"}
        # with one increase, every window holding it also holds the 0 before it: no extrapolation, exactly n
        return Case([(metric, extra, values)], keep, tl.increase(n), n if tl.hold == 0 else None)

    return case


def _failed_jobs(rule: Rule, tl: Timeline, hot: bool) -> Case:
    case = _counter(RUNS, {"task": "send", "outcome": "failure"})(rule, tl, hot)
    case.series.append((RUNS, {"task": "send", "outcome": "success"}, steady(1000)))  # successes never count
    return case


def _failure_ratio(rule: Rule, tl: Timeline, hot: bool) -> Case:
    failed = above(rule.threshold, 100) if hot else below(rule.threshold, 100)
    if failed > 100:
        raise ValueError(f"rule {rule.name}: a failure ratio cannot exceed {rule.threshold}")
    grow = tl.counter if hot else steady
    outcomes = (("failure", failed), ("success", 100 - failed))
    runs = [(RUNS, {"task": "send", "outcome": outcome}, grow(n)) for outcome, n in outcomes]
    return Case(runs, {}, failed / 100, failed / 100)


def _workers_below(rule: Rule, tl: Timeline, hot: bool) -> Case:
    live, enough = below(rule.threshold), math.ceil(rule.threshold)
    idle = tl.gauge(enough, live) if hot else const(enough)
    dead = const(2)  # dead workers never count as live
    return Case([("rqscope_workers", {"state": "idle"}, idle), ("rqscope_workers", {"state": "dead"}, dead)], {}, live)


def _half(values: Values, rest: int) -> Values:
    return lambda i: values(i) - values(i) // 2 if rest else values(i) // 2


def _pool_utilisation(rule: Rule, tl: Timeline, hot: bool) -> Case:
    n = above(rule.threshold, 100)
    use = tl.gauge(0, n) if hot else const(at_most(rule.threshold, 100))
    series: list[Series] = []
    for host, half in (("a", 0), ("b", 1)):  # pools add up across hosts: one host holds half, the other the rest
        labels = {"role": "worker", "hostname": host}
        series.append(("rqscope_redis_pool_connections", {**labels, "state": "in_use"}, _half(use, half)))
        series.append(("rqscope_redis_pool_connections", {**labels, "state": "idle"}, const(3)))
        series.append(("rqscope_redis_pool_max_connections", labels, const(50)))
    return Case(series, {"role": "worker"}, n / 100)


def _queue_without_workers(rule: Rule, tl: Timeline, hot: bool) -> Case:
    series = [
        ("rqscope_queue_jobs", {"state": "queued"}, tl.gauge(0, 5) if hot else const(5)),
        ("rqscope_queue_workers", {"state": "idle"}, const(0 if hot else 1)),
        ("rqscope_queue_workers", {"state": "busy"}, const(0)),
    ]
    return Case(series, {"state": "queued"}, 5)


def _redis_down(rule: Rule, tl: Timeline, hot: bool) -> Case:
    return Case([("rqscope_redis_up", {}, tl.gauge(1, 0) if hot else const(1))], {}, 0)


# kind -> (case builder, whether the kind reads counters over the rule's window)
SCENARIOS: dict[str, tuple[Callable[[Rule, Timeline, bool], Case], bool]] = {
    "queue_depth": (_gauge("rqscope_queue_jobs", {"state": "queued"}), False),
    "queue_latency": (_gauge("rqscope_queue_latency_seconds"), False),
    "failed_jobs": (_failed_jobs, True),
    "failure_ratio": (_failure_ratio, True),
    "queue_without_workers": (_queue_without_workers, False),
    "workers_below": (_workers_below, False),
    "dead_workers": (_gauge("rqscope_workers", {"state": "dead"}), False),
    "pool_utilisation": (_pool_utilisation, False),
    "pool_exhausted": (_counter("rqscope_redis_pool_exhausted_total", {"role": "web", "hostname": "a"}), True),
    "redis_clients": (_share("rqscope_redis_connected_clients", "rqscope_redis_max_clients"), False),
    "redis_rejected_connections": (_counter("rqscope_redis_rejected_connections_total", {}), True),
    "redis_memory": (_share("rqscope_redis_memory_used_bytes", "rqscope_redis_memory_max_bytes"), False),
    "redis_down": (_redis_down, False),
    "rate_limit_held": (_gauge("rqscope_rate_limit_oldest_held_seconds", {"key": "partner-api"}), False),
    "cron_overdue": (_gauge("rqscope_cron_job_overdue_seconds", {"cron_job": "nightly clean-up"}), False),
}
