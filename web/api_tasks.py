"""The enqueue API: POST /api/tasks and /api/tasks/batch, GET and DELETE /api/tasks/<id>; every change is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, abort, jsonify, url_for
from redis.client import Pipeline
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rqscope.monitor import audit
from rqscope.tasks.enqueue import Placed, Placement, enqueue_all
from rqscope.tasks.errors import TaskError
from rqscope.web.access import caller
from rqscope.web.bodies import large_body, read_body, typed
from rqscope.web.jobinfo import MAX_ID_LENGTH, display_serializer, fetch_job, load_view, stop_job, summary
from rqscope.web.placing import enqueue_one, placement
from rqscope.web.state import state

bp = Blueprint("api_tasks", __name__, url_prefix="/api/tasks")

ITEM_FIELDS = {"task", "args", "kwargs", "queue", "job_id", "in", "at"}
EXAMPLE = '{"task": "name", "args": [], "kwargs": {}}'
CANCELLABLE = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def _placement(item: dict[str, Any], where: str = "") -> Placement:
    """One request item checked against the registry and the clock; abort(400) naming the problem."""
    name = typed(item, "task", str, "a string", where=where)
    if name is None:
        abort(400, f"{where}'task' is required")
    args = typed(item, "args", list, "a list", default=[], where=where)
    kwargs = typed(item, "kwargs", dict, "an object", default={}, where=where)
    queue = typed(item, "queue", str, "a string", where=where)
    job_id = typed(item, "job_id", str, "a string", where=where)
    if job_id is not None and not 0 < len(job_id) <= MAX_ID_LENGTH:
        abort(400, f"{where}'job_id' must be 1 to {MAX_ID_LENGTH} characters")
    try:
        return placement(name, args, kwargs, queue=queue, job_id=job_id, delay=item.get("in"), at=item.get("at"))
    except TaskError as exc:
        abort(400, f"{where}{exc}")


def _status(placed: Placed, at: datetime | None) -> str:
    if placed.created:
        return "scheduled" if at is not None else "queued"
    job = Job.fetch(placed.job_id, connection=state().redis, serializer=display_serializer())
    status = job.get_status(refresh=False)
    return str(status.value if status else "queued")


@bp.post("")
def create() -> tuple[Response, int]:
    who = caller()
    item = _placement(read_body(ITEM_FIELDS, EXAMPLE))
    placed = enqueue_one(item, who.name)
    status_url = url_for("api_tasks.show", job_id=placed.job_id)
    response = jsonify(id=placed.job_id, status=_status(placed, item.at), status_url=status_url)
    response.headers["Location"] = status_url
    return response, 202 if placed.created else 200


@bp.post("/batch")
@large_body
def batch() -> tuple[Response, int]:
    """Up to RQSCOPE_MAX_BATCH runs, every item checked before any is written, all in one transaction."""
    current = state()
    who = caller()
    limit = current.settings.max_batch
    body = read_body({"tasks"}, '{"tasks": [' + EXAMPLE + "]}")
    items = body.get("tasks")
    if not isinstance(items, list):
        abort(400, "'tasks' must be a list of task objects")
    if not 0 < len(items) <= limit:
        abort(400, f"'tasks' must hold 1 to {limit} items (RQSCOPE_MAX_BATCH), not {len(items)}")
    placements = []
    for index, item in enumerate(items):
        where = f"tasks[{index}]: "
        if not isinstance(item, dict):
            abort(400, f"{where}each item must be an object like {EXAMPLE}")
        if unknown := sorted(set(item) - ITEM_FIELDS):
            abort(400, f"{where}unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(ITEM_FIELDS))}")
        placements.append(_placement(item, where))
    names = ", ".join(sorted({p.spec.name for p in placements}))

    def audited(pipe: Pipeline, placed: list[Placed]) -> None:
        if created := sum(p.created for p in placed):
            audit.record(pipe, who.name, "enqueue", f"batch of {len(placed)}: {names}", created)

    placed = enqueue_all(placements, connection=current.redis, also=audited)
    return jsonify(ids=[p.job_id for p in placed], created=sum(p.created for p in placed)), 202


@bp.get("/<job_id>")
def show(job_id: str) -> Response:
    return jsonify(summary(load_view(job_id)))  # read field by field: a garbled field is marked, never a 500


@bp.delete("/<job_id>")
def cancel(job_id: str) -> tuple[Response, int]:
    current = state()
    who = caller()
    job = fetch_job(job_id)
    status = job.get_status(refresh=False)
    if status in CANCELLABLE:
        job.cancel()
        audit.record(current.redis, who.name, "cancel", job.id, 1)
        return jsonify(id=job.id, status="canceled"), 200
    if status == JobStatus.STARTED:
        try:
            stop_job(job)
        except InvalidJobOperation as exc:
            abort(409, f"job {job.id} cannot be stopped: {exc}")
        audit.record(current.redis, who.name, "stop", job.id, 1)
        return jsonify(id=job.id, status="stopping"), 202
    abort(
        409,
        f"job {job.id} is {status.value if status else 'gone'}; only queued, deferred, "
        "scheduled or started jobs can be canceled",
    )
