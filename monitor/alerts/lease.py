"""The alert leader's lease (SET NX PX, renewed), bounded by this process's own monotonic clock.

Redis ends a lease `lease_seconds` after the renewal that Redis ran, which is no earlier than when
this process sent it. So this process counts its lease from the moment it sent its last successful
renewal, less a margin for clock drift: once that has passed it stops acting, whatever it cannot
hear from Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import Redis, RedisError
from rqscope.monitor.alerts.keys import LEASE_KEY
from rqscope.monitor.alerts.scripts import LEASE

log = logging.getLogger(__name__)


class Lease:
    def __init__(
        self,
        redis: Redis,
        holder: str,
        lease_seconds: float,
        margin_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.margin_seconds = margin_seconds
        self.monotonic = monotonic
        self.reachable = True  # whether Redis answered the last renewal
        self._script = redis.register_script(LEASE)
        self._until = 0.0

    def held(self) -> bool:
        """True while the lease cannot have ended yet, by this process's clock."""
        return self.monotonic() < self._until

    def renew(self) -> bool:
        """Renew (or take) the lease; True while it is held. A renewal Redis does not answer changes nothing."""
        sent_at = self.monotonic()
        try:
            taken = bool(self._script(keys=[LEASE_KEY], args=[self.holder, int(self.lease_seconds * 1000)]))
        except RedisError as exc:
            self.reachable = False
            log.warning("alert lease unavailable: %s", exc)
            return self.held()
        self.reachable = True
        self._until = sent_at + self.lease_seconds - self.margin_seconds if taken else 0.0
        return self.held()

    def drop(self) -> None:
        """Stop acting at once: a fenced write found another holder."""
        self._until = 0.0
