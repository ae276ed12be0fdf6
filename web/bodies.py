"""Reading JSON request bodies: size, depth and type checks with messages that say what to fix."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, abort, request

MAX_DEPTH = 32
LARGE = "rqscope_large_body"
View = TypeVar("View", bound=Callable[..., object])


def large_body(view: View) -> View:
    """Mark a view whose body may be RQSCOPE_MAX_BATCH_BYTES instead of RQSCOPE_MAX_BODY_BYTES."""
    setattr(view, LARGE, True)
    return view


def _large(app: Flask) -> bool:
    """Whether the request's view is marked large_body."""
    view = app.view_functions.get(request.endpoint) if request.endpoint else None
    return bool(getattr(view, LARGE, False))


def limit_setting(app: Flask) -> str:
    """The setting that bounds the request's body, for the message of a body over it."""
    return "RQSCOPE_MAX_BATCH_BYTES" if _large(app) else "RQSCOPE_MAX_BODY_BYTES"


def install(app: Flask, max_large_bytes: int) -> None:
    """Set each request's body limit from its route, before anything reads the body (a relay, a form's check)."""

    @app.before_request
    def limit() -> None:
        if _large(app):
            request.max_content_length = max_large_bytes


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def value_problem(value: Any, level: int = 0) -> str | None:
    """What is wrong with decoded JSON: nesting deeper than MAX_DEPTH, or a number that is not finite."""
    if level > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite"
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((found for child in children if (found := value_problem(child, level + 1))), None)


def check_values(value: Any) -> None:
    """Abort on JSON that is nested too deep or holds numbers that are not finite."""
    if problem := value_problem(value):
        abort(400, "numbers in the body must be finite" if problem.startswith("numbers") else f"body is {problem}")


def read_body(allowed: set[str], example: str) -> dict[str, Any]:
    """The request's JSON object, or abort(4xx) naming what is wrong."""
    if not request.is_json:
        abort(415, "send the body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        abort(400, f"body is nested deeper than {MAX_DEPTH} levels")
    except (ValueError, UnicodeDecodeError) as exc:
        abort(400, f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        abort(400, f"body must be a JSON object like {example}")
    check_values(body)
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        abort(400, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return body


def typed(body: dict[str, Any], key: str, kind: type, label: str, default: Any = None, where: str = "") -> Any:
    """The body's value at `key` if it has the given type; abort(400) naming it (after `where`) otherwise."""
    value = body.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        abort(400, f"{where}{key!r} must be {label}, not {type(value).__name__}")
    return value
