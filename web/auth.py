"""Who is asking, and may they read or act.

Credentials: bearer tokens (operator or viewer), dashboard users with werkzeug password hashes
(a login session, or HTTP basic auth), or nothing at all while bound to loopback or run with
--no-auth. Secrets are compared in constant time. A mutation also has to come from this site:
never `Sec-Fetch-Site: cross-site`, and from a browser session it needs the CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from flask import abort, request, session
from rqscope.monitor.settings import Settings, User
from werkzeug.security import check_password_hash, generate_password_hash

OPERATOR = "operator"
VIEWER = "viewer"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# checked when a user name is unknown, so that the answer takes as long as for a wrong password
_DUMMY_HASH = generate_password_hash(secrets.token_hex(8))


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
        return self.via in ("session", "anonymous")


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_user(settings: Settings, name: str, password: str) -> User | None:
    user = next((u for u in settings.users if hmac.compare_digest(u.name.encode(), name.encode())), None)
    valid = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    return user if user is not None and valid else None


def _from_header(settings: Settings) -> Identity | None | bool:
    """The identity an Authorization header proves; False when there is no header."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
        operator, viewer = _same(token, settings.api_token), _same(token, settings.viewer_token)
        if operator:
            return Identity("api-token", OPERATOR, "token")
        return Identity("viewer-token", VIEWER, "token") if viewer else None
    if scheme.lower() == "basic":
        auth = request.authorization
        if auth is None:  # unreadable credentials are refused like wrong ones
            return None
        user = check_user(settings, auth.username or "", auth.password or "")
        return Identity(user.name, user.role, "basic") if user else None
    return False


def identify(settings: Settings) -> Identity | None:
    """The caller's identity, or None when it presented no valid credential."""
    from_header = _from_header(settings)
    if from_header is not False:
        # a header that does not check out is refused, never ignored in favour of a session
        return from_header if isinstance(from_header, Identity) else None
    name, role = session.get("user"), session.get("role")
    if name is not None:
        user = next((u for u in settings.users if u.name == name and u.role == role), None)
        if user is not None:
            return Identity(user.name, user.role, "session")
    if settings.no_auth or (not settings.has_credentials and settings.bound_to_loopback):
        return Identity("anonymous", OPERATOR, "anonymous")
    return None


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(token)


def csrf_ok() -> bool:
    expected = session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    return bool(expected) and _same(given, expected)


def require_viewer(settings: Settings) -> Identity:
    """Abort with 401/403 unless the caller may read."""
    who = identify(settings)
    if who is None:
        if not settings.has_credentials and not settings.bound_to_loopback:
            abort(403, "no credentials are configured on this non-loopback sidecar; set RQSCOPE_API_TOKEN")
        abort(401, "sign in, or send Authorization: Bearer <token>")
    return who


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
            # a scripted client on an open sidecar: a cross-site form can POST, but not JSON without CORS
            abort(415, "send Content-Type: application/json")
    return who
