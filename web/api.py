"""The JSON API: queues, workers, jobs, retry and delete, the audit log."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, url_for
from rqscope.monitor import audit
from rqscope.monitor.alerts import silences
from rqscope.monitor.alerts.rules import parse_duration
from rqscope.monitor.delete import empty
from rqscope.monitor.exceptions import summaries
from rqscope.monitor.jobs import MAX_PER_PAGE, ORDERS, JobLister
from rqscope.monitor.report import queue_row, rate_limit_row, redis_row, totals, worker_row
from rqscope.monitor.retry import Retrier
from rqscope.monitor.snapshot import JOB_STATES, QUEUE_KEY_PREFIX, QUEUES_KEY, Snapshot, WorkerState
from rqscope.web import names
from rqscope.web.access import caller
from rqscope.web.args import MAX_FILTER_LENGTH, MAX_PAGE, choice_arg, int_arg, job_filter
from rqscope.web.auth import Identity
from rqscope.web.bodies import read_body, typed
from rqscope.web.jobinfo import detail, enqueue_copy, enqueue_scheduled, fetch_job, load_view
from rqscope.web.state import state

bp = Blueprint("api", __name__, url_prefix="/api")
bp.record_once(names.install)

FILTER_FIELDS = {"func", "exc", "q", "ids"}
MAX_IDS = 10_000


def _known_queue(name: str) -> None:
    if not state().redis.sismember(QUEUES_KEY, names.to_bytes(QUEUE_KEY_PREFIX + name)):
        abort(404, f"no queue named {names.label(name)[:MAX_FILTER_LENGTH]!r}")


def retry_in(queue: str, ids: list[str]) -> int:
    """Retry these failed jobs of the queue."""
    return Retrier(state().redis).retry(queue, ids)


def _audit(who: Identity, action: str, target: str, count: int) -> None:
    audit.record(state().redis, who.name, action, target, count)


def _snapshot_answer(snapshot: Snapshot, **body: Any) -> tuple[Response, int]:
    """The snapshot's rows; while Redis is unreachable a 503 that still carries them, stale but labelled."""
    if not snapshot.redis.up:
        return jsonify(error="Redis is unavailable; try again shortly", redis=redis_row(snapshot), **body), 503
    return jsonify(redis=redis_row(snapshot), **body), 200


@bp.get("/queues")
def queues() -> tuple[Response, int]:
    current = state()
    snapshot = current.snapshots.get()
    return _snapshot_answer(
        snapshot,
        totals=totals(snapshot),
        queues=[{**queue_row(q), "paused": snapshot.is_paused(q.name)} for q in snapshot.queues],
        rate_limits=[rate_limit_row(limit) for limit in snapshot.rate_limits],
    )


MAX_WORKERS_PER_PAGE = 500


