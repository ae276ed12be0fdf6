"""Who is asking, and may they read or act.

Credentials: bearer tokens (operator or viewer), dashboard users with werkzeug password hashes (HTTP
basic auth), and sessions opened by signing in with either. Without any credential configured, only a
loopback caller that no proxy relayed is let in, as an anonymous operator. An Authorization header is
used or refused, never ignored. Secrets are compared in constant time. A mutation also has to come
from this site: never `Sec-Fetch-Site: cross-site`, and from a browser it needs the CSRF token.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from dataclasses import dataclass

from flask import abort, g, request, session
from redis import ConnectionError, RedisError, TimeoutError
from rqscope.monitor.settings import Settings, User, env_name
from rqscope.web import hosts, sessions
from rqscope.web.front_headers import (
    FLASHES,
    FRONT_CSRF_HEADER,
    FRONT_FLASHES_HEADER,
    FRONT_TOKEN_HEADER,
    FRONT_USER_HEADER,
    caller_from,
    flashes,
)
from rqscope.web.ratelimit import SignInLimiter
from rqscope.web.state import state
from werkzeug.exceptions import HTTPException, TooManyRequests
from werkzeug.security import check_password_hash, generate_password_hash

OPERATOR = "operator"
VIEWER = "viewer"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
VERDICT = "rqscope_verdict"


@functools.cache
def _dummy_hash(method: str) -> str:
    """A hash of nothing, made with `method`: checked for an unknown user name, so that the answer
    takes as long as for a wrong password of a user whose hash uses that method."""
    return generate_password_hash(secrets.token_hex(8), method=method)


def _method(password_hash: str) -> str:
    return password_hash.split("$", 1)[0]


UNUSABLE = "the Authorization header is not usable: send 'Bearer <token>' or 'Basic <user:password>'"


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    via: str  # token, basic, session or anonymous

    @property
    def can_act(self) -> bool:
        return self.role == OPERATOR

    @property
    def is_browser(self) -> bool:
        # credentials a browser sends on its own (cookies, cached basic auth) need proof of this site
        return self.via in ("session", "anonymous", "basic")


@dataclass(frozen=True)
class Verdict:
    """Who the caller is, or why they are not let in."""

    identity: Identity | None
    problem: str = ""


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_user(settings: Settings, name: str, password: str) -> User | None:
    if not settings.users:
        return None  # nothing to check against: no hash is worth its cost
    user = next((u for u in settings.users if hmac.compare_digest(u.name.encode(), name.encode())), None)
    decoy = _dummy_hash(_method(settings.users[0].password_hash)) if user is None else ""
    valid = check_password_hash(user.password_hash if user else decoy, password)
    return user if user is not None and valid else None


def token_role(settings: Settings, token: str) -> str | None:
    operator, viewer = _same(token, settings.api_token), _same(token, settings.viewer_token)
    return OPERATOR if operator else VIEWER if viewer else None


def token_name(role: str) -> str:
    return "api-token" if role == OPERATOR else "viewer-token"


def too_many(wait: int) -> TooManyRequests:
    return TooManyRequests(
        f"Too many failed sign-ins from this address or for this user; try again in {wait} s.", retry_after=wait
    )


def _basic(settings: Settings) -> Verdict:
    if not settings.users:
        return Verdict(None, f"HTTP basic auth needs users, and {env_name('users')} is not set")
    auth = request.authorization
    if auth is None or auth.type != "basic" or auth.username is None:
        return Verdict(None, UNUSABLE)
    current, address, name = state(), request.remote_addr or "", auth.username
    # the check and the count go to one instance: the first that answers
    counted_on, wait = current.reachable(lambda redis: SignInLimiter(redis).retry_after(address, name))
    if wait:
        raise too_many(wait)
    user = check_user(settings, name, auth.password or "")
    if user is None:
        SignInLimiter(current.homes[counted_on]).failed(address, name)
        return Verdict(None, "unknown user or wrong password")
    return Verdict(Identity(user.name, user.role, "basic"))


def _from_header(settings: Settings, header: str) -> Verdict:
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        if not value or " " in value:
            return Verdict(None, UNUSABLE)
        role = token_role(settings, value)
        return Verdict(Identity(token_name(role), role, "token")) if role else Verdict(None, "wrong token")
    if scheme.lower() == "basic":
        return _basic(settings)
    return Verdict(None, UNUSABLE)


def session_identity(settings: Settings, record: sessions.SessionRecord) -> Identity | None:
    """The identity a session record still proves: its credential must be unchanged in the settings."""
    if record.kind == "token":
        token = settings.api_token if record.role == OPERATOR else settings.viewer_token
        valid = token is not None and _same(record.credential, sessions.fingerprint(token))
        return Identity(token_name(record.role), record.role, "session") if valid else None
    user = next((u for u in settings.users if u.name == record.name and u.role == record.role), None)
    if user is None or not _same(record.credential, sessions.fingerprint(user.password_hash)):
        return None
    return Identity(user.name, user.role, "session")


def _session_record(sid: str) -> sessions.SessionRecord | None:
    """The record on the instance the signed cookie names (the first, for cookies from before instances).

    Only that instance vouches for the session. While it cannot be reached the caller is not signed in, and
    may sign in again on an instance that answers: the other instances' pages stay usable.
    """
    current = state()
    redis = current.home_named(session.get(sessions.AT_FIELD, current.first.name))
    if redis is None:
        return None
    try:
        record = sessions.load(redis, sid)
    except (ConnectionError, TimeoutError):
        if len(current.homes) == 1:  # nowhere else to sign in: the outage is the answer (503)
            raise
        return None
    signed = session.get(sessions.RECORD_FIELD)  # absent only in cookies from before instances: first instance
    if (
        record is None
        or (signed is None and redis is not current.first.redis)
        or (signed is not None and not hmac.compare_digest(str(signed), sessions.digest(record)))
    ):
        return None
    return record


def _judge(settings: Settings) -> Verdict:
    if "Authorization" in request.headers:
        return _from_header(settings, request.headers.get("Authorization", ""))
    sid = session.get(sessions.SID_FIELD)
    if sid:
        record = _session_record(sid)
        who = session_identity(settings, record) if record else None
        if who is not None:
            return Verdict(who)
    if not settings.has_credentials:
        if hosts.local_caller(request):
            return Verdict(Identity("anonymous", OPERATOR, "anonymous"))
        return Verdict(
            None,
            "credentials required: none are configured, so only a loopback caller that no proxy "
            f"relayed may use this sidecar; set {env_name('api_token')}, "
            f"{env_name('viewer_token')} or {env_name('users')}",
        )
    return Verdict(None, "credentials required: sign in, or send Authorization: Bearer <token>")


def verdict(settings: Settings) -> Verdict:
    """The caller's verdict, worked out once per request."""
    found = g.get(VERDICT)
    if found is None:
        try:
            found = _judge(settings)
        except HTTPException as exc:
            g.setdefault(VERDICT, Verdict(None, exc.description or ""))
            raise
        except RedisError:
            g.setdefault(VERDICT, Verdict(None, "Redis is unavailable"))
            raise
        setattr(g, VERDICT, found)
    return found  # type: ignore[no-any-return]


