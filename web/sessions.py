"""Dashboard sessions: the signed cookie holds only a random id; who signed in lives in Redis.

Signing out deletes the record, so a copied cookie is worthless afterwards. The record is keyed by a
hash of the id, so reading Redis reveals no usable session, and it carries a fingerprint of the
credential used, so rotating a token or a password ends the sessions opened with it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from functools import lru_cache

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from redis import Redis
from rqscope.monitor.settings import Settings
from rqscope.tasks.rq_internals.keys import OWN_FORMAT
from rqscope.web.session_key import SharedKeySessions

SESSION_KEY = OWN_FORMAT + "session:{}"
SESSION_TTL = 12 * 3600  # seconds a sign-in lasts; fixed, so that a GET never writes to Redis
SID_FIELD = "sid"
AT_FIELD = "sid_at"  # the instance holding the record; signed with the cookie, so a caller cannot move it
STALE_FIELD = "stale"  # [instance, sid] of earlier sessions of this browser not yet revoked (their Redis was away)
RECORD_FIELD = "sid_of"  # digest() of the record signed in with: Redis says whether it lives, never who it is
MAX_STALE = 8


@dataclass(frozen=True)
class SessionRecord:
    name: str
    role: str
    kind: str  # "user" or "token"
    credential: str  # fingerprint of the password hash or token used to sign in


@lru_cache(maxsize=64)
def fingerprint(secret: str) -> str:
    """A slow, salted digest of a credential: it identifies the credential without revealing it."""
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), b"rqscope-session", 50_000).hex()[:32]


def _key(sid: str) -> str:
    return SESSION_KEY.format(hashlib.sha256(sid.encode()).hexdigest())


def create(redis: Redis, record: SessionRecord) -> str:
    """Store a new session record and return its id, for the cookie."""
    sid = secrets.token_urlsafe(32)
    redis.set(_key(sid), json.dumps(asdict(record)), ex=SESSION_TTL)
    return sid


def load(redis: Redis, sid: str) -> SessionRecord | None:
    """The record of a live session, or None when it was revoked, expired or never existed."""
    if not isinstance(sid, str) or not 0 < len(sid) <= 100:
        return None
    raw = redis.get(_key(sid))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return SessionRecord(str(data["name"]), str(data["role"]), str(data["kind"]), str(data["credential"]))
    except (ValueError, KeyError, TypeError):
        return None


def revoke(redis: Redis, sid: str) -> None:
    revoke_all(redis, [sid])


def revoke_all(redis: Redis, sids: list[str]) -> None:
    """Delete these sessions' records in one round trip."""
    keys = [_key(sid) for sid in sids if isinstance(sid, str) and 0 < len(sid) <= 100]
    if keys:
        redis.delete(*keys)


def digest(record: SessionRecord) -> str:
    """What the signed cookie keeps of its record: a record written into Redis by anyone else does not match."""
    return hashlib.sha256(json.dumps(asdict(record), sort_keys=True).encode()).hexdigest()[:32]


class CookieSessions(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie is marked Secure whenever the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        # behind a TLS-terminating proxy, ProxyFix (RQSCOPE_TRUSTED_PROXIES) has set the scheme
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


class SharedKeyCookieSessions(CookieSessions, SharedKeySessions):
    """The key shared through Redis (RQSCOPE_SECRET_KEY unset), with the same Secure marking."""


def interface(settings: Settings) -> SecureCookieSessionInterface:
    return CookieSessions() if settings.secret_key else SharedKeyCookieSessions()
