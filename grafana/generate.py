"""Generate the Grafana dashboards in grafana/dashboards/ from code: `python grafana/generate.py`.

A test regenerates them and compares, so the JSON and this file cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "rqscope-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
# One sidecar may watch several Redis instances and every series carries `redis`: every selector filters on the
# `redis` variable, and every aggregation keeps `redis`, so two instances' queues of the same name never merge.
REDIS = 'redis=~"$redis"'
SEL = f'{REDIS}, job="$job", instance=~"$instance"'
QSEL = f'{SEL}, queue=~"$queue"'
FAILED = 'outcome=~"failure|timeout|killed"'
ALL = {"selected": True, "text": ["All"], "value": ["$__all"]}


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "instant": instant,
        "range": not instant,
    }


def panel(kind: str, title: str, targets: list[dict[str, Any]], unit: str = "short") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }


def stat(title: str, expr: str) -> dict[str, Any]:
    """A stat panel with one value per Redis instance."""
    return panel("stat", title, [target(expr, "{{redis}}", instant=True)])


def layout(rows: list[list[dict[str, Any]]], height: int = 8) -> list[dict[str, Any]]:
    """Place panels row by row, each row's panels sharing the 24-column width; ids in order."""
    panels, y, next_id = [], 0, 1
    for row in rows:
        width = 24 // len(row)
        for index, item in enumerate(row):
            item = {**item, "id": next_id, "gridPos": {"x": index * width, "y": y, "w": width, "h": height}}
            panels.append(item)
            next_id += 1
        y += height
    return panels


def variable(name: str, query: str, multi: bool = True, current: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "allValue": ".*" if multi else None,
        "current": current or {},
        "sort": 1,
    }


def variables() -> list[dict[str, Any]]:
    """The Redis instance first: the others list only what the chosen instances hold."""
    return [
        variable("redis", "label_values(rqscope_redis_up, redis)", current=ALL),
        variable("job", f"label_values(rqscope_redis_up{{{REDIS}}}, job)", multi=False),
        variable("instance", f'label_values(rqscope_redis_up{{{REDIS}, job="$job"}}, instance)'),
        variable("queue", f'label_values(rqscope_queue_jobs{{{REDIS}, job="$job"}}, queue)'),
    ]


