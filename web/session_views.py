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
    # the check and the count go to one instance: the first that answers
    counted_on, wait = current.reachable(lambda redis: SignInLimiter(redis).retry_after(address, name or None))
    if wait:
        page, status = _form(too_many(wait).description, 429)
        return page, status, {"Retry-After": str(wait)}
    record = _record(current.settings, name, request.form.get("password", "")[:1000], token)
    if record is None:
        SignInLimiter(current.homes[counted_on]).failed(address, name or None)
        log.warning("failed sign-in %s from %s", f"as {name[:100]!r}" if name else "with a token", address)
        return _form("Wrong token." if token else "Unknown user or wrong password.", 401)
    # the new session first: if no instance takes it, the cookie still holds the earlier ones to revoke
    at, sid = current.reachable(lambda redis: sessions.create(redis, record))
    unrevoked = _revoke(_held())  # earlier sessions whose instance is away: kept, and revoked at sign-out
    session.clear()  # a fresh session and CSRF token: nothing chosen before signing in survives it
    session[sessions.SID_FIELD], session[sessions.AT_FIELD] = sid, at
    session[sessions.RECORD_FIELD] = sessions.digest(record)
    if unrevoked:
        if len(unrevoked) > sessions.MAX_STALE:
            log.warning("%d earlier session(s) left to expire on their own", len(unrevoked) - sessions.MAX_STALE)
        session[sessions.STALE_FIELD] = unrevoked[-sessions.MAX_STALE :]
    return redirect(safe_next(request.form.get("next")))


def _held() -> list[list[str]]:
    """[instance, sid] of every session this browser's cookie holds: the current one, then earlier ones."""
    current = state()
    stale = session.get(sessions.STALE_FIELD, [])
    held = [list(pair) for pair in stale[: sessions.MAX_STALE] if isinstance(pair, list) and len(pair) == 2]
    if sid := session.get(sessions.SID_FIELD):
        held.append([session.get(sessions.AT_FIELD, current.first.name), sid])
    return held


def _revoke(held: list[list[str]]) -> list[list[str]]:
    """Revoke the sessions, one round trip per instance holding any; the ones whose instance did not answer."""
    current, left = state(), []
    by_instance: dict[str, list[str]] = {}
    for at, sid in held:
        by_instance.setdefault(at, []).append(sid)
    for at, sids in by_instance.items():
        redis = current.home_named(at)
        if redis is None:
            continue  # an instance no longer watched: nothing here can vouch for that session any more
        try:
            sessions.revoke_all(redis, sids)
        except RedisError as exc:
            log.warning("%d session(s) on %s not revoked yet: %s", len(sids), at, exc)
            left += [[at, sid] for sid in sids]
    return left


@bp.post("/logout")
@public  # it ends only the caller's own session, and needs the form's CSRF token
def logout() -> Response:
    if not csrf_ok():
        abort(403, "the form expired; reload the page and try again")
    if unrevoked := _revoke(_held()):  # every session this browser held must end, or the caller hears so
        mine = [session.get(sessions.AT_FIELD, state().first.name), session.get(sessions.SID_FIELD)]
        if mine not in unrevoked:  # the current one did end: only the earlier ones are left to try again
            session.pop(sessions.SID_FIELD, None)
            session.pop(sessions.AT_FIELD, None)
        session[sessions.STALE_FIELD] = [pair for pair in unrevoked if pair != mine]
        abort(
            503,
            "Redis is unavailable, so the session could not be ended on the server; sign out again once it answers",
        )
    session.clear()
    flash("Signed out.")
    return redirect(url_for("session_views.login_form"))
