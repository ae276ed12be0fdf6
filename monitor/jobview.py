"""One job as an operator reads it: the hash, its results and dependents in one round trip, decoded for display.

Nothing here uses RQ's Job class, whose loading unpickles results and meta with plain pickle. Every
pickle goes through the restricted display decoder, and a field that cannot be decoded is named in
`unreadable` while the rest of the job is still shown.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from redis import Redis
from rqscope.monitor.display import MAX_PICKLE_BYTES, DisplayError, loads, plain
from rqscope.monitor.jobresults import MAX_RESULTS, ResultView, shape_results
from rqscope.monitor.jobs import decode_exc
from rqscope.monitor.snapshot import as_text
from rqscope.tasks.rq_internals.keys import KEYS

SUCCESSFUL, FAILED = b"1", b"2"  # rq.results.Result.Type
MAX_DEPENDENTS = 100  # dependents listed on a job's page; the rest are counted
MAX_COPY_ITEMS, MAX_COPY_DEPTH = 10_000, 32


@dataclass(frozen=True)
class JobView:
    """A job's fields as plain, JSON-safe values; `unreadable` maps a field to why it could not be decoded."""

    id: str
    text: dict[str, str]
    func: str | None = None
    args: Any = None
    kwargs: Any = None
    meta: Any = None
    result: Any = None
    traceback: str | None = None
    dependency_ids: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    results: list[ResultView] = field(default_factory=list)  # newest first, at most MAX_RESULTS
    results_total: int = 0
    dependents: list[str] = field(default_factory=list)  # sorted, at most MAX_DEPENDENTS
    dependents_total: int = 0
    group_size: int | None = None  # jobs in the job's RQ group; None without a group or once it expired
    scheduled_for: float | None = None  # its score in the scheduled registry of its queue

    def get(self, name: str) -> str | None:
        return self.text.get(name) or None


def inflate(raw: bytes) -> bytes:
    """RQ's job data: zlib-compressed pickle, or the pickle itself for jobs saved uncompressed."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, MAX_PICKLE_BYTES + 1)
    except zlib.error:
        return raw
    if len(data) > MAX_PICKLE_BYTES:
        raise DisplayError(f"more than the {MAX_PICKLE_BYTES:,} bytes shown")
    return data


class _Decoder:
    """Decodes fields one by one, recording each failure instead of raising."""

    def __init__(self, extra: Iterable[str]) -> None:
        self.extra = tuple(extra)
        self.unreadable: dict[str, str] = {}

    def attempt(self, name: str, decode: Callable[[], Any]) -> Any:
        try:
            return decode()
        except (DisplayError, binascii.Error, ValueError, TypeError) as exc:
            self.unreadable[name] = str(exc) or type(exc).__name__
            return None

    def pickle(self, raw: bytes) -> Any:
        return plain(loads(raw, self.extra))

    def call(self, raw: bytes) -> tuple[str, Any, Any]:
        """(func_name, args, kwargs) from RQ's data field: a pickled (func_name, instance, args, kwargs)."""
        value = loads(inflate(raw), self.extra)
        if not (isinstance(value, tuple) and len(value) == 4 and isinstance(value[0], str)):
            raise DisplayError("not RQ's (function, instance, args, kwargs)")
        func, _instance, args, kwargs = value
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise DisplayError("args or kwargs have the wrong shape")
        return plain(func), plain(args), plain(kwargs)


def _size(reply: Any) -> int:
    return reply if isinstance(reply, int) else 0  # a key of another type (an error reply) holds none


def read_job(redis: Redis, job_id: str, extra: Iterable[str] = ()) -> JobView | None:
    """The job, its results and dependents, or None when there is no such job.

    One round trip; a second, small one only for a job in a group or in the scheduled registry, whose keys
    are named by the hash itself.
    """
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(KEYS.job(job_id))
    pipe.xrevrange(KEYS.results(job_id), count=MAX_RESULTS)
    pipe.xlen(KEYS.results(job_id))
    pipe.scard(KEYS.dependents(job_id))
    pipe.srandmember(KEYS.dependents(job_id), MAX_DEPENDENTS)  # distinct members, bounded
    raw, entries, results_total, dependents_total, dependents = pipe.execute(raise_on_error=False)
    if isinstance(raw, Exception) or not raw:
        if isinstance(raw, Exception) and "WRONGTYPE" not in str(raw):
            raise raw
        return None
    results = shape_results(entries, extra)
    latest = entries[0][1] if results else {}
    view = shape_job(job_id, raw, latest, extra)
    group_size, scheduled_for = _placement(redis, job_id, raw)
    return replace(
        view,
        results=results,
        results_total=max(_size(results_total), len(results)),
        dependents=sorted(as_text(d) for d in dependents) if isinstance(dependents, list) else [],
        dependents_total=_size(dependents_total),
        group_size=group_size,
        scheduled_for=scheduled_for,
    )


