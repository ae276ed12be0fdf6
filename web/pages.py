"""What every page shares: the identity, the CSRF token, the Redis banner, security headers."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request
from redis import RedisError
from rqscope.monitor.report import totals
from rqscope.web.auth import csrf_token, identify
from rqscope.web.state import state
from werkzeug.exceptions import HTTPException

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


def register(app: Flask) -> None:
    @app.context_processor
    def page_context() -> dict[str, Any]:
        current = state()
        try:
            who = getattr(g, "who", None) or identify(current.settings)
        except (HTTPException, RedisError):
            who = None  # an error page for a caller who could not be identified
        snapshot = current.snapshots.get()
        return {
            "who": who,
            "csrf_token": csrf_token,
            "snapshot": snapshot,
            "snapshot_totals": totals(snapshot) if snapshot.redis.up else None,
        }

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.path.startswith("/api/") or response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
