"""The enqueue API: POST /api/tasks, GET and DELETE /api/tasks/<id>; every change is audited."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, url_for
from rq.exceptions import InvalidJobOperation
from rq.job import JobStatus
from rqscope.monitor import audit
from rqscope.tasks.registry import enqueue_task
from rqscope.web.access import caller
from rqscope.web.bodies import read_body, typed
from rqscope.web.jobinfo import MAX_ID_LENGTH, display_serializer, fetch_job, load_view, stop_job, summary
from rqscope.web.state import state

bp = Blueprint("api_tasks", __name__, url_prefix="/api/tasks")

BODY_FIELDS = {"task", "args", "kwargs", "queue", "job_id"}
CANCELLABLE = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


@bp.post("")
def create() -> tuple[Response, int]:
    current = state()
    who = caller()
    body = read_body(BODY_FIELDS, '{"task": "name", "args": [], "kwargs": {}}')
    name = typed(body, "task", str, "a string")
    if name is None:
        abort(400, "'task' is required")
    args = typed(body, "args", list, "a list", default=[])
    kwargs = typed(body, "kwargs", dict, "an object", default={})
    queue = typed(body, "queue", str, "a string")
    job_id = typed(body, "job_id", str, "a string")
    if job_id is not None and not 0 < len(job_id) <= MAX_ID_LENGTH:
        abort(400, f"'job_id' must be 1 to {MAX_ID_LENGTH} characters")
    spec = current.registry.get(name)
    job, created = enqueue_task(
        spec, args, kwargs, connection=current.redis, queue=queue, job_id=job_id, serializer=display_serializer()
    )
    if created:
        audit.record(current.redis, who.name, "enqueue", f"{spec.name} {job.id}", 1)
    status_url = url_for("api_tasks.show", job_id=job.id)
    status = job.get_status(refresh=not created)
    payload = {"id": job.id, "status": str(status.value if status else "queued"), "status_url": status_url}
    response = jsonify(payload)
    response.headers["Location"] = status_url
    return response, 202 if created else 200


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
