"""Auth declared once for the whole app: every route needs a viewer, every mutation an operator,
unless its view is explicitly marked open. A route added later is guarded without doing anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask, abort, g, redirect, request, session, url_for
from rqscope.monitor.settings import Settings
from rqscope.web.auth import Identity, front_caller, require_metrics, require_operator, verdict
from rqscope.web.front_headers import FLASHES, FRONT_FLASHES_HEADER, flashes_header
from rqscope.web.hosts import allowed_hosts, check_host
from werkzeug.exceptions import Unauthorized
from werkzeug.wrappers import Response

View = TypeVar("View", bound=Callable[..., object])

ACCESS = "rqscope_access"
OPEN = "open"
METRICS = "metrics"
OPEN_ENDPOINTS = frozenset({"static"})  # Flask's own view, which cannot carry a marker
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def public(view: View) -> View:
    """Mark a view open to anyone (health checks, the sign-in form)."""
    setattr(view, ACCESS, OPEN)
    return view


def metrics_endpoint(view: View) -> View:
    """Mark a view open unless RQSCOPE_METRICS_TOKEN is set; then it needs that token or a reader."""
    setattr(view, ACCESS, METRICS)
    return view


def caller() -> Identity:
    """Who is asking, as the app's guard found them (it refused everyone else before the view ran)."""
    return g.who  # type: ignore[no-any-return]


def operator_page() -> Identity:
    """For a page that only prepares a change (a confirmation step): a viewer, who could not make it, gets 403."""
    who = caller()
    if not who.can_act:
        abort(403, "this page prepares a change, which needs the operator role")
    return who


def declared(app: Flask, endpoint: str | None) -> str | None:
    """The access a route declared: OPEN, METRICS, or None for the default (viewer, operator to mutate)."""
    if endpoint in OPEN_ENDPOINTS:
        return OPEN
    view = app.view_functions.get(endpoint) if endpoint else None
    return getattr(view, ACCESS, None)


def install(app: Flask, settings: Settings) -> None:
    """Check the Host of every request, then the caller against what its route declared."""
    allowed = allowed_hosts(settings)
    if settings.front_token:

        @app.after_request
        def hand_back(response: Response) -> Response:
            """A child sidecar's flashed messages go back to its front, whose session cookie is the caller's."""
            if pending := session.get(FLASHES):
                response.headers[FRONT_FLASHES_HEADER] = flashes_header(pending)
            return response

    @app.before_request
    def guard() -> Response | None:
        if settings.front_token:  # a child sidecar: only its front calls it, having judged the caller
            g.who = front_caller(settings)
            return None
        check_host(allowed)
        access = declared(app, request.endpoint)
        if access == OPEN:
            return None
        if access == METRICS:
            require_metrics(settings)
            return None
        if request.method not in SAFE_METHODS:
            g.who = require_operator(settings, form=not request.path.startswith("/api/"))
            return None
        found = verdict(settings)
        if found.identity is not None:
            g.who = found.identity
            return None
        if settings.has_credentials and "Authorization" not in request.headers and not request.path.startswith("/api/"):
            # a browser asking for a page: the sign-in form can help, a bare 401 cannot
            target = request.script_root + request.full_path.rstrip("?")
            return redirect(url_for("session_views.login_form", next=target))
        raise Unauthorized(found.problem)
