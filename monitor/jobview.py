"""One job as an operator reads it: the hash and its latest result in one round trip, decoded for display.

Nothing here uses RQ's Job class, whose loading unpickles results and meta with plain pickle. Every
pickle goes through the restricted display decoder, and a field that cannot be decoded is named in
`unreadable` while the rest of the job is still shown.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rqscope.monitor.display import MAX_PICKLE_BYTES, DisplayError, loads, plain
from rqscope.monitor.jobs import RESULTS_KEY_TEMPLATE, decode_exc
from rqscope.monitor.snapshot import JOB_KEY_TEMPLATE, as_text

SUCCESSFUL, FAILED = b"1", b"2"  # rq.results.Result.Type


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


def read_job(redis: Redis, job_id: str, extra: Iterable[str] = ()) -> JobView | None:
    """The job and its latest result, or None when there is no such job: one round trip."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(JOB_KEY_TEMPLATE.format(id=job_id))
    pipe.xrevrange(RESULTS_KEY_TEMPLATE.format(id=job_id), count=1)
    raw, results = pipe.execute(raise_on_error=False)
    if isinstance(raw, Exception) or not raw:
        if isinstance(raw, Exception) and "WRONGTYPE" not in str(raw):
            raise raw
        return None
    return shape_job(job_id, raw, results[0][1] if isinstance(results, list) and results else {}, extra)


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
