"""Every result RQ keeps for a job (one per run, newest first), decoded for display without running them.

RQ writes one entry per run to the job's results stream (`Result.save`, trimmed to about 10): a success
with its return value, a failure with its traceback, a stop, or a run that returned `Retry`. For a failure
that RQ retried because of the job's own `Retry(max=...)` RQ writes none; `rqscope worker` writes a
`retried` entry with the traceback (a stock `rq worker` leaves only the retry count). Return values go
through the restricted display decoder, so a hostile pickle is shown as a stand-in or as unreadable,
never run.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rqscope.monitor.display import DisplayError, loads, plain
from rqscope.monitor.jobs import decode_exc
from rqscope.monitor.snapshot import as_text

MAX_RESULTS = 100  # RQ trims each stream to about 10 (approximately: often a few more); more is counted, not read

# rq.results.Result.Type values (the same in rq 2.11 and 3.x)
RESULT_TYPES = {b"1": "success", b"2": "failed", b"3": "stopped", b"4": "retried", b"5": "max_retries_exceeded"}


@dataclass(frozen=True)
class ResultView:
    """One run's result: what RQ stored, as plain values; `unreadable` names a field that could not be decoded."""

    id: str
    type: str
    created_at: float | None
    worker_name: str | None = None
    execution_id: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    return_value: Any = None
    exception: str | None = None
    unreadable: dict[str, str] = field(default_factory=dict)


def _stream_time(entry_id: str) -> float | None:
    """A stream entry id is `<milliseconds>-<sequence>`: RQ's creation time of the result."""
    try:
        return int(entry_id.split("-", 1)[0]) / 1000
    except ValueError:
        return None


def _seconds(raw: bytes | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def decode_value(encoded: bytes, extra: Iterable[str] = ()) -> Any:
    """A result's return value: base64 of a pickle, decoded by the restricted unpickler into plain values."""
    return plain(loads(base64.b64decode(encoded, validate=True), extra))


def shape_result(entry_id: Any, fields: dict[bytes, bytes], extra: Iterable[str] = ()) -> ResultView:
    """A ResultView from one stream entry; never raises on its contents."""
    ident = as_text(entry_id)
    unreadable: dict[str, str] = {}
    value = None
    if fields.get(b"return_value") is not None:
        try:
            value = decode_value(fields[b"return_value"], extra)
        except (DisplayError, binascii.Error, ValueError, TypeError) as exc:
            unreadable["return_value"] = str(exc) or type(exc).__name__
    exception = decode_exc(fields[b"exc_string"]) if fields.get(b"exc_string") else None
    return ResultView(
        id=ident,
        type=RESULT_TYPES.get(fields.get(b"type", b""), "unknown"),
        created_at=_stream_time(ident),
        worker_name=as_text(fields.get(b"worker_name")) or None,
        execution_id=as_text(fields.get(b"execution_id")) or None,
        started_at=_seconds(fields.get(b"execution_started_at")),
        ended_at=_seconds(fields.get(b"execution_ended_at")),
        return_value=value,
        exception=exception,
        unreadable=unreadable,
    )


def shape_results(entries: Any, extra: Iterable[str] = ()) -> list[ResultView]:
    """The results of an XREVRANGE reply, newest first; a reply that is not a stream gives none."""
    if not isinstance(entries, list):
        return []
    return [shape_result(entry_id, fields, extra) for entry_id, fields in entries if isinstance(fields, dict)]
