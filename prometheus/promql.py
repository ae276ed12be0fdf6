"""rqscope's alert kinds as PromQL: one expression template per kind, in one table."""

# Every series carries `redis`, the Redis instance it was read from, and one sidecar may watch several. Aggregations
# name what they drop (`without`) and matches what they ignore (`ignoring`), never `redis`: two instances' queues of
# the same name never merge, each alert keeps its instance's `redis` label, and the target's own labels (`instance`,
# which the dashboard link reads, and any an operator adds for routing) stay on the alert as well.

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.rates import FAILED_OUTCOMES

ALERT_PREFIX = "Rqscope"  # alert names: RqscopeQueueBacklog for rqscope's QueueBacklog
FAILED = f'outcome=~"{"|".join(FAILED_OUTCOMES)}"'
RUNS = "rqscope_task_runs_total"
QUEUED = 'state="queued"'


def sel(metric: str, *matchers: str) -> str:
    """A vector selector; empty matchers are left out."""
    kept = [m for m in matchers if m]
    return f"{metric}{{{', '.join(kept)}}}" if kept else metric


def duration(seconds: float) -> str:
    """A Prometheus duration as Prometheus prints one: 300 -> 5m, 330 -> 5m30s, 0 -> 0s."""
    millis = round(seconds * 1000)
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if millis >= size:
            out += f"{millis // size}{unit}"
            millis %= size
    return out or "0s"


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def glob_regex(pattern: str) -> str:
    """An fnmatch glob as an RE2 regex (Prometheus anchors label regexes at both ends)."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        end = pattern.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif end != -1:
            body = pattern[i + 1 : end]
            body = body.replace("\\", "\\\\")
            # fnmatch's [!x] negates; a leading ^ is a literal there, as it is not in RE2
            body = "^" + body[1:] if body.startswith("!") else ("\\" + body if body.startswith("^") else body)
            out.append(f"[{body}]")
            i = end
        else:
            out.append("\\" + char if char.isascii() and not char.isalnum() and char != "_" else char)
        i += 1
    return "".join(out)


def queue_matcher(rule: Rule) -> str:
    if not rule.queues:
        return ""
    return "queue=~" + json.dumps("|".join(glob_regex(p) for p in rule.queues), ensure_ascii=False)


@dataclass(frozen=True)
class Template:
    """How one kind reads in PromQL, and how its alert describes itself."""

    expr: Callable[[str, str], str]  # (queue matcher, window) -> the expression before the threshold comparison
    op: str | None  # compares the expression with the rule's threshold; None: the kind has no threshold
    unit: str  # how the description prints the threshold: count, seconds or ratio
    meaning: str  # what holds while the alert fires; {threshold} and {window} are filled in
    page: str  # dashboard page, as rqscope's own notifications link it; {queue} is the queue label


Q_QUEUED = "queues/{queue}/queued"
Q_FAILED = "queues/{queue}/failed"
TEMPLATES: dict[str, Template] = {
    "queue_depth": Template(
        lambda q, w: sel("rqscope_queue_jobs", QUEUED, q),
        ">",
        "count",
        "more than {threshold} jobs are queued",
        Q_QUEUED,
    ),
    "queue_latency": Template(
        lambda q, w: sel("rqscope_queue_latency_seconds", q),
        ">",
        "seconds",
        "the oldest queued job has waited more than {threshold}",
        Q_QUEUED,
    ),
    "failed_jobs": Template(
        lambda q, w: f"sum without (task, outcome) (increase({sel(RUNS, FAILED, q)}[{w}]))",
        ">",
        "count",
        "more than {threshold} runs failed (failure, timeout or killed) in {window}",
        Q_FAILED,
    ),
    "failure_ratio": Template(
        lambda q, w: (
            f"sum without (task, outcome) (rate({sel(RUNS, FAILED, q)}[{w}]))"
            f" / sum without (task, outcome) (rate({sel(RUNS, q)}[{w}]))"
        ),
        ">",
        "ratio",
        "more than {threshold} of runs failed over {window}",
        Q_FAILED,
    ),
    "queue_without_workers": Template(
        lambda q, w: (
            f"{sel('rqscope_queue_jobs', QUEUED, q)} > 0"
            f" and ignoring (state) sum without (state) ({sel('rqscope_queue_workers', q)}) == 0"
        ),
        None,
        "",
        "jobs are queued and no live worker listens to the queue",
        Q_QUEUED,
    ),
    "workers_below": Template(
        lambda q, w: 'sum without (state) (rqscope_workers{state!="dead"})',
        "<",
        "count",
        "fewer than {threshold} workers are live",
        "workers",
    ),
    "dead_workers": Template(
        lambda q, w: 'rqscope_workers{state="dead"}',
        ">",
        "count",
        "more than {threshold} workers stopped sending heartbeats",
        "workers",
    ),
    "pool_utilisation": Template(
        lambda q, w: (
            'sum without (hostname, state) (rqscope_redis_pool_connections{state="in_use"})'
            " / (sum without (hostname) (rqscope_redis_pool_max_connections) > 0)"
        ),
        ">",
        "ratio",
        "a process role's Redis pools are more than {threshold} in use",
        "",
    ),
    "pool_exhausted": Template(
        lambda q, w: f"sum without (hostname) (increase(rqscope_redis_pool_exhausted_total[{w}]))",
        ">",
        "count",
        "Redis pools had no connection to give more than {threshold} times in {window}",
        "",
    ),
    "redis_clients": Template(
        lambda q, w: "rqscope_redis_connected_clients / (rqscope_redis_max_clients > 0)",
        ">",
        "ratio",
        "Redis has more than {threshold} of maxclients connected",
        "",
    ),
    "redis_rejected_connections": Template(
        lambda q, w: f"increase(rqscope_redis_rejected_connections_total[{w}])",
        ">",
        "count",
        "Redis rejected more than {threshold} connections in {window}",
        "",
    ),
    "redis_memory": Template(
        lambda q, w: "rqscope_redis_memory_used_bytes / (rqscope_redis_memory_max_bytes > 0)",
        ">",
        "ratio",
        "Redis uses more than {threshold} of maxmemory",
        "",
    ),
    "redis_down": Template(lambda q, w: "rqscope_redis_up == 0", None, "", "Redis is unreachable from rqscope", ""),
    "rate_limit_held": Template(
        lambda q, w: "rqscope_rate_limit_oldest_held_seconds",
        ">",
        "seconds",
        "a job held back by the concurrency limit has waited more than {threshold} for a slot",
        "",
    ),
    "cron_overdue": Template(
        lambda q, w: "rqscope_cron_job_overdue_seconds",
        ">",
        "seconds",
        "a cron job is more than {threshold} past its due run (or the run its dead scheduler missed)",
        "cron",
    ),
}


def template(rule: Rule) -> Template:
    if rule.kind not in TEMPLATES:
        raise ValueError(f"rule {rule.name}: kind {rule.kind!r} has no PromQL template in prometheus/promql.py")
    return TEMPLATES[rule.kind]


def expression(rule: Rule) -> str:
    spec = template(rule)
    expr = spec.expr(queue_matcher(rule), duration(rule.window_seconds))
    return f"{expr} {spec.op} {number(rule.threshold)}" if spec.op else expr
