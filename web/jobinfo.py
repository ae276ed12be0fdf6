"""Job details for the APIs: fetch by id, and JSON-safe descriptions."""

from __future__ import annotations

import json
from typing import Any

from flask import abort
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rqscope.monitor.jobs import split_exception
from rqscope.monitor.report import iso
from rqscope.web.state import state

MAX_ID_LENGTH = 128


def json_safe(value: Any) -> Any:
    """A value that json.dumps accepts without losing shape; anything else becomes its repr."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        text = repr(value)
        return text if len(text) <= 10_000 else text[:10_000] + "…"


def parse_exc_string(exc_string: str | None) -> dict[str, str] | None:
    """{"type", "message"} from a formatted traceback."""
    exc_type, message = split_exception(exc_string or "")
    return None if exc_type is None else {"type": exc_type, "message": message or ""}


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
        "enqueued_at": iso(job.enqueued_at),
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "result": result,
        "error": error,
        "retries_left": job.retries_left,
    }


def _safe(getter: Any) -> Any:
    """A job attribute that needs deserialising; undecodable data is reported, not raised."""
    try:
        return json_safe(getter())
    except Exception as exc:  # a hostile or foreign payload must not break the page
        return f"<cannot decode: {type(exc).__name__}>"


def detail(job: Job) -> dict[str, Any]:
    """Everything an operator reads about one job."""
    latest = job.latest_result()
    traceback = latest.exc_string if latest is not None and latest.type == latest.Type.FAILED else None
    return {
        **describe(job),
        "description": job.description,
        "func": _safe(lambda: job.func_name),
        "args": _safe(lambda: list(job.args)),
        "kwargs": _safe(lambda: job.kwargs),
        "meta": _safe(lambda: job.meta),
        "worker_name": job.worker_name,
        "created_at": iso(job.created_at),
        "timeout": job.timeout,
        "result_ttl": job.result_ttl,
        "failure_ttl": job.failure_ttl,
        "traceback": traceback,
        "dependency_ids": list(job._dependency_ids),
    }
