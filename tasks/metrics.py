"""Task metrics: how runs are recorded into Redis and how they become metric families.

Counts live in one Redis hash so that every forked work horse on every host adds to the
same totals, and one HGETALL reads all of them back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from redis.client import Pipeline
from rqscope.tasks.rq_internals.keys import OWN, OWN_FORMAT

METRICS_KEY = OWN + "metrics"
ROLLUP_KEY_TEMPLATE = OWN_FORMAT + "metrics:m:{minute}"
# 25 h: the 24 h chart reads the last day's minutes, and the alert leader folds each finished hour
# into an hourly hash (monitor/compaction.py) well before its minutes expire
ROLLUP_TTL_SECONDS = 25 * 3600
SEP = "\x1f"

OUTCOMES = ("success", "failure", "retried", "timeout", "killed")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
INF = "+Inf"


def _le(bound: float) -> str:
    return repr(float(bound))


BUCKET_LABELS = tuple(_le(b) for b in BUCKETS) + (INF,)


def field_name(task: str, queue: str, kind: str) -> str:
    return f"{task}{SEP}{queue}{SEP}{kind}"


def bucket_for(duration: float) -> str:
    """The `le` label of the smallest bucket holding this duration."""
    for bound, label in zip(BUCKETS, BUCKET_LABELS, strict=False):
        if duration <= bound:
            return label
    return INF


def rollup_key(epoch_seconds: float) -> str:
    return ROLLUP_KEY_TEMPLATE.format(minute=int(epoch_seconds // 60))


def total_field(outcome: str) -> str:
    """A rollup's count of one outcome over every task and queue: the overview's chart reads only these."""
    return "o:" + outcome  # no separator, so it never reads as a (task, queue) field


# KEYS: the run's marker, the metrics hash, the minute's rollup. ARGV: marker TTL, rollup TTL, outcome
# field, sum field, bucket field, duration, the rollup's total field for the outcome. A run whose marker
# exists was counted: a replayed write adds nothing.
RECORD_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[4], ARGV[6])
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('HINCRBYFLOAT', KEYS[3], ARGV[4], ARGV[6])
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""
RUN_MARKER_TEMPLATE = OWN_FORMAT + "run:{id}"
# a replay follows its lost reply within seconds (RQ's WatchError loop, a reconnect): the marker
# outlives that window with a wide margin and costs ~130 bytes for ten minutes
RUN_MARKER_TTL_SECONDS = 600


def record_run(
    pipeline: Pipeline,
    task: str,
    queue: str,
    outcome: str,
    duration: float,
    now: float | None = None,
    run_id: str | None = None,
) -> None:
    """Queue the writes for one finished run on `pipeline`.

    With a `run_id` (one per execution) they are one script that counts the run only once, however
    often the write is replayed (a retried transaction after a lost reply); without, plain increments.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    duration = max(0.0, float(duration)) if math.isfinite(duration) else 0.0
    key = rollup_key(time.time() if now is None else now)
    if run_id is not None:
        keys = [RUN_MARKER_TEMPLATE.format(id=run_id), METRICS_KEY, key]
        fields = [field_name(task, queue, kind) for kind in ("o:" + outcome, "sum", "b:" + bucket_for(duration))]
        args = [RUN_MARKER_TTL_SECONDS, ROLLUP_TTL_SECONDS, *fields, repr(duration), total_field(outcome)]
        # EVAL, not a registered script: the pipeline would first ask SCRIPT EXISTS, one more round trip
        pipeline.eval(RECORD_ONCE, len(keys), *keys, *args)
        return
    pipeline.hincrby(METRICS_KEY, field_name(task, queue, "o:" + outcome), 1)
    pipeline.hincrbyfloat(METRICS_KEY, field_name(task, queue, "sum"), duration)
    pipeline.hincrby(METRICS_KEY, field_name(task, queue, "b:" + bucket_for(duration)), 1)
    pipeline.hincrby(key, field_name(task, queue, "o:" + outcome), 1)
    pipeline.hincrbyfloat(key, field_name(task, queue, "sum"), duration)
    pipeline.hincrby(key, field_name(task, queue, "b:" + bucket_for(duration)), 1)
    pipeline.hincrby(key, total_field(outcome), 1)
    pipeline.expire(key, ROLLUP_TTL_SECONDS)


def record_enqueued(pipeline: Pipeline, task: str, queue: str, count: int = 1) -> None:
    pipeline.hincrby(METRICS_KEY, field_name(task, queue, "enqueued"), count)


@dataclass
class TaskStats:
    """Everything recorded for one (task, queue) pair."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    duration_sum: float = 0.0
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKET_LABELS, 0))
    enqueued: int = 0

    @property
    def runs(self) -> int:
        return sum(self.outcomes.values())

    def cumulative_buckets(self) -> list[tuple[str, float]]:
        total = 0
        out = []
        for label in BUCKET_LABELS:
            total += self.buckets.get(label, 0)
            out.append((label, float(total)))
        return out

    def quantile(self, q: float) -> float | None:
        """Estimate a quantile from the buckets, interpolating like histogram_quantile()."""
        count = sum(self.buckets.values())
        if count == 0:
            return None
        rank = q * count
        lower, seen = 0.0, 0
        for bound, label in zip(BUCKETS + (math.inf,), BUCKET_LABELS, strict=True):
            in_bucket = self.buckets.get(label, 0)
            if seen + in_bucket >= rank and in_bucket:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - seen) / in_bucket
            seen += in_bucket
            lower = bound
        return lower


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def parse_metrics(raw: Mapping[bytes | str, bytes | str]) -> dict[tuple[str, str], TaskStats]:
    """Turn the metrics hash into TaskStats per (task, queue); malformed fields are skipped."""
    stats: dict[tuple[str, str], TaskStats] = {}
    for raw_key, raw_value in raw.items():
        parts = _text(raw_key).split(SEP)
        if len(parts) != 3:
            continue
        task, queue, kind = parts
        try:
            value = float(_text(raw_value))
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        entry = stats.setdefault((task, queue), TaskStats())
        if kind.startswith("o:") and kind[2:] in OUTCOMES:
            entry.outcomes[kind[2:]] = int(value)
        elif kind.startswith("b:") and kind[2:] in entry.buckets:
            entry.buckets[kind[2:]] = int(value)
        elif kind == "sum":
            entry.duration_sum = value
        elif kind == "enqueued":
            entry.enqueued = int(value)
    return stats


def task_families(stats: Mapping[tuple[str, str], TaskStats]) -> Iterable[Metric]:
    """Counter and histogram families for every (task, queue) pair."""
    runs = CounterMetricFamily(
        "rqscope_task_runs", "Task runs by outcome, summed over every worker", labels=["task", "queue", "outcome"]
    )
    duration = HistogramMetricFamily(
        "rqscope_task_duration_seconds", "Task run time, every outcome", labels=["task", "queue"]
    )
    enqueued = CounterMetricFamily(
        "rqscope_task_enqueued", "Jobs enqueued through the task registry", labels=["task", "queue"]
    )
    for (task, queue), entry in sorted(stats.items()):
        for outcome in OUTCOMES:
            runs.add_metric([task, queue, outcome], entry.outcomes.get(outcome, 0))
        duration.add_metric([task, queue], buckets=entry.cumulative_buckets(), sum_value=entry.duration_sum)
        enqueued.add_metric([task, queue], entry.enqueued)
    return [runs, duration, enqueued]
