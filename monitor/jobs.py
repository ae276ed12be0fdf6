"""Job lists per queue and state: paginated reads whose cost follows the page size, and bounded filters."""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from redis import Redis
from rqscope.monitor.names import exact
from rqscope.monitor.snapshot import (
    JOB_KEY_TEMPLATE,
    JOB_STATES,
    QUEUE_KEY_PREFIX,
    REGISTRY_KEY_TEMPLATES,
    RESULTS_KEY_TEMPLATE,
    as_text,
)

ORDERS = ("newest", "oldest")
MAX_PER_PAGE = 500
SCAN_LIMIT = 10_000  # newest entries a filtered list or an exception summary looks at
FETCH_CHUNK = 1_000
JOB_FIELDS = ("description", "status", "origin", "enqueued_at", "started_at", "ended_at", "worker_name", "exc_info")
FAILED_RESULT_TYPE = b"2"


@dataclass(frozen=True)
class JobFilter:
    func: str = ""
    exc: str = ""
    text: str = ""

    @property
    def active(self) -> bool:
        return bool(self.func or self.exc or self.text)


@dataclass(frozen=True)
class JobRow:
    id: str
    func: str
    description: str
    status: str
    origin: str
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None
    worker_name: str | None
    exc_type: str | None = None
    exc_message: str | None = None
    exists: bool = True
    scheduled_for: float | None = None  # scheduled list only: the job's score, when it falls due

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class JobPage:
    total: int
    page: int
    per_page: int
    order: str
    jobs: list[JobRow] = field(default_factory=list)
    scanned: int | None = None  # set for filtered lists: entries examined
    scan_limit_reached: bool = False


def func_of(description: str) -> str:
    """The function path from an RQ description like "pkg.mod.func(1, x='y')"."""
    return description.split("(", 1)[0].strip()


def split_exception(text: str) -> tuple[str | None, str | None]:
    """(type, message) from the last line of a formatted traceback."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None, None
    last = lines[-1].strip()
    head, sep, message = last.partition(":")
    if not sep or " " in head:
        return "Error", last
    return head.rsplit(".", 1)[-1], message.strip()


def decode_exc(raw: Any) -> str:
    """RQ stores exc_string base64(zlib(text)) in results and zlib(text) in the legacy exc_info field."""
    data = raw if isinstance(raw, bytes) else as_text(raw).encode()
    for attempt in (lambda: zlib.decompress(base64.b64decode(data, validate=True)), lambda: zlib.decompress(data)):
        try:
            return attempt().decode("utf-8", "replace")
        except (binascii.Error, zlib.error, ValueError):
            continue
    return as_text(raw)


def entry_key(queue: str, state: str) -> bytes:
    """The queue's list or registry key; a name decoded with surrogateescape keys its exact bytes."""
    key = QUEUE_KEY_PREFIX + queue if state == "queued" else REGISTRY_KEY_TEMPLATES[state].format(queue=queue)
    return exact(key)


def _job_id(state: str, entry: Any) -> str:
    text = as_text(entry)
    return text.split(":", 1)[0] if state == "started" else text  # rq:wip holds "id:execution"


