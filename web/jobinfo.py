"""Job details for the APIs and pages: fetch by id, and JSON-safe descriptions that never run job data."""

from __future__ import annotations

from typing import Any

from flask import abort
from redis import RedisError
from rq.command import send_stop_job_command
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rqscope.monitor.display import DisplaySerializer
from rqscope.monitor.jobs import split_exception
from rqscope.monitor.jobview import JobView, read_job
from rqscope.monitor.report import iso
from rqscope.monitor.snapshot import parse_time
from rqscope.web.state import state

MAX_ID_LENGTH = 128


def parse_exc_string(exc_string: str | None) -> dict[str, str] | None:
    """{"type", "message"} from a formatted traceback."""
    exc_type, message = split_exception(exc_string or "")
    return None if exc_type is None else {"type": exc_type, "message": message or ""}


def display_serializer() -> DisplaySerializer:
    """The serializer of every Job the sidecar loads: reading one never runs code from Redis."""
    return DisplaySerializer(state().settings.display_pickle_types)


def fetch_job(job_id: str) -> Job:
    """RQ's Job for acting on it; its results and meta load through the display decoder, never plain pickle."""
    if len(job_id) > MAX_ID_LENGTH:
        abort(404, "no such job")
    try:
        Job(id=job_id, connection=state().redis)  # RQ's own check of an id's form: an id it would refuse names no job
    except (ValueError, TypeError):
        abort(404, f"no job with id {job_id!r}")
    try:
        return Job.fetch(job_id, connection=state().redis, serializer=display_serializer())
    except NoSuchJobError:
        abort(404, f"no job with id {job_id!r}")
    except RedisError:
        raise  # a Redis outage is answered 503 by the app's error handler
    except Exception as exc:  # a garbled field RQ cannot parse (timeout, dates, ...): say so, never a 500
        abort(422, f"job {job_id!r} cannot be read by RQ ({type(exc).__name__}); delete it to clear it")


def stop_job(job: Job) -> None:
    """Ask the job's worker to stop it; RQ reads the job again, with the job's (restricted) serializer."""
    send_stop_job_command(state().redis, job.id, serializer=job.serializer)


def load_view(job_id: str) -> JobView:
    """The job as shown to a reader, or abort(404)."""
    current = state()
    found = None
    if len(job_id) <= MAX_ID_LENGTH:
        found = read_job(current.redis, job_id, current.settings.display_pickle_types)
    if found is None:
        abort(404, f"no job with id {job_id[:MAX_ID_LENGTH]!r}")
    return found


def _whole(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def summary(view: JobView) -> dict[str, Any]:
    """Status, times, result and error: what the enqueue API promises."""
    spec = state().registry.by_func_path(view.func) if view.func else None
    return {
        "id": view.id,
        "task": spec.name if spec else view.func,
        "queue": view.get("origin"),
        "status": view.get("status") or "unknown",
        "enqueued_at": iso(parse_time(view.get("enqueued_at"))),
        "started_at": iso(parse_time(view.get("started_at"))),
        "ended_at": iso(parse_time(view.get("ended_at"))),
        "result": view.result,
        "error": parse_exc_string(view.traceback),
        "retries_left": _whole(view.get("retries_left")),
        "unreadable": view.unreadable,
    }


def detail(view: JobView) -> dict[str, Any]:
    """Everything an operator reads about one job."""
    return {
        **summary(view),
        "description": view.get("description"),
        "func": view.func,
        "args": view.args,
        "kwargs": view.kwargs,
        "meta": view.meta,
        "worker_name": view.get("worker_name"),
        "created_at": iso(parse_time(view.get("created_at"))),
        "timeout": _whole(view.get("timeout")),
        "result_ttl": _whole(view.get("result_ttl")),
        "failure_ttl": _whole(view.get("failure_ttl")),
        "traceback": view.traceback,
        "dependency_ids": view.dependency_ids,
    }