def dashboard(uid: str, title: str, rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    alerts = {
        "name": "Firing alerts",
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "red",
        "expr": f'ALERTS{{alertstate="firing", job="$job", {REDIS}}}',
        "titleFormat": "{{alertname}}",
        "textFormat": "{{redis}} {{queue}} {{severity}}",
        "step": "60s",
        "useValueForTime": False,
    }
    return {
        "uid": uid,
        "title": title,
        "tags": ["rqscope"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables()},
        "annotations": {"list": [alerts]},
        "panels": layout(rows),
    }


def overview() -> dict[str, Any]:
    runs = f"sum by (redis) (rate(rqscope_task_runs_total{{{QSEL}}}[5m]))"
    failed = f"sum by (redis) (rate(rqscope_task_runs_total{{{QSEL}, {FAILED}}}[5m]))"
    latency = f"max by (redis, queue) (rqscope_queue_latency_seconds{{{QSEL}}})"
    return dashboard(
        "rqscope-overview",
        "rqscope / Overview",
        [
            [
                stat("Queued", f'sum by (redis) (rqscope_queue_jobs{{{QSEL}, state="queued"}})'),
                stat("Failed", f'sum by (redis) (rqscope_queue_jobs{{{QSEL}, state="failed"}})'),
                stat("Live workers", f'sum by (redis) (rqscope_workers{{{SEL}, state!="dead"}})'),
                stat("Redis up", f"min by (redis) (rqscope_redis_up{{{SEL}}})"),
            ],
            [
                panel("timeseries", "Throughput (runs/s)", [target(runs, "{{redis}} runs")], "ops"),
                panel(
                    "timeseries",
                    "Failure ratio",
                    [target(f"{failed} / {runs}", "{{redis}} failed share")],
                    "percentunit",
                ),
            ],
            [panel("timeseries", "Queue latency", [target(latency, "{{redis}} {{queue}}")], "s")],
        ],
    )


def queues() -> dict[str, Any]:
    by_state = f"sum by (redis, state) (rqscope_queue_jobs{{{QSEL}}})"
    keys = "job, instance, redis, queue"
    orphans = (
        f'rqscope_queue_jobs{{{QSEL}, state="queued"}} > 0 and on ({keys}) '
        f"sum by ({keys}) (rqscope_queue_workers{{{QSEL}}}) == 0"
    )
    return dashboard(
        "rqscope-queues",
        "rqscope / Queues",
        [
            [panel("timeseries", "Jobs by state", [target(by_state, "{{redis}} {{state}}")])],
            [
                panel(
                    "timeseries",
                    "Latency by queue",
                    [target(f"rqscope_queue_latency_seconds{{{QSEL}}}", "{{redis}} {{queue}}")],
                    "s",
                ),
                panel("table", "Queues with jobs and no workers", [target(orphans, instant=True)]),
            ],
        ],
    )


def tasks() -> dict[str, Any]:
    outcomes = f"sum by (redis, outcome) (rate(rqscope_task_runs_total{{{QSEL}}}[5m]))"
    buckets = f"sum by (redis, le, task) (rate(rqscope_task_duration_seconds_bucket{{{QSEL}}}[5m]))"
    failing = f"topk(10, sum by (redis, task) (increase(rqscope_task_runs_total{{{QSEL}, {FAILED}}}[1h])))"
    quantiles = [
        target(f"histogram_quantile({q}, {buckets})", f"p{label} {{{{redis}}}} {{{{task}}}}", ref)
        for q, label, ref in ((0.5, 50, "A"), (0.95, 95, "B"), (0.99, 99, "C"))
    ]
    return dashboard(
        "rqscope-tasks",
        "rqscope / Tasks",
        [
            [panel("timeseries", "Runs by outcome", [target(outcomes, "{{redis}} {{outcome}}")], "ops")],
            [panel("timeseries", "Duration p50 / p95 / p99", quantiles, "s")],
            [panel("bargauge", "Top failing tasks (1h)", [target(failing, "{{redis}} {{task}}", instant=True)])],
        ],
    )


def workers() -> dict[str, Any]:
    def per_host(title: str, expr: str, unit: str) -> dict[str, Any]:
        return panel("timeseries", title, [target(expr, "{{redis}} {{hostname}}")], unit)

    by_state = f"sum by (redis, state) (rqscope_workers{{{SEL}}})"
    return dashboard(
        "rqscope-workers",
        "rqscope / Workers",
        [
            [
                panel("timeseries", "Workers by state", [target(by_state, "{{redis}} {{state}}")]),
                per_host("Heartbeat age", f"rqscope_worker_heartbeat_age_seconds{{{SEL}}}", "s"),
            ],
            [
                per_host("Worker RSS", f"rqscope_worker_resident_memory_bytes{{{SEL}}}", "bytes"),
                per_host("Worker CPU", f"rate(rqscope_worker_cpu_seconds_total{{{SEL}}}[5m])", "percentunit"),
            ],
        ],
    )


def redis() -> dict[str, Any]:
    in_use = f'sum by (redis, role) (rqscope_redis_pool_connections{{{SEL}, state="in_use"}})'
    pool_use = f"{in_use} / sum by (redis, role) (rqscope_redis_pool_max_connections{{{SEL}}})"
    exhausted = f"sum by (redis, role) (rate(rqscope_redis_pool_exhausted_total{{{SEL}}}[5m]))"
    clients = [
        target(f"rqscope_redis_connected_clients{{{SEL}}}", "{{redis}} connected", "A"),
        target(f"rqscope_redis_max_clients{{{SEL}}}", "{{redis}} maxclients", "B"),
    ]
    refused = [
        target(f"rate(rqscope_redis_rejected_connections_total{{{SEL}}}[5m])", "{{redis}} rejected", "A"),
        target(exhausted, "{{redis}} exhausted {{role}}", "B"),
    ]
    memory = [target(f"rqscope_redis_memory_used_bytes{{{SEL}}}", "{{redis}} used")]
    return dashboard(
        "rqscope-redis",
        "rqscope / Redis",
        [
            [panel("timeseries", "Clients and maxclients", clients), panel("timeseries", "Memory", memory, "bytes")],
            [
                panel("timeseries", "Pool use by role", [target(pool_use, "{{redis}} {{role}}")], "percentunit"),
                panel("timeseries", "Rejected connections and pool exhaustion", refused, "ops"),
            ],
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    boards = [overview(), queues(), tasks(), workers(), redis()]
    return {board["uid"]: board for board in boards}


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, board in dashboards().items():
        (OUT / f"{name}.json").write_text(render(board))


if __name__ == "__main__":
    main()
