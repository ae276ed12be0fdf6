"""Query and form arguments: strict parsing with a 400 that says what to fix."""

from __future__ import annotations

import re
from typing import Any

from flask import abort, request
from rqscope.monitor.jobs import JobFilter

MAX_PAGE = 1_000_000
MAX_FILTER_LENGTH = 200
CONTROL = re.compile("[\x00-\x1f\x7f]")
WHOLE = re.compile("[0-9]{1,9}")  # ASCII digits only: str.isdigit() accepts '²', which int() refuses


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number argument; absent means the default, anything else must be a number in range."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not WHOLE.fullmatch(raw) or not low <= int(raw) <= high:
        abort(400, f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


def choice_arg(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = request.args.get(name, default)
    if value not in choices:
        abort(400, f"{name} must be one of {', '.join(choices)}, not {value[:40]!r}")
    return value


def _filter_text(source: dict[str, Any], name: str) -> str:
    value = source.get(name) or ""
    if not isinstance(value, str) or len(value) > MAX_FILTER_LENGTH or CONTROL.search(value):
        abort(400, f"{name} must be text of at most {MAX_FILTER_LENGTH} characters, without control characters")
    return value


def job_filter(source: dict[str, Any]) -> JobFilter:
    return JobFilter(func=_filter_text(source, "func"), exc=_filter_text(source, "exc"), text=_filter_text(source, "q"))
