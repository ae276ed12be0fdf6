"""Queue and worker controls (pause, suspend) over the API and the dashboard, and the enqueue form.

Every change needs an operator (the app's guard), is confirmed on a page of its own before the
dashboard posts it, and is audited in the transaction that makes it (monitor.paused).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for
from rqscope.monitor.names import encode_segment, label
from rqscope.monitor.paused import MAX_SUSPEND_SECONDS, is_paused, set_paused, set_suspended
from rqscope.monitor.snapshot import QUEUES_KEY
from rqscope.tasks.errors import TaskArgumentsError, TaskError, UnknownTaskError
from rqscope.tasks.registry import TaskSpec
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.tasks.when import parse_delay
from rqscope.web import names
from rqscope.web.access import caller, operator_page
from rqscope.web.bodies import read_body
from rqscope.web.placing import enqueue_one, placement
from rqscope.web.state import state
from rqscope.web.task_form import arguments, fields
from werkzeug.wrappers import Response as Redirect

bp = Blueprint("controls", __name__)
bp.record_once(names.install)


def _queue_known(queue: str) -> None:
    """404 unless RQ knows the queue, or it is paused (a deleted queue can still be resumed)."""
    redis = state().redis
    if not redis.sismember(QUEUES_KEY, names.to_bytes(KEYS.queue(queue))) and not is_paused(redis, queue):
        abort(404, f"no queue named {label(queue)[:200]!r}")


def _ttl(value: Any, strict: bool) -> int | None:
    """Seconds a suspension lasts: an integer over the API; in the form also "90s", "5m", "2h", "1d"."""
    whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()  # JSON's 60.0 is 60
    if strict and (isinstance(value, bool) or not whole):
        abort(400, "'ttl' must be a whole number of seconds")
    if value is None or value == "":
        return None
    try:
        seconds = -int(-parse_delay(value, "ttl") // 1)
    except TaskArgumentsError as exc:
        abort(400, str(exc))
    if not 1 <= seconds <= MAX_SUSPEND_SECONDS:
        abort(400, f"'ttl' must be 1 to {MAX_SUSPEND_SECONDS} seconds")
    return seconds


def _queue_change(queue: str, pause: bool) -> bool:
    _queue_known(queue)
    changed = set_paused(state().redis, queue, pause, caller().name)
    state().snapshots.invalidate()  # the page this redirects to shows the change, not a cached snapshot
    return changed


def _suspension(suspended: bool, ttl: int | None = None) -> None:
    set_suspended(state().redis, suspended, caller().name, ttl)
    state().snapshots.invalidate()


def _queue_answer(queue: str, pause: bool) -> Response:
    changed = _queue_change(queue, pause)
    return jsonify(queue=queue, url_name=encode_segment(queue), paused=pause, changed=changed)


@bp.post("/api/queues/<name:queue>/pause")
def api_pause_queue(queue: str) -> Response:
    return _queue_answer(queue, True)


@bp.post("/api/queues/<name:queue>/resume")
def api_resume_queue(queue: str) -> Response:
    return _queue_answer(queue, False)


@bp.post("/api/workers/suspend")
def api_suspend_workers() -> Response:
    body = read_body({"ttl"}, '{"ttl": 3600} or {}') if request.content_length or request.is_json else {}
    ttl = _ttl(body["ttl"], strict=True) if "ttl" in body else None
    _suspension(True, ttl)
    return jsonify(suspended=True, ttl=ttl)


@bp.post("/api/workers/resume")
def api_resume_workers() -> Response:
    _suspension(False)
    return jsonify(suspended=False, ttl=None)


@bp.get("/queues/<name:queue>/pause/confirm")
def confirm_pause(queue: str) -> str:
    operator_page()
    return _confirm_queue(queue, "pause")


@bp.get("/queues/<name:queue>/resume/confirm")
def confirm_resume(queue: str) -> str:
    operator_page()
    return _confirm_queue(queue, "resume")


def _confirm_queue(queue: str, action: str) -> str:
    _queue_known(queue)
    target = url_for(f"controls.{action}_queue", queue=queue)
    back = url_for("jobs.job_list", queue=queue, state_name="queued")
    return render_template("dashboard/control_confirm.html", action=action, queue=queue, target=target, back=back)


def _queue_page(queue: str, pause: bool) -> Redirect:
    done = "paused" if pause else "resumed"
    changed = _queue_change(queue, pause)
    flash(f"Queue {label(queue)} {done}." if changed else f"Queue {label(queue)} was already {done}.")
    return redirect(url_for("jobs.job_list", queue=queue, state_name="queued"))


@bp.post("/queues/<name:queue>/pause")
def pause_queue(queue: str) -> Redirect:
    return _queue_page(queue, True)


@bp.post("/queues/<name:queue>/resume")
def resume_queue(queue: str) -> Redirect:
    return _queue_page(queue, False)


@bp.get("/workers/<any(suspend, resume):action>/confirm")
def confirm_workers(action: str) -> str:
    operator_page()
    target = url_for(f"controls.{action}_workers")
    back = url_for("dashboard.overview")
    return render_template("dashboard/control_confirm.html", action=action, queue=None, target=target, back=back)


@bp.post("/workers/suspend")
def suspend_workers() -> Redirect:
    ttl = _ttl(request.form.get("ttl", "").strip(), strict=False)
    _suspension(True, ttl)
    flash("Workers suspended" + (f" for {ttl} s." if ttl else " until resumed."))
    return redirect(url_for("dashboard.overview"))


@bp.post("/workers/resume")
def resume_workers() -> Redirect:
    _suspension(False)
    flash("Workers resumed.")
    return redirect(url_for("dashboard.overview"))


def _form(spec: TaskSpec | None, status: int = 200, **values: Any) -> tuple[str, int]:
    return render_template(
        "dashboard/enqueue.html",
        tasks=list(state().registry),
        spec=spec,
        fields=fields(spec) if spec is not None else [],
        values=values.get("values", {}),
        queue=values.get("queue", ""),
        delay=values.get("delay", ""),
        error=values.get("error"),
    ), status


@bp.get("/enqueue")
def enqueue_form() -> tuple[str, int]:
    name = request.args.get("task", "")
    if not name:
        return _form(None)
    try:
        return _form(state().registry.get(name))
    except UnknownTaskError as exc:
        return _form(None, 404, error=str(exc))


@bp.post("/enqueue")
def enqueue_submit() -> Redirect | tuple[str, int]:
    who = caller()
    name = request.form.get("task", "")
    try:
        spec = state().registry.get(name)
    except UnknownTaskError as exc:
        return _form(None, 400, error=str(exc))
    values = {f.name: request.form.get(f.input_name, "") for f in fields(spec)}
    queue = request.form.get("queue", "")
    delay = request.form.get("in", "").strip()
    try:
        args, kwargs = arguments(spec, values)
        item = placement(name, args, kwargs, queue=queue or None, delay=delay or None)
        placed = enqueue_one(item, who.name)
    except TaskError as exc:
        return _form(spec, 400, values=values, queue=queue, delay=delay, error=str(exc))
    when = f", to run at {item.at:%Y-%m-%d %H:%M:%S} UTC" if item.at is not None else ""
    flash(f"Enqueued {name} on {label(item.queue)}{when}: this is the new job.")
    return redirect(url_for("jobs.job_detail", job_id=placed.job_id))