def identify(settings: Settings) -> Identity | None:
    """The caller's identity, or None when it presented no valid credential."""
    return verdict(settings).identity


def front_caller(settings: Settings) -> Identity:
    """In a child sidecar (web.children), the caller its front judged, read-only here; 403 for anyone else."""
    if not _same(request.headers.get(FRONT_TOKEN_HEADER, ""), settings.front_token):
        abort(403, "this sidecar serves only the sidecar that started it")
    role, via, name = caller_from(request.headers.get(FRONT_USER_HEADER, ""))
    # the front's access guard let this caller in for this request: as an operator only for what it let them change
    who = Identity(
        name[:200] or "front",
        role if role in (OPERATOR, VIEWER) else VIEWER,
        via if via in ("session", "token", "basic", "anonymous") else "token",
    )
    g.front_csrf = request.headers.get(FRONT_CSRF_HEADER, "")  # the front's form token, for the forms of relayed pages
    setattr(g, VERDICT, Verdict(who))
    if given := request.headers.get(FRONT_FLASHES_HEADER):
        session[FLASHES] = flashes(given)  # for get_flashed_messages on the page rendered now
    return who


def csrf_token() -> str:
    if state().settings.front_token:  # a child sidecar: its pages are the front's, and so is their token
        return str(g.get("front_csrf", ""))
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(token)


def csrf_ok() -> bool:
    expected = session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    return bool(expected) and _same(given, expected)


def require_viewer(settings: Settings) -> Identity:
    """Abort with 401 unless the caller may read."""
    found = verdict(settings)
    if found.identity is None:
        abort(401, found.problem)
    return found.identity


def require_operator(settings: Settings, form: bool = False) -> Identity:
    """Abort unless the caller may mutate: an operator, from this site, with CSRF proof from a browser."""
    if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
        abort(403, "cross-site requests may not change anything")
    who = require_viewer(settings)
    if not who.can_act:
        abort(403, "this action needs the operator role")
    if who.is_browser:
        cookie_session = bool(request.cookies) or form
        if cookie_session and not csrf_ok():
            abort(403, "the form is missing its CSRF token or it expired; reload the page and try again")
        if not cookie_session and request.method == "POST" and not request.is_json:
            # a scripted client: a cross-site form can POST, but not JSON without CORS
            abort(415, "send Content-Type: application/json")
    return who


def require_metrics(settings: Settings) -> None:
    """/metrics: open unless RQSCOPE_METRICS_TOKEN is set; then that token, or any reader."""
    if not settings.metrics_token:
        return
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and _same(value.strip(), settings.metrics_token):
        return
    require_viewer(settings)
