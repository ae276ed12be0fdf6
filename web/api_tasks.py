"""The enqueue API: POST /api/tasks, GET and DELETE /api/tasks/<id>."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, url_for
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from tasks.registry import enqueue_task
from web.auth import require_operator
from web.state import state

bp = Blueprint("api_tasks", __name__, url_prefix="/api/tasks")

MAX_DEPTH = 32
MAX_ID_LENGTH = 128
BODY_FIELDS = {"task", "args", "kwargs", "queue", "job_id"}
CANCELLABLE = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_values(value: Any, level: int = 0) -> None:
    """Abort on JSON that is nested too deep or holds numbers that are not finite."""
    if level > MAX_DEPTH:
        abort(400, f"body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        abort(400, "numbers in the body must be finite")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        check_values(child, level + 1)


def read_body() -> dict[str, Any]:
    """The request's JSON object, or abort(4xx) naming what is wrong."""
    if not request.is_json:
        abort(415, "send the body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        abort(400, f"body is nested deeper than {MAX_DEPTH} levels")
    except (ValueError, UnicodeDecodeError) as exc:
        abort(400, f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        abort(400, 'body must be a JSON object like {"task": "name", "args": [], "kwargs": {}}')
    check_values(body)
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        abort(400, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(BODY_FIELDS))}")
    return body


def _typed(body: dict[str, Any], key: str, kind: type, label: str, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        abort(400, f"{key!r} must be {label}, not {type(value).__name__}")
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def json_safe(value: Any) -> Any:
    """A value that json.dumps accepts without losing shape; anything else becomes its repr."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        text = repr(value)
        return text if len(text) <= 10_000 else text[:10_000] + "…"


def parse_exc_string(exc_string: str | None) -> dict[str, str] | None:
    """{"type", "message"} from the last line of a formatted traceback."""
    if not exc_string:
        return None
    last = exc_string.strip().splitlines()[-1] if exc_string.strip() else ""
    exc_type, sep, message = last.partition(": ")
    if not sep or " " in exc_type:
        return {"type": "Error", "message": last}
    return {"type": exc_type.rsplit(".", 1)[-1], "message": message}


def fetch_job(job_id: str) -> Job:
    if len(job_id) > MAX_ID_LENGTH:
        abort(404, "no such job")
    try:
        return Job.fetch(job_id, connection=state().redis)
    except (NoSuchJobError, ValueError, TypeError):
        abort(404, f"no job with id {job_id!r}")


def describe(job: Job) -> dict[str, Any]:
    status = job.get_status(refresh=False)
    spec = state().registry.by_func_path(job.func_name)
    latest = job.latest_result()
    error = None
    result = None
    if latest is not None and latest.type == latest.Type.FAILED:
        error = parse_exc_string(latest.exc_string)
    elif latest is not None and latest.type == latest.Type.SUCCESSFUL:
        result = json_safe(latest.return_value)
    return {
        "id": job.id,
        "task": spec.name if spec else job.func_name,
        "queue": job.origin,
        "status": str(status.value if status else "unknown"),
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
        "result": result,
        "error": error,
        "retries_left": job.retries_left,
    }


@bp.post("")
def create() -> tuple[Response, int]:
    current = state()
    require_operator(current.settings)
    body = read_body()
    name = _typed(body, "task", str, "a string")
    if name is None:
        abort(400, "'task' is required")
    args = _typed(body, "args", list, "a list", default=[])
    kwargs = _typed(body, "kwargs", dict, "an object", default={})
    queue = _typed(body, "queue", str, "a string")
    job_id = _typed(body, "job_id", str, "a string")
    if job_id is not None and not 0 < len(job_id) <= MAX_ID_LENGTH:
        abort(400, f"'job_id' must be 1 to {MAX_ID_LENGTH} characters")
    spec = current.registry.get(name)
    job, created = enqueue_task(spec, args, kwargs, connection=current.redis, queue=queue, job_id=job_id)
    status_url = url_for("api_tasks.show", job_id=job.id)
    status = job.get_status(refresh=not created)
    payload = {"id": job.id, "status": str(status.value if status else "queued"), "status_url": status_url}
    response = jsonify(payload)
    response.headers["Location"] = status_url
    return response, 202 if created else 200


@bp.get("/<job_id>")
def show(job_id: str) -> Response:
    return jsonify(describe(fetch_job(job_id)))


@bp.delete("/<job_id>")
def cancel(job_id: str) -> tuple[Response, int]:
    current = state()
    require_operator(current.settings)
    job = fetch_job(job_id)
    status = job.get_status(refresh=False)
    if status in CANCELLABLE:
        job.cancel()
        return jsonify(id=job.id, status="canceled"), 200
    if status == JobStatus.STARTED:
        try:
            send_stop_job_command(current.redis, job.id)
        except InvalidJobOperation as exc:
            abort(409, f"job {job.id} cannot be stopped: {exc}")
        return jsonify(id=job.id, status="stopping"), 202
    abort(
        409,
        f"job {job.id} is {status.value if status else 'gone'}; only queued, deferred, "
        "scheduled or started jobs can be canceled",
    )
