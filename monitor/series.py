"""Chart series shaped from rollup windows and queue points: plain dicts, the JSON API's bodies."""

from __future__ import annotations

from typing import Any

from rqscope.monitor.queue_history import QueueHistory
from rqscope.monitor.rates import FAILED_OUTCOMES
from rqscope.monitor.rollups import Window
from rqscope.tasks.metrics import BUCKET_LABELS, OUTCOMES, TaskStats

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def runs(window: Window) -> dict[str, Any]:
    """Runs per second by outcome in each bin (the current bin by its elapsed time), and the window's counts."""
    rates = {
        outcome: [round(b.outcomes[outcome] / window.seconds(i), 4) for i, b in enumerate(window.bins)]
        for outcome in OUTCOMES
    }
    counts = {outcome: sum(b.outcomes[outcome] for b in window.bins) for outcome in OUTCOMES}
    return {
        "window": window.name,
        "step_seconds": window.step,
        "unit": "runs/s",
        "t": window.starts,
        "outcomes": rates,
        "counts": counts,
    }


def _failed(stats: TaskStats) -> int:
    return sum(stats.outcomes[o] for o in FAILED_OUTCOMES)


def task(window: Window) -> dict[str, Any]:
    """Runs, failure % and p50/p95/p99 (from the bins' histogram buckets) per bin, and the window's histogram."""
    whole = TaskStats()
    for stats in window.bins:
        for label in BUCKET_LABELS:
            whole.buckets[label] += stats.buckets[label]
        for outcome in OUTCOMES:
            whole.outcomes[outcome] += stats.outcomes[outcome]
        whole.duration_sum += stats.duration_sum
    return {
        "window": window.name,
        "step_seconds": window.step,
        "t": window.starts,
        "runs": [b.runs for b in window.bins],
        "failure_percent": [_rounded(100 * _failed(b) / b.runs, 2) if b.runs else None for b in window.bins],
        "quantiles_seconds": {name: [_rounded(b.quantile(q)) for b in window.bins] for name, q in QUANTILES.items()},
        "histogram": {"le": list(BUCKET_LABELS), "count": [whole.buckets[label] for label in BUCKET_LABELS]},
        "counts": dict(whole.outcomes),
        "mean_seconds": _rounded(whole.duration_sum / whole.runs) if whole.runs else None,
    }


def queue(history: QueueHistory) -> dict[str, Any]:
    return {
        "window": history.window,
        "step_seconds": 60,
        "t": history.t,
        "queued": history.queued,
        "latency_seconds": history.latency_seconds,
    }


def recent(window: Window) -> tuple[int, int, float]:
    """(runs, failed runs, seconds) over the whole window, the current bin counted by its elapsed time."""
    runs = sum(b.runs for b in window.bins)
    failed = sum(_failed(b) for b in window.bins)
    return runs, failed, sum(window.seconds(i) for i in range(len(window.bins))) or float(window.step)
