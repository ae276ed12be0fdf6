"""Job lists, job detail, and the operator's actions on them (each confirmed, each audited)."""

from __future__ import annotations

import json
import time
from datetime import datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from redis import WatchError
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rqscope.monitor import audit
from rqscope.monitor.delete import delete_jobs, empty, entry_count
from rqscope.monitor.exceptions import summaries
from rqscope.monitor.jobs import MAX_PER_PAGE, ORDERS, JobLister, JobRow
from rqscope.monitor.report import utc_moment
from rqscope.monitor.snapshot import JOB_STATES, parse_time
from rqscope.tasks.watching import WatchTries
from rqscope.web import names
from rqscope.web.access import caller, operator_page
from rqscope.web.api import retry_in
from rqscope.web.args import MAX_PAGE, choice_arg, int_arg, job_filter
from rqscope.web.jobinfo import detail, enqueue_copy, enqueue_scheduled, fetch_job, load_view, stop_job
from rqscope.web.state import state
from werkzeug.wrappers import Response

bp = Blueprint("jobs", __name__)
bp.record_once(names.install)
BULK_ACTIONS = ("retry", "empty", "cancel")
CANCELABLE = ("queued", "scheduled", "deferred")
CANCEL_FROM = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


@bp.app_template_filter("pretty")
def pretty(value: object) -> str:
    """Decoded job data as indented JSON text, escaped by the template like any other text."""
    return json.dumps(value, indent=1, ensure_ascii=False)


def _moment(value: str | float | None) -> datetime | None:
    if isinstance(value, (int, float)):
        return utc_moment(value)
    return parse_time(value)


