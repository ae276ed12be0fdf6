"""The session-signing key shared by every gunicorn worker and replica through Redis.

With RQSCOPE_SECRET_KEY unset, `start()` (never the app factory, never a request) makes the key
once with SET NX; requests only read it. Until it is readable, a process-local key signs sessions.
It lives on the first instance only, whichever instance a session lives on: a reader of any other
instance cannot sign cookies.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from redis import Redis, RedisError
from rqscope.tasks.backoff import backoff
from rqscope.tasks.rq_internals.keys import OWN

log = logging.getLogger(__name__)

SECRET_KEY = OWN + "session-key"
READY = "RQSCOPE_SHARED_SECRET_READY"
RETRY_READ_SECONDS = 5.0


def read_shared_secret(redis: Redis) -> bytes | None:
    """The shared key as stored (any bytes sign), or None while it is unreadable, absent or empty."""
    try:
        value = redis.get(SECRET_KEY)
    except RedisError:
        return None
    key = value.encode() if isinstance(value, str) else value
    return key or None


def make_shared_secret(redis: Redis) -> bool:
    """Create the shared key unless a usable one exists (an empty value is replaced); False while Redis is
    unavailable."""
    try:
        if not redis.set(SECRET_KEY, secrets.token_hex(32), nx=True) and not redis.get(SECRET_KEY):
            redis.set(SECRET_KEY, secrets.token_hex(32))
    except RedisError as exc:
        log.warning("Redis unavailable for the shared session key (%s); a process-local key meanwhile", exc)
        return False
    return True


def keep_making(redis: Redis, stopped: threading.Event) -> threading.Thread | None:
    """Make the shared key now, or keep trying in a thread until Redis answers."""
    if make_shared_secret(redis):
        return None

    def retry() -> None:
        attempt = 0
        while not stopped.wait(backoff(attempt, 1.0, 30.0)) and not make_shared_secret(redis):
            attempt += 1

    thread = threading.Thread(target=retry, name="rqscope-session-key", daemon=True)
    thread.start()
    return thread


class SharedKeySessions(SecureCookieSessionInterface):
    """Signed-cookie sessions whose key is read from Redis when a cookie is first read or written.

    A request without a session cookie (a scrape, a health check, an API call) needs no key, so it
    never waits on Redis for one; while the key is unreadable it is asked for at most every few seconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_read = 0.0

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.config.get(READY) and time.monotonic() >= self._next_read:
            with self._lock:
                self._next_read = time.monotonic() + RETRY_READ_SECONDS
                key = read_shared_secret(app.extensions["rqscope"].first.redis)
                if key:
                    app.secret_key = key
                    app.config[READY] = True
        if not app.secret_key:
            app.secret_key = secrets.token_hex(32)
        return super().get_signing_serializer(app)
