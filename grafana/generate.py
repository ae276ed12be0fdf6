"""Generate the Grafana dashboards in grafana/dashboards/ from code: `python grafana/generate.py`.

A test regenerates them and compares, so the JSON and this file cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "rqscope-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
SEL = 'job="$job", instance=~"$instance"'
QSEL = f'{SEL}, queue=~"$queue"'
FAILED = 'outcome=~"failure|timeout|killed"'


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref,
            "instant": instant, "range": not instant}  # fmt: skip


def panel(kind: str, title: str, targets: list[dict[str, Any]], unit: str = "short", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "title": title, "datasource": DATASOURCE, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}, **extra}  # fmt: skip


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


def variable(name: str, query: str, multi: bool = True) -> dict[str, Any]:
    return {"name": name, "type": "query", "datasource": DATASOURCE, "query": {"query": query, "refId": name},
            "definition": query, "refresh": 2, "includeAll": multi, "multi": multi, "allValue": ".*" if multi else None,
            "current": {}, "sort": 1}  # fmt: skip


def dashboard(uid: str, title: str, rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "tags": ["rqscope"], "timezone": "utc", "schemaVersion": 39, "version": 1,
        "editable": False, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            variable("job", "label_values(rqscope_redis_up, job)", multi=False),
            variable("instance", 'label_values(rqscope_redis_up{job="$job"}, instance)'),
            variable("queue", 'label_values(rqscope_queue_jobs{job="$job"}, queue)'),
        ]},
        "annotations": {"list": [{
            "name": "Firing alerts", "datasource": DATASOURCE, "enable": True, "iconColor": "red",
            "expr": 'ALERTS{alertstate="firing", job="$job"}', "titleFormat": "{{alertname}}",
            "textFormat": "{{queue}} {{severity}}", "step": "60s", "useValueForTime": False,
        }]},
        "panels": layout(rows),
    }  # fmt: skip


def dashboards() -> dict[str, dict[str, Any]]:
    runs = f"sum(rate(rqscope_task_runs_total{{{QSEL}}}[5m]))"
    failed = f"sum(rate(rqscope_task_runs_total{{{QSEL}, {FAILED}}}[5m]))"
    quantile = "histogram_quantile({q}, sum by (le, task) (rate(rqscope_task_duration_seconds_bucket{{{sel}}}[5m])))"
    return {
        "rqscope-overview": dashboard("rqscope-overview", "rqscope / Overview", [
            [panel("stat", "Queued", [target(f'sum(rqscope_queue_jobs{{{QSEL}, state="queued"}})', instant=True)]),
             panel("stat", "Failed", [target(f'sum(rqscope_queue_jobs{{{QSEL}, state="failed"}})', instant=True)]),
             panel("stat", "Live workers", [target(f'sum(rqscope_workers{{{SEL}, state!="dead"}})', instant=True)]),
             panel("stat", "Redis up", [target(f"min(rqscope_redis_up{{{SEL}}})", instant=True)])],
            [panel("timeseries", "Throughput (runs/s)", [target(runs, "runs")], "ops"),
             panel("timeseries", "Failure ratio", [target(f"{failed} / {runs}", "failed share")], "percentunit")],
            [panel("timeseries", "Queue latency", [target(f"max by (queue) (rqscope_queue_latency_seconds{{{QSEL}}})",
                                                          "{{queue}}")], "s")],
        ]),
        "rqscope-queues": dashboard("rqscope-queues", "rqscope / Queues", [
            [panel("timeseries", "Jobs by state", [target(f"sum by (state) (rqscope_queue_jobs{{{QSEL}}})", "{{state}}")])],
            [panel("timeseries", "Latency by queue", [target(f"rqscope_queue_latency_seconds{{{QSEL}}}", "{{queue}}")], "s"),
             panel("table", "Queues with jobs and no workers", [target(
                 f'rqscope_queue_jobs{{{QSEL}, state="queued"}} > 0 and on (job, instance, queue) '
                 f"sum by (job, instance, queue) (rqscope_queue_workers{{{QSEL}}}) == 0", instant=True)])],
        ]),
        "rqscope-tasks": dashboard("rqscope-tasks", "rqscope / Tasks", [
            [panel("timeseries", "Runs by outcome", [target(
                f"sum by (outcome) (rate(rqscope_task_runs_total{{{QSEL}}}[5m]))", "{{outcome}}")], "ops")],
            [panel("timeseries", "Duration p50 / p95 / p99", [
                target(quantile.format(q=0.5, sel=QSEL), "p50 {{task}}", "A"),
                target(quantile.format(q=0.95, sel=QSEL), "p95 {{task}}", "B"),
                target(quantile.format(q=0.99, sel=QSEL), "p99 {{task}}", "C")], "s")],
            [panel("bargauge", "Top failing tasks (1h)", [target(
                f"topk(10, sum by (task) (increase(rqscope_task_runs_total{{{QSEL}, {FAILED}}}[1h])))", "{{task}}",
                instant=True)])],
        ]),
        "rqscope-workers": dashboard("rqscope-workers", "rqscope / Workers", [
            [panel("timeseries", "Workers by state", [target(f"sum by (state) (rqscope_workers{{{SEL}}})", "{{state}}")]),
             panel("timeseries", "Heartbeat age", [target(f"rqscope_worker_heartbeat_age_seconds{{{SEL}}}",
                                                          "{{hostname}}")], "s")],
            [panel("timeseries", "Worker RSS", [target(f"rqscope_worker_resident_memory_bytes{{{SEL}}}", "{{hostname}}")],
                   "bytes"),
             panel("timeseries", "Worker CPU", [target(f"rate(rqscope_worker_cpu_seconds_total{{{SEL}}}[5m])",
                                                       "{{hostname}}")], "percentunit")],
        ]),
        "rqscope-redis": dashboard("rqscope-redis", "rqscope / Redis", [
            [panel("timeseries", "Clients and maxclients", [
                target(f"rqscope_redis_connected_clients{{{SEL}}}", "connected", "A"),
                target(f"rqscope_redis_max_clients{{{SEL}}}", "maxclients", "B")]),
             panel("timeseries", "Memory", [target(f"rqscope_redis_memory_used_bytes{{{SEL}}}", "used")], "bytes")],
            [panel("timeseries", "Pool use by role", [target(
                f'sum by (role) (rqscope_redis_pool_connections{{{SEL}, state="in_use"}}) / '
                f"sum by (role) (rqscope_redis_pool_max_connections{{{SEL}}})", "{{role}}")], "percentunit"),
             panel("timeseries", "Rejected connections and pool exhaustion", [
                 target(f"rate(rqscope_redis_rejected_connections_total{{{SEL}}}[5m])", "rejected", "A"),
                 target(f"sum by (role) (rate(rqscope_redis_pool_exhausted_total{{{SEL}}}[5m]))", "exhausted {{role}}",
                        "B")], "ops")],
        ]),
    }  # fmt: skip


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, board in dashboards().items():
        (OUT / f"{name}.json").write_text(render(board))


if __name__ == "__main__":
    main()
