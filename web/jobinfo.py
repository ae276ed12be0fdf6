"""Job details for the APIs and pages: fetch by id, and JSON-safe descriptions that never run job data."""

from __future__ import annotations

from typing import Any

from flask import abort
from redis import RedisError
from rq.command import send_stop_job_command
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rqscope.monitor.display import DisplayError, DisplaySerializer
from rqscope.monitor.jobresults import ResultView
from rqscope.monitor.jobs import split_exception
from rqscope.monitor.jobview import JobView, copyable_call, read_job
from rqscope.monitor.names import from_bytes
from rqscope.monitor.report import iso
from rqscope.monitor.scheduled import enqueue_now
from rqscope.monitor.snapshot import parse_time
from rqscope.tasks.errors import TaskError
from rqscope.tasks.registry import enqueue_task
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.web.state import state

MAX_ID_LENGTH = 128
COPYABLE_STATES = ("finished", "failed", "canceled", "stopped")


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


def result_row(result: ResultView) -> dict[str, Any]:
    """One run's result as JSON: type, times, worker, return value or exception."""
    return {
        "id": result.id,
        "type": result.type,
        "created_at": iso(result.created_at),
        "worker_name": result.worker_name,
        "execution_id": result.execution_id,
        "started_at": iso(result.started_at),
        "ended_at": iso(result.ended_at),
        "return_value": result.return_value,
        "exception": parse_exc_string(result.exception),
        "traceback": result.exception,
        "unreadable": result.unreadable,
    }


def summary(view: JobView) -> dict[str, Any]:
    """Status, times, result and error, and every result RQ keeps: what the enqueue API promises."""
    spec = state().registry.by_func_path(view.func) if view.func else None
    return {
        "id": view.id,
        "task": spec.name if spec else view.func,
        "queue": view.get("origin"),
        "status": view.get("status") or "unknown",
        "enqueued_at": iso(parse_time(view.get("enqueued_at"))),
        "started_at": iso(parse_time(view.get("started_at"))),
        "ended_at": iso(parse_time(view.get("ended_at"))),
        "scheduled_for": iso(view.scheduled_for),
        "result": view.result,
        "error": parse_exc_string(view.traceback),
        "retries_left": _whole(view.get("retries_left")),
        "unreadable": view.unreadable,
        "results": [result_row(r) for r in view.results],
        "results_total": view.results_total,
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
        "dependents": view.dependents,
        "dependents_total": view.dependents_total,
        "group": {"id": view.get("group_id"), "jobs": view.group_size} if view.get("group_id") else None,
    }


def enqueue_scheduled(job: Job) -> None:
    """Move a scheduled job onto its queue now, or abort(409) saying why not."""
    origin = state().redis.hget(KEYS.job(job.id), "origin")
    queue = from_bytes(origin) if isinstance(origin, bytes) else job.origin  # a name's exact bytes
    done = enqueue_now(state().redis, job.id, queue)
    if not done.moved:
        abort(409, f"cannot enqueue job {job.id} now: {done.reason}")


def enqueue_copy(job_id: str) -> str:
    """Enqueue a new job running the same registered task with the same arguments on the same queue; its id."""
    current = state()
    view = load_view(job_id)
    status = view.get("status") or "unknown"
    if status not in COPYABLE_STATES:
        abort(409, f"only a {', '.join(COPYABLE_STATES)} job can be copied; this one is {status[:40]}")
    raw = current.redis.hget(KEYS.job(view.id), "data")  # the call as stored: the view holds display copies
    data = raw if isinstance(raw, bytes) else None
    try:
        func, args, kwargs = copyable_call(data, current.settings.display_pickle_types)
    except DisplayError as exc:
        abort(409, f"cannot copy job {view.id}: its arguments cannot be read as plain values ({exc})")
    spec = current.registry.by_func_path(func)
    if spec is None:
        abort(409, f"cannot copy job {view.id}: {func[:200]!r} is not a registered task")
    try:
        job, _ = enqueue_task(spec, args, kwargs, connection=current.redis, queue=view.get("origin"))
    except TaskError as exc:
        abort(409, f"cannot copy job {view.id}: {exc}")
    return job.id
