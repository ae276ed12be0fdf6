"""One delivery round: claim what is due from the outbox, send it oldest first, record each result.

Each receiver gets a budget of attempts per round, and a receiver that fails is left alone until the
next round: a receiver that is down (or slow to say so) costs the others one attempt per round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis import RedisError
from rqscope.monitor.alerts.lease import Lease
from rqscope.monitor.alerts.outbox import Delivery, Outbox
from rqscope.monitor.alerts.sending import RETRIED, SENT, Notifier, Outcome, attempt

log = logging.getLogger(__name__)


@dataclass
class DeliveryRound:
    outbox: Outbox
    lease: Lease
    holder: str
    notifiers: dict[str, Notifier]  # by receiver name
    base_url: str
    clock: Callable[[], float]
    give_up_seconds: float
    record: Callable[[Delivery, Outcome, float], None]

    def run(self, limit: int) -> int:
        """Send up to `limit` entries per receiver; how many were sent."""
        budget = dict.fromkeys(self.notifiers, limit)  # attempts left per receiver
        sent, sweep = 0, True
        # a sent entry lets the next one of its lane go: claim again until nothing is due or the budget is spent
        while budget and self.lease.held():
            try:
                claimed = self.outbox.claim(self.holder, budget, self.clock(), sweep)
            except RedisError as exc:
                log.warning("alert delivery skipped: %s", exc)
                break
            sweep = False
            done, attempted = self._send(claimed, budget)
            sent += done
            if not attempted:
                break
        return sent

    def _send(self, claimed: list[Delivery], budget: dict[str, int]) -> tuple[int, int]:
        """Send claimed entries oldest first, and release the rest; (sent, attempted)."""
        sent, attempted, unused = 0, 0, []
        for delivery in sorted(claimed, key=lambda d: d.queued_at):
            # a receiver that failed waits for the next round; nothing is sent once the lease may have ended
            if budget.get(delivery.receiver, 0) <= 0 or not self.lease.held():
                unused.append(delivery)
                continue
            now = self.clock()
            outcome = attempt(self.notifiers[delivery.receiver], delivery, self.base_url, now, self.give_up_seconds)
            sent += outcome.result == SENT
            attempted += 1
            budget[delivery.receiver] -= 1
            if outcome.result == RETRIED or budget[delivery.receiver] <= 0:
                del budget[delivery.receiver]
            self.record(delivery, outcome, self.clock())  # at once: a crash here is what re-sends an entry
        try:
            self.outbox.release(self.holder, unused, self.clock())
        except RedisError as exc:  # their claims end by themselves
            log.warning("alert claims not released: %s", exc)
        return sent, attempted