class JobLister:
    """Reads job lists for one Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def _range(
        self, queue: str, state: str, start: int, stop: int, order: str, scores: dict[str, float] | None = None
    ) -> tuple[int, list[str]]:
        """(size, ids) for positions start..stop (inclusive) in the chosen order: one round trip.

        Given `scores`, a registry's entries are read with their scores into it.
        """
        key = entry_key(queue, state)
        pipe = self.redis.pipeline(transaction=False)
        if state == "queued":
            pipe.llen(key)
            if order == "oldest":
                pipe.lrange(key, start, stop)
            else:
                pipe.lrange(key, -stop - 1, -start - 1)
        else:
            pipe.zcard(key)
            (pipe.zrange if order == "oldest" else pipe.zrevrange)(key, start, stop, withscores=scores is not None)
        size, entries = pipe.execute()
        if scores is not None and state != "queued":
            scores.update((_job_id(state, entry), float(score)) for entry, score in entries)
            entries = [entry for entry, _ in entries]
        if state == "queued" and order == "newest":
            entries = list(reversed(entries))
        return int(size), [_job_id(state, e) for e in entries]

    def rows(self, ids: list[str], with_exception: bool) -> list[JobRow]:
        """One pipelined read of the jobs' hashes (and latest results for failures)."""
        rows: list[JobRow] = []
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = ids[start : start + FETCH_CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hmget(JOB_KEY_TEMPLATE.format(id=job_id), list(JOB_FIELDS))
                if with_exception:
                    pipe.xrevrange(RESULTS_KEY_TEMPLATE.format(id=job_id), count=1)
            replies = iter(pipe.execute(raise_on_error=False))
            for job_id in chunk:
                values = next(replies)
                result = next(replies) if with_exception else None
                rows.append(self._row(job_id, values, result))
        return rows

    def _row(self, job_id: str, values: Any, result: Any) -> JobRow:
        values = values if isinstance(values, list) else [None] * len(JOB_FIELDS)
        data = dict(zip(JOB_FIELDS, values, strict=True))
        exc_type = exc_message = None
        exc_text = ""
        if isinstance(result, list) and result:
            fields = result[0][1]
            if fields.get(b"type") == FAILED_RESULT_TYPE and fields.get(b"exc_string"):
                exc_text = decode_exc(fields[b"exc_string"])
        if not exc_text and data["exc_info"]:
            exc_text = decode_exc(data["exc_info"])
        if exc_text:
            exc_type, exc_message = split_exception(exc_text)
        description = as_text(data["description"])
        return JobRow(
            id=job_id,
            func=func_of(description),
            description=description,
            status=as_text(data["status"]) or "unknown",
            origin=as_text(data["origin"]),
            enqueued_at=as_text(data["enqueued_at"]) or None,
            started_at=as_text(data["started_at"]) or None,
            ended_at=as_text(data["ended_at"]) or None,
            worker_name=as_text(data["worker_name"]) or None,
            exc_type=exc_type,
            exc_message=exc_message,
            exists=any(v is not None for v in values),
        )

    def page(
        self, queue: str, state: str, page: int = 1, per_page: int = 20, order: str = "newest",
        filters: JobFilter | None = None,
    ) -> JobPage:  # fmt: skip
        """One page of a queue's jobs in a state; filtered lists scan at most SCAN_LIMIT entries."""
        if state not in JOB_STATES:
            raise ValueError(f"state must be one of {', '.join(JOB_STATES)}")
        filters = filters or JobFilter()
        start = (page - 1) * per_page
        scores: dict[str, float] | None = {} if state == "scheduled" else None
        if not filters.active:
            total, ids = self._range(queue, state, start, start + per_page - 1, order, scores)
            return JobPage(total, page, per_page, order, _scored(self.rows(ids, state == "failed"), scores))
        size, ids = self._range(queue, state, 0, SCAN_LIMIT - 1, order, scores)
        rows = _scored(self.rows(ids, state == "failed" or bool(filters.exc)), scores)
        matches = [row for row in rows if _matches(row, filters)]
        return JobPage(
            total=len(matches),
            page=page,
            per_page=per_page,
            order=order,
            jobs=matches[start : start + per_page],
            scanned=len(ids),
            scan_limit_reached=size > len(ids),
        )

    def all_matching(self, queue: str, state: str, filters: JobFilter) -> tuple[list[str], bool]:
        """Ids of every job matching the filter among the newest SCAN_LIMIT: (ids, limit reached)."""
        if not filters.active:
            _, ids = self._range(queue, state, 0, -1, "oldest")
            return ids, False
        size, ids = self._range(queue, state, 0, SCAN_LIMIT - 1, "newest")
        rows = self.rows(ids, state == "failed" or bool(filters.exc))
        return [row.id for row in rows if _matches(row, filters)], size > len(ids)


def _scored(rows: list[JobRow], scores: dict[str, float] | None) -> list[JobRow]:
    """Rows of the scheduled list with the time each falls due."""
    if not scores:
        return rows
    return [replace(row, scheduled_for=scores.get(row.id)) for row in rows]


def _matches(row: JobRow, filters: JobFilter) -> bool:
    if filters.func and filters.func not in (row.func, row.func.rsplit(".", 1)[-1]):
        return False
    if filters.exc and (row.exc_type or "") != filters.exc:
        return False
    if filters.text:
        needle = filters.text.lower()
        haystack = f"{row.id} {row.description} {row.exc_message or ''}".lower()
        if needle not in haystack:
            return False
    return True
