"""The session-signing key shared by every gunicorn worker and replica through Redis.

With RQSCOPE_SECRET_KEY unset, `start()` (never the app factory, never a request) makes the key
once with SET NX; requests only read it. Until it is readable, a process-local key signs sessions.
"""

from __future__ import annotations

import logging
import secrets
import threading

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from redis import Redis, RedisError
from rqscope.tasks.backoff import backoff

log = logging.getLogger(__name__)

SECRET_KEY = "rqscope:session-key"
READY = "RQSCOPE_SHARED_SECRET_READY"


def read_shared_secret(redis: Redis) -> str | None:
    try:
        value = redis.get(SECRET_KEY)
    except RedisError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def make_shared_secret(redis: Redis) -> bool:
    """Create the shared key unless it exists; False while Redis is unavailable."""
    try:
        redis.set(SECRET_KEY, secrets.token_hex(32), nx=True)
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
    """Signed-cookie sessions whose key is read from Redis when first needed."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.config.get(READY):
            key = read_shared_secret(app.extensions["rqscope"].redis)
            if key:
                app.secret_key = key
                app.config[READY] = True
            elif not app.secret_key:
                app.secret_key = secrets.token_hex(32)
        return super().get_signing_serializer(app)
