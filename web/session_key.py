"""The session-signing key shared by every gunicorn worker and replica through Redis.

With RQSCOPE_SECRET_KEY unset, `start()` (never the app factory, never a request) makes the key
once with SET NX on every instance sessions may live on (State.homes); requests only read it. Until
one is readable, a process-local key signs sessions.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable, Sequence

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


def read_shared_secrets(homes: Iterable[Redis]) -> tuple[list[str], bool]:
    """(the distinct keys the homes hold, in their order; whether the first home answered)."""
    keys: list[str] = []
    first_answered = False
    for position, redis in enumerate(homes):
        try:
            value = redis.get(SECRET_KEY)
        except RedisError:
            continue
        first_answered = first_answered or position == 0
        key = value.decode() if isinstance(value, bytes) else value
        if key and key not in keys:
            keys.append(key)
    return keys, first_answered


def make_shared_secret(homes: Sequence[Redis]) -> bool:
    """Spread one key over every home (SET NX: a key a home holds stays); False while a home is unavailable.

    The key is the first one a home already holds, or a new one: a home that was away when the key was made
    gets the same key once it answers, so no worker ever signs with a key another cannot check.
    """
    held, _ = read_shared_secrets(homes)
    key = held[0] if held else secrets.token_hex(32)
    spread = True
    for redis in homes:
        try:
            redis.set(SECRET_KEY, key, nx=True)
        except RedisError as exc:
            log.warning("Redis unavailable for the shared session key (%s); a process-local key meanwhile", exc)
            spread = False
    return spread


def keep_making(homes: Sequence[Redis], stopped: threading.Event) -> threading.Thread | None:
    """Make the shared key now, or keep trying in a thread until every home has taken it."""
    if make_shared_secret(homes):
        return None

    def retry() -> None:
        attempt = 0
        while not stopped.wait(backoff(attempt, 1.0, 30.0)) and not make_shared_secret(homes):
            attempt += 1

    thread = threading.Thread(target=retry, name="rqscope-session-key", daemon=True)
    thread.start()
    return thread


class SharedKeySessions(SecureCookieSessionInterface):
    """Signed-cookie sessions whose key is read from Redis when a cookie is first read or written.

    Cookies are signed with the first home's key and checked against every home's: a session signed while
    the first home was away holds when it is back, in every worker. Until the first home has answered, the
    keys are read again at most every few seconds, and a request without a session cookie (a scrape, a
    health check, an API call) needs no key, so it never waits on Redis for one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_read = 0.0
        self._keys: list[str] = []  # the newest (signing) key last, as itsdangerous takes them

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.config.get(READY) and time.monotonic() >= self._next_read:
            with self._lock:
                self._next_read = time.monotonic() + RETRY_READ_SECONDS
                held, first_answered = read_shared_secrets(app.extensions["rqscope"].homes.values())
                if held:
                    app.secret_key = held[0]
                    self._keys = [*reversed(held[1:]), held[0]]
                    app.config[READY] = first_answered
        if not app.secret_key:
            app.secret_key = secrets.token_hex(32)
        return URLSafeTimedSerializer(
            self._keys or [app.secret_key],
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={"key_derivation": self.key_derivation, "digest_method": self.digest_method},
        )