def _placement(redis: Redis, job_id: str, raw: dict[bytes, bytes]) -> tuple[int | None, float | None]:
    """(jobs in the job's group, its time in the scheduled registry): read only when the hash names them."""
    group = raw.get(b"group_id")
    scheduled = raw.get(b"status") == b"scheduled" and raw.get(b"origin")
    if not group and not scheduled:
        return None, None
    pipe = redis.pipeline(transaction=False)
    if group:
        # bytes, so that an id that is not UTF-8 keys its exact bytes
        pipe.scard(KEYS.group("").encode() + group)
    if scheduled:
        pipe.zscore(KEYS.registry("scheduled", "").encode() + raw[b"origin"], job_id)
    replies = pipe.execute(raise_on_error=False)
    size = (_size(replies.pop(0)) or None) if group else None
    score = replies.pop(0) if scheduled else None
    return size, score if isinstance(score, float) else None


def shape_job(job_id: str, raw: dict[bytes, bytes], latest: dict[bytes, bytes], extra: Iterable[str] = ()) -> JobView:
    """A JobView from the raw hash and the latest result entry; never raises on their contents."""
    decoder = _Decoder(extra)
    text = {as_text(k): as_text(v) for k, v in raw.items() if k not in (b"data", b"result", b"meta", b"exc_info")}
    func = args = kwargs = None
    if b"data" in raw:
        func, args, kwargs = decoder.attempt("args", lambda: decoder.call(raw[b"data"])) or (None, None, None)
        if func is None:
            decoder.unreadable.update(dict.fromkeys(("func", "kwargs"), decoder.unreadable.get("args", "")))
    meta = decoder.attempt("meta", lambda: decoder.pickle(raw[b"meta"])) if raw.get(b"meta") else {}
    result = traceback = None
    kind = latest.get(b"type")
    if kind == SUCCESSFUL and latest.get(b"return_value") is not None:
        encoded = latest[b"return_value"]
        result = decoder.attempt("result", lambda: decoder.pickle(base64.b64decode(encoded, validate=True)))
    elif kind == FAILED and latest.get(b"exc_string"):
        traceback = decode_exc(latest[b"exc_string"])
    elif not latest and raw.get(b"result"):
        result = decoder.attempt("result", lambda: decoder.pickle(raw[b"result"]))
    if traceback is None and not latest and raw.get(b"exc_info"):
        traceback = decode_exc(raw[b"exc_info"])
    dependencies = decoder.attempt("dependency_ids", lambda: _ids(text.get("dependency_ids", "")))
    return JobView(
        id=job_id,
        text=text,
        func=func,
        args=args,
        kwargs=kwargs,
        meta=meta,
        result=result,
        traceback=traceback,
        dependency_ids=dependencies or [],
        unreadable=decoder.unreadable,
    )


def _ids(raw: str) -> list[str]:
    if not raw:
        return []
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise ValueError("not a list of job ids")
    return value


# the exact types a copy may pass back to a task: what the restricted decoder builds, never a stand-in
COPYABLE_LEAVES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    decimal.Decimal,
    uuid.UUID,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
)
COPYABLE_CONTAINERS = (list, tuple, set, frozenset, dict)


def _check_copyable(value: Any, budget: list[int], depth: int) -> None:
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_COPY_DEPTH:
        raise DisplayError("the arguments are too large or too deep to copy")
    kind = type(value)
    if kind in COPYABLE_LEAVES:
        return
    if kind not in COPYABLE_CONTAINERS:
        raise DisplayError(f"an argument is a {getattr(value, 'type_name', kind.__name__)}, not a plain value")
    for item in value.items() if kind is dict else value:
        _check_copyable(item, budget, depth + 1)


def copyable_call(raw: bytes | None, extra: Iterable[str] = ()) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """(func_name, args, kwargs) from RQ's data field, only if every argument decodes to a plain value.

    Raises DisplayError saying why not: the copy must pass the same values, and a stand-in is not one.
    """
    if not raw:
        raise DisplayError("the job has no call data")
    value = loads(inflate(raw), extra)
    if not (isinstance(value, tuple) and len(value) == 4 and isinstance(value[0], str)):
        raise DisplayError("not RQ's (function, instance, args, kwargs)")
    func, instance, args, kwargs = value
    if instance is not None:
        raise DisplayError("the job calls a method of an object")
    if type(args) not in (list, tuple) or type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
        raise DisplayError("args or kwargs have the wrong shape")
    _check_copyable((args, kwargs), [MAX_COPY_ITEMS], 0)
    return func, tuple(args), kwargs
