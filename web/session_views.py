"""Signing in and out of the dashboard, with a user's password or an API token."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from redis import RedisError
from rqscope.monitor.settings import Settings
from rqscope.web import sessions
from rqscope.web.access import public
from rqscope.web.auth import check_user, csrf_ok, csrf_token, token_name, token_role, too_many
from rqscope.web.ratelimit import SignInLimiter
from rqscope.web.state import state
from werkzeug.wrappers import Response

log = logging.getLogger(__name__)
bp = Blueprint("session_views", __name__)

# browsers drop tabs and newlines inside URLs and trim control characters and spaces around them
IGNORED_IN_URLS = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


def safe_next(target: str | None) -> str:
    """A same-site path to go to after signing in; anything with a scheme or host gives the overview."""
    cleaned = IGNORED_IN_URLS.sub("", target or "").replace("\\", "/")  # browsers read \ as / in http URLs
    try:
        parts = urlsplit(cleaned)
    except ValueError:
        return url_for("dashboard.overview")
    if parts.scheme or parts.netloc or not cleaned.startswith("/") or cleaned.startswith("//"):
        return url_for("dashboard.overview")
    return cleaned


def _record(settings: Settings, name: str, password: str, token: str) -> sessions.SessionRecord | None:
    """What the sign-in form proves: a token (operator or viewer) or a user's password."""
    if token:
        role = token_role(settings, token)
        return sessions.SessionRecord(token_name(role), role, "token", sessions.fingerprint(token)) if role else None
    user = check_user(settings, name, password)
    if user is None:
        return None
    return sessions.SessionRecord(user.name, user.role, "user", sessions.fingerprint(user.password_hash))


def _form(error: str | None = None, status: int = 200) -> tuple[str, int]:
    return render_template("session/login.html", next=safe_next(request.values.get("next")), error=error), status


@bp.get("/login")
@public
def login_form() -> tuple[str, int]:
    return _form()


@bp.post("/login")
@public
def login() -> Response | tuple[str, int] | tuple[str, int, dict[str, str]]:
    csrf_token()
    if not csrf_ok():
        abort(403, "the sign-in form expired; reload the page and try again")
    current = state()
    token = request.form.get("token", "")[:1000].strip()
    name = "" if token else request.form.get("username", "")[:200]
    address = request.remote_addr or ""
    wait = current.on_home(lambda redis: SignInLimiter(redis).retry_after(address, name or None))
    if wait:
        page, status = _form(too_many(wait).description, 429)
        return page, status, {"Retry-After": str(wait)}
    record = _record(current.settings, name, request.form.get("password", "")[:1000], token)
    if record is None:
        current.on_home(lambda redis: SignInLimiter(redis).failed(address, name or None))
        log.warning("failed sign-in %s from %s", f"as {name[:100]!r}" if name else "with a token", address)
        return _form("Wrong token." if token else "Unknown user or wrong password.", 401)
    if old := session.get(sessions.SID_FIELD):
        try:
            current.on_every(lambda redis: sessions.revoke(redis, old))
        except RedisError as exc:  # an instance that is away keeps it until its TTL; it must not stop a sign-in
            log.warning("the previous session could not be revoked everywhere: %s", exc)
    session.clear()  # a fresh session and CSRF token: nothing chosen before signing in survives it
    session[sessions.SID_FIELD] = current.on_home(lambda redis: sessions.create(redis, record))
    return redirect(safe_next(request.form.get("next")))


@bp.post("/logout")
@public  # it ends only the caller's own session, and needs the form's CSRF token
def logout() -> Response:
    if not csrf_ok():
        abort(403, "the form expired; reload the page and try again")
    if sid := session.get(sessions.SID_FIELD):
        try:
            state().on_every(lambda redis: sessions.revoke(redis, sid))
        except RedisError:
            abort(
                503,
                "Redis is unavailable, so the session could not be ended on the server; sign out again once it answers",
            )
    session.clear()
    flash("Signed out.")
    return redirect(url_for("session_views.login_form"))