@bp.app_template_filter("utc")
def utc(value: str | float | None) -> str:
    """The exact time, to the second, in UTC."""
    moment = _moment(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


@bp.app_template_filter("when")
def when(value: str | float | None) -> str:
    """A time relative to now: "in 59 min", "3 s ago"; pages put the exact time in a title beside it."""
    moment = _moment(value)
    if moment is None:
        return ""
    delta = moment.timestamp() - time.time()
    seconds = abs(delta)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or unit == "s":
            amount = f"{int(seconds // size)} {unit}"
            break
    return f"in {amount}" if delta > 0 else f"{amount} ago"


@bp.app_template_filter("duration")
def duration(job: JobRow) -> str:
    """How long a job ran (ended - started): "850 ms", "12.3 s", "4 min 5 s", "2 h 3 min"; "" until it ended."""
    started, ended = _moment(job.started_at), _moment(job.ended_at)
    if started is None or ended is None:
        return ""
    seconds = max(0.0, (ended - started).total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _page_args() -> tuple[int, int, str]:
    return (
        int_arg("page", 1, 1, MAX_PAGE),
        int_arg("per_page", 25, 1, MAX_PER_PAGE),
        choice_arg("order", "newest", ORDERS),
    )


def _check_state(queue: str, state_name: str) -> None:
    if state_name not in JOB_STATES:
        abort(404, f"no registry {state_name[:40]!r}; registries are {', '.join(JOB_STATES)}")


@bp.get("/queues/<name:queue>/<state_name>")
def job_list(queue: str, state_name: str) -> str:
    _check_state(queue, state_name)
    page, per_page, order = _page_args()
    filters = job_filter(dict(request.args))
    lister = JobLister(state().redis)
    result = lister.page(queue, state_name, page, per_page, order, filters)
    summary = summaries(current_app.extensions, state().redis).get(queue) if state_name == "failed" else None
    return render_template(
        "jobs/list.html",
        queue=queue,
        state_name=state_name,
        result=result,
        filters=filters,
        summary=summary,
        pages=max(1, -(-result.total // per_page)),
    )


@bp.get("/jobs")
def find_job() -> Response:
    job_id = (request.args.get("id") or "").strip()
    if not job_id:
        abort(400, "type a job id to look up")
    return redirect(url_for("jobs.job_detail", job_id=job_id))


@bp.get("/jobs/<job_id>")
def job_detail(job_id: str) -> str:
    return render_template("jobs/detail.html", job=detail(load_view(job_id)))


def _matching(queue: str, state_name: str) -> tuple[list[str], bool]:
    filters = job_filter(dict(request.values))
    ids, limited = JobLister(state().redis).all_matching(queue, state_name, filters)
    return ids, limited


@bp.get("/queues/<name:queue>/<state_name>/confirm")
def confirm(queue: str, state_name: str) -> str:
    operator_page()
    _check_state(queue, state_name)
    action = request.args.get("action", "")
    if action not in BULK_ACTIONS or (action == "retry" and state_name != "failed"):
        abort(400, "action must be retry (failed jobs) or empty")
    if action == "empty" and state_name == "started":
        abort(400, "running jobs are stopped one by one, not emptied")
    if job_filter(dict(request.args)).active:
        ids, limited = _matching(queue, state_name)
        count = len(ids)
    else:  # everything: LLEN or ZCARD, never a read of every id
        count, limited = entry_count(state().redis, queue, state_name), False
    return render_template(
        "jobs/confirm.html",
        queue=queue,
        state_name=state_name,
        action=action,
        count=count,
        limited=limited,
        filters=job_filter(dict(request.args)),
    )


@bp.post("/queues/<name:queue>/<state_name>/bulk")
def bulk(queue: str, state_name: str) -> Response:
    who = caller()
    _check_state(queue, state_name)
    action = request.form.get("action", "")
    current = state()
    selected = request.form.getlist("ids")
    if len(selected) > MAX_PER_PAGE:
        abort(400, f"select at most {MAX_PER_PAGE} jobs at once")
    if action == "retry" and state_name == "failed":
        ids = selected or _matching(queue, state_name)[0]
        done = retry_in(queue, ids)
        message = f"Retried {done:,} job{'s' if done != 1 else ''}."
    elif action == "cancel" and selected and state_name in CANCELABLE:
        done = cancel_jobs(queue, selected)
        message = f"Canceled {done:,} job{'s' if done != 1 else ''}."
    elif action == "empty" and not selected and state_name != "started":
        if job_filter(dict(request.values)).active:
            done = delete_jobs(current.redis, queue, state_name, _matching(queue, state_name)[0])
        else:
            done = empty(current.redis, queue, state_name)
        message = f"Deleted {done:,} job{'s' if done != 1 else ''} from {state_name}."
    else:
        abort(400, "action must be retry (failed jobs), cancel (selected queued, scheduled or deferred jobs) or empty")
    audit.record(current.redis, who.name, action, f"{names.label(queue)}/{state_name}", done)
    flash(message)
    return redirect(url_for("jobs.job_list", queue=queue, state_name=state_name))


def cancel_jobs(queue: str, ids: list[str]) -> int:
    """Cancel those of these jobs of the queue that are still queued, scheduled or deferred, with RQ's own cancel.

    The cancels share one MULTI/EXEC, WATCHing the job hashes, so a job a worker takes meanwhile is left
    alone; rate-limited jobs (rq 3) are canceled one by one, as RQ allows only that for them.
    """
    redis = state().redis
    keys = [Job.key_for(job_id) for job_id in ids]
    tries = WatchTries(5)
    for _ in tries:
        with redis.pipeline() as pipe:
            try:
                pipe.watch(*keys)
                jobs = [job for job in Job.fetch_many(ids, connection=redis) if job is not None]
                jobs = [job for job in jobs if job.origin == queue and job.get_status(refresh=False) in CANCEL_FROM]
                pipe.multi()
                one_by_one = [job for job in jobs if getattr(job, "has_rate_limit", False)]
                for job in jobs:
                    if job not in one_by_one:
                        job.cancel(pipeline=pipe)
                pipe.execute()
            except WatchError as exc:
                tries.failed(exc)
                continue
        for job in one_by_one:
            job.cancel()
        return len(jobs)
    abort(409, "these jobs kept changing while they were canceled; reload and try again")


@bp.post("/jobs/<job_id>/<action>")
def job_action(job_id: str, action: str) -> Response:
    who = caller()
    current = state()
    if action == "copy":
        new_id = enqueue_copy(job_id)
        audit.record(current.redis, who.name, "enqueue a copy", f"{job_id[:128]} -> {new_id}", 1)
        flash(f"Enqueued a copy of job {job_id[:128]}: this is the new job.")
        return redirect(url_for("jobs.job_detail", job_id=new_id))
    job = fetch_job(job_id)
    status = job.get_status(refresh=False)
    if action == "retry":
        if not retry_in(job.origin, [job.id]):
            abort(409, "this job is not in the failed registry")
        flash(f"Retried job {job.id}.")
    elif action == "delete":
        job.delete()
        flash(f"Deleted job {job.id}.")
    elif action == "cancel" and status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        job.cancel()
        flash(f"Canceled job {job.id}.")
    elif action == "stop" and status == JobStatus.STARTED:
        try:
            stop_job(job)
        except InvalidJobOperation as exc:
            abort(409, f"cannot stop this job: {exc}")
        flash(f"Asked the worker to stop job {job.id}.")
    elif action == "enqueue":
        enqueue_scheduled(job)
        flash(f"Enqueued job {job.id} now.")
    else:
        abort(409, f"cannot {action[:20]} a job that is {status.value if status else 'gone'}")
    audit.record(current.redis, who.name, "enqueue now" if action == "enqueue" else action, job.id, 1)
    if action == "delete":
        return redirect(url_for("jobs.job_list", queue=job.origin, state_name="failed"))
    return redirect(url_for("jobs.job_detail", job_id=job.id))
