"""Overview, workers, task metrics and the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from redis import RedisError
from werkzeug.wrappers import Response

from monitor import audit
from monitor.alert_state import Alert
from monitor.rates import read_series
from monitor.snapshot import WORKER_KEY_PREFIX, WORKERS_KEY
from web.charts import sparkline
from web.pages import operator, viewer
from web.state import state

bp = Blueprint("dashboard", __name__)
SORTS = ("name", "failure_ratio", "runs", "p95")


@bp.get("/")
def overview() -> str:
    viewer()
    current = state()
    series = read_series(current.redis, minutes=16)
    runs, failed, seconds = series.window(None, 15)
    return render_template(
        "dashboard/overview.html",
        firing=[a for a in _alerts() if a.state == "firing"],
        throughput=runs / seconds,
        failure_ratio=(failed / runs) if runs else None,
        window_minutes=15,
    )


@bp.get("/workers")
def workers() -> str:
    viewer()
    return render_template("dashboard/workers.html")


@bp.post("/workers/<name>/forget")
def forget_worker(name: str) -> Response:
    who = operator()
    current = state()
    snapshot = current.snapshots.get()
    worker = next((w for w in snapshot.workers if w.name == name), None)
    if worker is None or not worker.dead:
        abort(409, "only a worker flagged dead can be cleaned up")
    with current.redis.pipeline() as pipe:
        pipe.srem(WORKERS_KEY, WORKER_KEY_PREFIX + name)
        for queue in worker.queues:
            pipe.srem(f"rq:workers:{queue}", WORKER_KEY_PREFIX + name)
        pipe.delete(WORKER_KEY_PREFIX + name)
        pipe.execute()
    audit.record(current.redis, who.name, "forget worker", name, 1)
    flash(f"Removed dead worker {name}.")
    return redirect(url_for("dashboard.workers"))


@bp.get("/tasks")
def tasks() -> str:
    viewer()
    current = state()
    sort = request.args.get("sort", "failure_ratio")
    if sort not in SORTS:
        abort(400, f"sort must be one of {', '.join(SORTS)}")
    series = read_series(current.redis, minutes=61)
    rows = []
    for (task, queue), stats in current.snapshots.get().tasks.items():
        runs = stats.runs
        failed = stats.outcomes["failure"] + stats.outcomes["timeout"] + stats.outcomes["killed"]
        recent_runs, recent_failed, seconds = series.window(task, 5)
        per_minute = [m.runs for m in series.by_task.get(task, [])]
        rows.append({
            "task": task, "queue": queue, "runs": runs, "outcomes": stats.outcomes,
            "failure_ratio": failed / runs if runs else 0.0, "throughput": recent_runs / seconds,
            "p50": stats.quantile(0.5), "p95": stats.quantile(0.95), "p99": stats.quantile(0.99),
            "chart": sparkline(per_minute),
        })  # fmt: skip
    reverse = sort != "name"
    rows.sort(key=lambda r: (r[sort] if r[sort] is not None else -1, r["task"]), reverse=reverse)
    return render_template("dashboard/tasks.html", rows=rows, sort=sort, total_chart=sparkline(
        [m.runs for m in series.total]))  # fmt: skip


def _alerts() -> list[Alert]:
    engine = state().alerts
    if engine is None:
        return []
    try:
        return sorted(engine.load().values(), key=lambda a: ({"firing": 0, "pending": 1}.get(a.state, 2), a.rule))
    except RedisError:
        return []


@bp.get("/alerts")
def alerts() -> str:
    viewer()
    engine = state().alerts
    return render_template("dashboard/alerts.html", alerts=_alerts(), rules=engine.rules if engine else ())


@bp.get("/audit")
def audit_log() -> str:
    viewer()
    return render_template("dashboard/audit.html", entries=audit.recent(state().redis, 200))
