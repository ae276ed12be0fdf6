"""Overview, workers, task metrics and the audit log."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from redis import RedisError
from rqscope.monitor import audit
from rqscope.monitor.alerts import silences
from rqscope.monitor.alerts.state import Alert
from rqscope.monitor.rates import read_series
from rqscope.monitor.rollups import read_window
from rqscope.monitor.series import recent
from rqscope.monitor.snapshot import DEFAULT_WORKER_TTL_SECONDS, WorkerState
from rqscope.monitor.workers import forget_dead_worker
from rqscope.web import names
from rqscope.web.access import caller
from rqscope.web.api import silence_from, worker_page
from rqscope.web.args import MAX_PAGE, int_arg
from rqscope.web.charts import overview_chart, sparkline
from rqscope.web.state import state
from werkzeug.wrappers import Response

bp = Blueprint("dashboard", __name__)
bp.record_once(names.install)
SORTS = ("name", "failure_ratio", "runs", "p95")
WINDOW_MINUTES = 15
WORKERS_PER_PAGE = 50


@bp.get("/")
def overview() -> str:
    return render_template(
        "dashboard/overview.html",
        firing=[a for a in _alerts() if a.state == "firing"],
        runs_chart=overview_chart(),
        **_recent_runs(),
    )


def _recent_runs() -> dict[str, Any]:
    # the 15 minutes' per-outcome totals only: five fields a minute, whatever the number of tasks
    runs, failed, seconds = recent(read_window(state().redis, f"{WINDOW_MINUTES}m"))
    return {
        "throughput": runs / seconds,
        "failure_ratio": (failed / runs) if runs else None,
        "window_minutes": WINDOW_MINUTES,
    }


@bp.get("/overview/live")
def overview_live() -> Response:
    """The overview's figures that the counts poll (/api/queues) does not carry, for its live refresh."""
    snapshot = state().snapshots.get()
    workers = {"live": len(snapshot.live_workers), "dead": len(snapshot.dead_workers)}
    return jsonify(**_recent_runs(), workers=workers, redis_up=snapshot.redis.up)


def stale(worker: WorkerState) -> bool:
    """No heartbeat within RQ's worker TTL: the worker is gone, or stuck where it cannot heartbeat."""
    return worker.heartbeat_age is None or worker.heartbeat_age > DEFAULT_WORKER_TTL_SECONDS


@bp.get("/workers")
def workers() -> str:
    snapshot = state().snapshots.get()
    page = int_arg("page", 1, 1, MAX_PAGE)
    # by name, as GET /api/workers pages them (the page's live refresh reads that); the pages holding a
    # stale or dead worker are linked above the table so that none hides on page 3
    shown, pages = worker_page(snapshot.workers, page, WORKERS_PER_PAGE)
    flagged = [i for i, w in enumerate(snapshot.workers) if w.dead or stale(w)]
    return render_template(
        "dashboard/workers.html",
        workers=shown,
        page=min(page, pages),
        pages=pages,
        per_page=WORKERS_PER_PAGE,
        stale=stale,
        stale_after=DEFAULT_WORKER_TTL_SECONDS,
        stale_count=sum(1 for w in snapshot.workers if stale(w)),
        flagged_pages=sorted({i // WORKERS_PER_PAGE + 1 for i in flagged}),
    )


@bp.post("/workers/<name:name>/forget")
def forget_worker(name: str) -> Response:
    who = caller()
    current = state()
    snapshot = current.snapshots.get()
    if not snapshot.redis.up:
        abort(503, "Redis is unavailable; try again shortly")
    worker = next((w for w in snapshot.workers if w.name == name), None)
    if worker is None:
        abort(404, "no such worker")
    if not worker.dead:
        abort(409, "only a worker flagged dead can be cleaned up")
    failed = forget_dead_worker(current.redis, worker, current.registry.task_name)
    audit.record(current.redis, who.name, "forget worker", names.label(name), 1)
    flash(f"Removed dead worker {names.label(name)}." + (f" Its job {failed} is now failed." if failed else ""))
    return redirect(url_for("dashboard.workers"))


@bp.get("/tasks")
def tasks() -> str:
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
        rows.append(
            {
                "task": task,
                "queue": queue,
                "runs": runs,
                "outcomes": stats.outcomes,
                "failure_ratio": failed / runs if runs else 0.0,
                "throughput": recent_runs / seconds,
                "p50": stats.quantile(0.5),
                "p95": stats.quantile(0.95),
                "p99": stats.quantile(0.99),
                "chart": sparkline(per_minute),
            }
        )
    reverse = sort != "name"
    rows.sort(key=lambda r: (r[sort] if r[sort] is not None else -1, r["task"]), reverse=reverse)
    return render_template(
        "dashboard/tasks.html", rows=rows, sort=sort, total_chart=sparkline([m.runs for m in series.total])
    )


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
    current = state()
    engine = current.alerts
    return render_template(
        "dashboard/alerts.html",
        alerts=_alerts(),
        rules=engine.rules if engine else (),
        silences=silences.all_silences(current.redis),
        now=time.time(),
        history=engine.history() if engine else [],
        dead_letters=engine.dead_letters() if engine else [],
    )


@bp.post("/alerts/silences")
def create_silence() -> Response:
    who = caller()
    current = state()
    matchers = {}
    for part in filter(None, (p.strip() for p in request.form.get("matchers", "").split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            abort(400, "write matchers as label=value, separated by commas")
        matchers[name.strip()] = value.strip()
    body = {
        "matchers": matchers,
        "duration": request.form.get("duration") or "1h",
        "comment": request.form.get("comment", ""),
    }
    matchers, seconds, comment = silence_from(body)
    now = time.time()
    silences.create(current.redis, matchers, now, now + seconds, who.name, comment)
    audit.record(current.redis, who.name, "silence", ", ".join(f"{k}={v}" for k, v in matchers.items()), 1)
    flash("Silence created.")
    return redirect(url_for("dashboard.alerts"))


@bp.post("/alerts/silences/<silence_id>/expire")
def expire_silence(silence_id: str) -> Response:
    who = caller()
    current = state()
    if len(silence_id) > 64 or not silences.expire(current.redis, silence_id, time.time()):
        abort(404, "no such silence")
    audit.record(current.redis, who.name, "expire silence", silence_id, 1)
    flash("Silence expired.")
    return redirect(url_for("dashboard.alerts"))


@bp.get("/audit")
def audit_log() -> str:
    return render_template("dashboard/audit.html", entries=audit.recent(state().redis, 200))
