"""Failed sign-ins, counted in Redis per client address and per user name, so that every gunicorn
worker and replica shares one budget and a guesser cannot spread attempts across them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis import Redis
from rqscope.tasks.rq_internals.keys import OWN_FORMAT

FAILURES_KEY = OWN_FORMAT + "signin-failures:{kind}:{digest}"
LIMIT = 10
WINDOW = 60  # seconds: a budget comes back a minute after its last failure


def _key(kind: str, value: str) -> str:
    # hashed: user names and forwarded addresses are caller-chosen text of any length
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return FAILURES_KEY.format(kind=kind, digest=digest)


@dataclass(frozen=True)
class SignInLimiter:
    """At most LIMIT failed sign-ins per WINDOW seconds for one address, and for one user name."""

    redis: Redis
    limit: int = LIMIT
    window: int = WINDOW

    def _keys(self, address: str, user: str | None) -> list[str]:
        keys = [_key("address", address)]
        if user:
            keys.append(_key("user", user))
        return keys

    def retry_after(self, address: str, user: str | None) -> int:
        """Seconds until this address and user may try again; 0 when they may try now."""
        keys = self._keys(address, user)
        pipe = self.redis.pipeline(transaction=False)
        pipe.mget(keys)
        for key in keys:
            pipe.ttl(key)
        counts, *ttls = pipe.execute()
        waits = [
            max(int(ttl), 1)
            for count, ttl in zip(counts, ttls, strict=True)
            if count is not None and int(count) >= self.limit
        ]
        return max(waits, default=0)

    def failed(self, address: str, user: str | None) -> None:
        """Count one failed sign-in against the address and the user name."""
        # INCR and EXPIRE in one transaction: a counter never exists without its TTL
        pipe = self.redis.pipeline(transaction=True)
        for key in self._keys(address, user):
            pipe.incr(key)
            pipe.expire(key, self.window)
        pipe.execute()
