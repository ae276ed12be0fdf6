"""What every page shares: the identity, the CSRF token, the Redis banner, security headers."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, redirect, request, url_for
from redis import RedisError
from rqscope.monitor.report import totals
from rqscope.web.auth import Identity, csrf_token, identify, require_operator
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


class LoginRequired(Exception):
    """A page was asked for without credentials: send the browser to the sign-in form."""


def viewer() -> Identity:
    """The signed-in reader of a page; raises LoginRequired for an anonymous browser."""
    who = identify(state().settings)
    if who is None:
        raise LoginRequired()
    g.who = who
    return who


def operator() -> Identity:
    """The operator submitting a dashboard form (CSRF checked)."""
    viewer()
    g.who = require_operator(state().settings, form=True)
    return g.who


def register_login_redirect(app: Flask) -> None:
    @app.errorhandler(LoginRequired)
    def to_login(exc: LoginRequired) -> Response:
        target = request.script_root + request.full_path.rstrip("?")
        return redirect(url_for("session_views.login_form", next=target))  # type: ignore[return-value]
