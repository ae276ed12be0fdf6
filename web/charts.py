"""Chart pages (a queue, a task) and the text alternative of each chart, rendered with the page.

Charts are drawn in the browser by static/charts.js with the vendored uPlot, from the JSON series in
api_series; the page carries the same series as a table, so it reads without script, and the script
keeps that table current when it refreshes the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for
from redis import RedisError
from rqscope.monitor import queue_history, series
from rqscope.monitor.rollups import WINDOWS, Window, read_window
from rqscope.tasks.metrics import OUTCOMES
from rqscope.web import names
from rqscope.web.state import state

bp = Blueprint("charts", __name__)
bp.record_once(names.install)
TABLE_ROWS = 60  # the newest rows; the whole series is in the JSON the table links to
TASK_WINDOWS = ("1h", "24h", "7d")


def sparkline(values: Sequence[float], width: int = 240, height: int = 36) -> dict[str, object]:
    """Points for an SVG polyline of `values` (oldest first), scaled to the box."""
    if not values:
        return {"points": "", "width": width, "height": height, "peak": 0}
    peak = max(values) or 1
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / peak) * (height - 4):.1f}" for i, v in enumerate(values))
    return {"points": points, "width": width, "height": height, "peak": max(values)}


def _when(epoch: int, step: int) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%H:%M") if step < 3600 else moment.strftime("%m-%d %H:00")


def _cell(value: object) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def table(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """Column headings and the newest rows of one chart's series, as static/charts.js builds them."""
    if kind == "task-histogram":
        columns = ["Duration ≤ (s)", "Runs"]
        return {"columns": columns, "rows": [[le, _cell(n)] for le, n in zip(*data["histogram"].values(), strict=True)]}
    if kind == "runs":
        columns, values = [f"{o} (runs/s)" for o in OUTCOMES], [data["outcomes"][o] for o in OUTCOMES]
    elif kind == "queue-depth":
        columns, values = ["Queued (jobs)"], [data["queued"]]
    elif kind == "queue-latency":
        columns, values = ["Latency (s)"], [data["latency_seconds"]]
    elif kind == "task-quantiles":
        columns, values = [f"{q} (s)" for q in series.QUANTILES], list(data["quantiles_seconds"].values())
    elif kind == "task-failure":
        columns, values = ["Runs", "Failure %"], [data["runs"], data["failure_percent"]]
    else:
        raise ValueError(kind)
    rows = [[_when(t, data["step_seconds"]), *(_cell(v[i]) for v in values)] for i, t in enumerate(data["t"])]
    return {"columns": ["Time (UTC)", *columns], "rows": rows[-TABLE_ROWS:]}


def chart(kind: str, title: str, data: dict[str, Any], src: str, windows: Sequence[str], live: bool = False) -> dict:
    """What the chart macro needs: the series' JSON address, its table, its window switch."""
    return {
        "kind": kind,
        "title": title,
        "src": src,
        "window": data["window"],
        "windows": list(windows),
        "live": live,
        "table": table(kind, data),
    }


def _window(choices: Sequence[str], default: str) -> str:
    window = request.args.get("window", default)
    if window not in choices:
        abort(400, f"window must be one of {', '.join(choices)}")
    return window


@bp.get("/queues/<name:queue>")
def queue_page(queue: str) -> str:
    current = state()
    window = _window(tuple(queue_history.WINDOWS), "1h")
    found = next((q for q in current.snapshots.get().queues if q.name == queue), None)
    points = series.queue(queue_history.read(current.redis, queue, window))
    runs = series.runs(read_window(current.redis, window, queue=queue))
    src = url_for("api_series.queue", queue=queue)
    windows = list(queue_history.WINDOWS)
    charts = [
        chart("queue-depth", "Queued jobs", points, src, windows),
        chart("queue-latency", "Latency (age of the oldest queued job)", points, src, windows),
        chart("runs", "Runs per second by outcome", runs, url_for("api_series.queue_runs", queue=queue), windows),
    ]
    return render_template("dashboard/queue.html", queue=queue, found=found, charts=charts, window=window)


@bp.get("/tasks/<name:task>")
def task_page(task: str) -> str:
    current = state()
    window = _window(TASK_WINDOWS, "1h")
    snapshot = current.snapshots.get()
    stats = {q: s for (t, q), s in snapshot.tasks.items() if t == task}
    if snapshot.redis.up and not stats and task not in current.registry.names():
        abort(404, "no task of this name has run or is registered")
    data = series.task(read_window(current.redis, window, task=task))
    src = url_for("api_series.task", task=task)
    charts = [
        chart("task-histogram", "Run time histogram", data, src, TASK_WINDOWS),
        chart("task-quantiles", "Run time percentiles", data, src, TASK_WINDOWS),
        chart("task-failure", "Failure %", data, src, TASK_WINDOWS),
    ]
    return render_template("dashboard/task.html", task=task, stats=stats, data=data, charts=charts, window=window)


def overview_chart() -> dict[str, Any]:
    """The overview's live chart of runs per second by outcome, over the last 15 minutes to start with."""
    window = request.args.get("window", "15m")  # the switch's links, for a browser without script
    window = window if window in WINDOWS else "15m"
    try:
        found = read_window(state().redis, window)
    except RedisError:  # the page's banner says Redis is away; the chart is empty, not a made-up zero line
        found = Window(window, WINDOWS[window][0], [], [], 0.0)
    data = series.runs(found)
    return chart("runs", "Runs per second by outcome", data, url_for("api_series.runs"), tuple(WINDOWS), live=True)
