"""RQ's cron for on-call: `GET /api/cron` and the Cron page, both from the shared, cached cron read."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, render_template
from rqscope.monitor.cron import CronJobState, CronSchedulerState, CronState
from rqscope.monitor.cron_fetch import CronCache
from rqscope.monitor.report import iso
from rqscope.web import names
from rqscope.web.state import state

bp = Blueprint("cron", __name__)
bp.record_once(names.install)
UNAVAILABLE = "Redis is unavailable; try again shortly"


def cron_cache() -> CronCache:
    return state().cron


def _read() -> CronState | None:
    """The cron read, or None when this request's snapshot already found Redis down (no second wait)."""
    if not state().snapshots.get().redis.up:
        return None
    cron = cron_cache().get()
    return cron if cron.up else None


def scheduler_row(scheduler: CronSchedulerState) -> dict[str, Any]:
    return {
        "name": scheduler.name,
        "hostname": scheduler.hostname,
        "pid": scheduler.pid,
        "last_heartbeat": iso(scheduler.last_heartbeat),
        "alive": scheduler.alive,
    }


def job_row(job: CronJobState) -> dict[str, Any]:
    return {
        "name": job.name,
        "func": job.func,
        "queue": job.queue,
        "cron": job.cron,
        "interval": job.interval,
        "last_enqueued_at": iso(job.last_enqueued_at),
        "next_enqueue_at": iso(job.next_enqueue_at),
        "overdue_seconds": round(job.overdue_seconds, 3),
        "scheduler": job.scheduler,
    }


@bp.get("/api/cron")
def api_cron() -> tuple[Response, int]:
    cron = _read()
    if cron is None:
        return jsonify(error=UNAVAILABLE, schedulers=[], jobs=[]), 503
    return jsonify(schedulers=[scheduler_row(s) for s in cron.schedulers], jobs=[job_row(j) for j in cron.jobs]), 200


@bp.get("/cron")
def cron_page() -> tuple[str, int]:
    cron = _read()
    jobs = cron.jobs if cron else ()
    return render_template(
        "dashboard/cron.html",
        cron=cron,
        rq_jobs=[j for j in jobs if j.source == "rq"],
        rq_scheduler_jobs=[j for j in jobs if j.source != "rq"],
        unavailable=UNAVAILABLE,
    ), (200 if cron is not None else 503)
