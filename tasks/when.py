"""When a job should run: "in" (seconds, or "90s", "5m", "2h", "1d") or "at" (ISO 8601 with a UTC offset)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from rqscope.tasks.errors import TaskArgumentsError

DEFAULT_MAX_DELAY = 30 * 86400.0
DELAY = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$", re.ASCII)
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_TEXT = 64  # longer than any delay or timestamp: the message quotes the value, so it stays short


def parse_delay(value: Any, field: str = "in") -> float:
    """Seconds from a number or a string like "90s", "5m", "2h" or "1d"; TaskArgumentsError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TaskArgumentsError(f'{field!r} must be seconds or a string like "90s", "5m", "2h"')
    if isinstance(value, str):
        match = DELAY.match(value.strip()) if len(value) <= MAX_TEXT else None
        if match is None:
            raise TaskArgumentsError(f'{field!r}: {value[:MAX_TEXT]!r} is not seconds or like "90s", "5m", "2h"')
        seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an integer too large for a float
            seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise TaskArgumentsError(f"{field!r} must be a finite number of seconds, 0 or more")
    return seconds


def parse_at(value: Any) -> datetime:
    """An aware datetime from ISO 8601 text that names its UTC offset."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise TaskArgumentsError("'at' must be an ISO 8601 time with a UTC offset, like \"2026-12-01T02:00:00+00:00\"")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise TaskArgumentsError(f"'at': {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TaskArgumentsError(f"'at': {value!r} has no UTC offset; add one, like +00:00 or Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # the first or last hours of year 1 or 9999, moved to UTC
        raise TaskArgumentsError(f"'at': {value!r} is out of range") from None


def run_at(delay: Any, at: Any, *, now: datetime, max_delay: float = DEFAULT_MAX_DELAY) -> datetime | None:
    """The UTC time a job should run, or None to run it now; either `delay` or `at`, never both."""
    if delay is not None and at is not None:
        raise TaskArgumentsError("give either 'in' or 'at', not both")
    if delay is None and at is None:
        return None
    if delay is not None:
        seconds = parse_delay(delay)
        if seconds > max_delay:
            raise TaskArgumentsError(f"'in' of {seconds:.0f} s is longer than the {max_delay:.0f} s allowed")
        return now + timedelta(seconds=seconds) if seconds else None
    moment = parse_at(at)
    if moment < now:
        raise TaskArgumentsError(f"'at' {at!r} is in the past")
    if (moment - now).total_seconds() > max_delay:
        raise TaskArgumentsError(f"'at' {at!r} is more than the {max_delay:.0f} s allowed from now")
    return moment