def worker_page(workers: tuple[WorkerState, ...], page: int, per_page: int) -> tuple[tuple[WorkerState, ...], int]:
    """One page of workers (a page past the end is the last one) and the number of pages."""
    pages = max(1, -(-len(workers) // per_page))
    page = min(page, pages)
    return workers[(page - 1) * per_page : page * per_page], pages


@bp.get("/workers")
def workers() -> tuple[Response, int]:
    current = state()
    snapshot = current.snapshots.get()
    if "page" not in request.args and "per_page" not in request.args:  # every worker, as before paging existed
        rows = [worker_row(w) for w in snapshot.workers]
        return _snapshot_answer(snapshot, suspended=snapshot.suspended, workers=rows)
    page = int_arg("page", 1, 1, MAX_PAGE)
    per_page = int_arg("per_page", 50, 1, MAX_WORKERS_PER_PAGE)
    shown, pages = worker_page(snapshot.workers, page, per_page)
    return _snapshot_answer(
        snapshot,
        suspended=snapshot.suspended,
        total=len(snapshot.workers),
        page=min(page, pages),
        per_page=per_page,
        pages=pages,
        workers=[worker_row(w) for w in shown],
    )


@bp.get("/queues/<name:queue>/jobs")
def jobs(queue: str) -> Response:
    current = state()
    state_name = choice_arg("state", "queued", JOB_STATES)
    page = int_arg("page", 1, 1, MAX_PAGE)
    per_page = int_arg("per_page", 20, 1, MAX_PER_PAGE)
    order = choice_arg("order", "newest", ORDERS)
    filters = job_filter(dict(request.args))
    _known_queue(queue)
    result = JobLister(current.redis).page(queue, state_name, page, per_page, order, filters)
    return jsonify(
        total=result.total,
        page=result.page,
        per_page=result.per_page,
        order=result.order,
        state=state_name,
        scanned=result.scanned,
        scan_limit_reached=result.scan_limit_reached,
        jobs=[row.as_dict() for row in result.jobs],
    )


@bp.get("/queues/<name:queue>/exceptions")
def exceptions(queue: str) -> Response:
    current = state()
    _known_queue(queue)
    counts, scanned, size = summaries(current_app.extensions, current.redis).get(queue)
    return jsonify(exceptions=dict(counts.most_common()), scanned=scanned, failed_total=size)


@bp.post("/queues/<name:queue>/retry")
def retry_queue(queue: str) -> Response:
    current = state()
    who = caller()
    body = read_body(FILTER_FIELDS, '{"exc": "ValueError"} or {} for every failed job')
    _known_queue(queue)
    ids = typed(body, "ids", list, "a list of job ids")
    if ids is not None:
        if len(ids) > MAX_IDS or not all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids):
            abort(400, f"'ids' must be at most {MAX_IDS} job id strings")
        chosen, limited = list(ids), False
    else:
        chosen, limited = JobLister(current.redis).all_matching(queue, "failed", job_filter(body))
    retried = retry_in(queue, chosen)
    _audit(who, "retry", names.label(queue), retried)
    return jsonify(retried=retried, scan_limit_reached=limited)


@bp.delete("/queues/<name:queue>/registries/<registry>")
def empty_registry(queue: str, registry: str) -> Response:
    current = state()
    who = caller()
    if registry not in JOB_STATES:
        abort(404, f"no registry {registry[:40]!r}; registries are {', '.join(JOB_STATES)}")
    _known_queue(queue)
    if registry == "started":
        abort(409, "running jobs are stopped one by one, not emptied")
    deleted = empty(current.redis, queue, registry)
    _audit(who, f"empty {registry}", names.label(queue), deleted)
    return jsonify(deleted=deleted)


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> Response:
    return jsonify(detail(load_view(job_id)))


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> tuple[Response, int]:
    who = caller()
    found = fetch_job(job_id)
    if not retry_in(found.origin, [found.id]):
        abort(409, f"job {found.id} is not in the failed registry of {found.origin!r}")
    _audit(who, "retry", found.id, 1)
    return jsonify(id=found.id, status="queued"), 200


@bp.post("/jobs/<job_id>/enqueue")
def enqueue_job_now(job_id: str) -> tuple[Response, int]:
    who = caller()
    found = fetch_job(job_id)
    enqueue_scheduled(found)
    _audit(who, "enqueue now", found.id, 1)
    return jsonify(id=found.id, status="queued"), 200


@bp.post("/jobs/<job_id>/copy")
def copy_job(job_id: str) -> tuple[Response, int]:
    who = caller()
    new_id = enqueue_copy(job_id)
    _audit(who, "enqueue a copy", f"{job_id[:128]} -> {new_id}", 1)
    status_url = url_for("api_tasks.show", job_id=new_id)
    return jsonify(id=new_id, copy_of=job_id, status="queued", status_url=status_url), 202


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Response:
    who = caller()
    found = fetch_job(job_id)
    found.delete()
    _audit(who, "delete", found.id, 1)
    return jsonify(id=found.id, deleted=True)


@bp.get("/audit")
def audit_log() -> Response:
    current = state()
    limit = int_arg("limit", 100, 1, 1000)
    return jsonify(entries=[asdict(e) for e in audit.recent(current.redis, limit)])


@bp.get("/alerts")
def alerts() -> Response:
    current = state()
    engine = current.alerts
    found = sorted(engine.load().values(), key=lambda a: (a.state != "firing", a.rule)) if engine else []
    history = engine.history() if engine else []
    return jsonify(
        alerts=[asdict(a) | {"labels": dict(a.labels)} for a in found],
        history=[{"at": at, "status": status, "rule": a.rule, "labels": dict(a.labels), "summary": a.summary}
                 for at, status, a in history],
        dead_letters=[letter.as_dict() for letter in engine.dead_letters()] if engine else [],
    )  # fmt: skip


SILENCE_FIELDS = {"matchers", "duration", "comment"}
# bounded so that every string the pattern (stated in the OpenAPI spec) admits is at most 30 days
DURATION_PATTERN = (
    r"^(?:[1-9][0-9]{0,5}s|[1-9][0-9]{0,3}m"  # up to 999999 s, 9999 m
    r"|(?:(?:[1-9][0-9]?|[1-6][0-9]{2}|7[01][0-9])(?:\.[0-9]{1,3})?|720)h)$"  # up to 720 h
)
DURATION = re.compile(DURATION_PATTERN)


def silence_from(body: dict[str, Any]) -> tuple[dict[str, str], float, str]:
    """(matchers, seconds, comment) from a request, or abort(400) saying what to fix."""
    matchers = body.get("matchers")
    if (not isinstance(matchers, dict) or not matchers or len(matchers) > 20
            or not all(isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 100 and len(v) <= 200
                       for k, v in matchers.items())):  # fmt: skip
        abort(400, 'matchers must be a non-empty object of label names to values, e.g. {"queue": "emails"}')
    duration = body.get("duration", "1h")
    if isinstance(duration, str) and not DURATION.fullmatch(duration):
        abort(400, "duration must be like 90s, 30m or 2h (at most 720h), or a number of seconds")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        abort(400, f"duration: {exc}")
    if not 0 < seconds <= 30 * 86400:
        abort(400, "duration must be more than 0 and at most 30 days")
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 1000:
        abort(400, "comment must be text of at most 1000 characters")
    return matchers, seconds, comment


@bp.get("/silences")
def list_silences() -> Response:
    current = state()
    now = time.time()
    return jsonify(silences=[asdict(s) | {"active": s.active(now)} for s in silences.all_silences(current.redis)])


@bp.post("/silences")
def create_silence() -> tuple[Response, int]:
    current = state()
    who = caller()
    matchers, seconds, comment = silence_from(
        read_body(SILENCE_FIELDS, '{"matchers": {"queue": "emails"}, "duration": "2h"}')
    )
    now = time.time()
    silence = silences.create(current.redis, matchers, now, now + seconds, who.name, comment)
    _audit(who, "silence", json.dumps(matchers, sort_keys=True), 1)
    return jsonify(asdict(silence)), 201


@bp.delete("/silences/<silence_id>")
def expire_silence(silence_id: str) -> Response:
    current = state()
    who = caller()
    if len(silence_id) > 64 or not silences.expire(current.redis, silence_id, time.time()):
        abort(404, "no such silence")
    _audit(who, "expire silence", silence_id, 1)
    return jsonify(id=silence_id, expired=True)
