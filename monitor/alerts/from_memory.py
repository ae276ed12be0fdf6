"""Notifications sent straight from memory while Redis is away, and their results until Redis takes them."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from rqscope.monitor.alerts.outbox import Delivery, Outbox, dead_letter_json
from rqscope.monitor.alerts.sending import DROPPED, RETRIED, Notifier, attempt


@dataclass
class MemorySends:
    unsent: list[tuple[Delivery, float]] = field(default_factory=list)  # with when each may be tried
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (receiver, result) -> attempts
    dead: list[str] = field(default_factory=list)
    # a batch of results sent to Redis whose reply never came: resent as it was, under the same id
    flushing: tuple[str, Counter[tuple[str, str]], list[str]] | None = None

    def add(self, deliveries: list[Delivery]) -> None:
        self.unsent += [(d, 0.0) for d in deliveries]

    def take(self) -> list[Delivery]:
        """The deliveries not sent yet, for the outbox now that Redis answers."""
        taken, self.unsent = [d for d, _ in self.unsent], []
        return taken

    def send(self, notifiers: Mapping[str, Notifier], base_url: str, now: float, give_up_seconds: float) -> None:
        """Send what is due, each lane in order; failures wait with backoff, and the hopeless are dead letters."""
        waiting: list[tuple[Delivery, float]] = []
        held: set[tuple[str, str]] = set()  # a lane's notifications go in order
        for delivery, due in self.unsent:
            notifier = notifiers.get(delivery.receiver)
            if notifier is None or delivery.lane in held or due > now:
                held.add(delivery.lane)
                waiting.append((delivery, due))
                continue
            outcome = attempt(notifier, delivery, base_url, now, give_up_seconds)
            self.counts[(delivery.receiver, outcome.result)] += 1
            if outcome.result == RETRIED:
                held.add(delivery.lane)
                waiting.append((delivery, outcome.next_due))
            elif outcome.result == DROPPED:
                self.dead.append(dead_letter_json(delivery, outcome.reason, now))
        self.unsent = waiting

    def flush(self, outbox: Outbox, now: float) -> None:
        """Counts and dead letters into Redis, once each even when a reply is lost and the batch is resent."""
        if self.flushing is None:
            if not self.counts and not self.dead:
                return
            self.flushing = (uuid.uuid4().hex, self.counts, self.dead)
            self.counts, self.dead = Counter(), []
        outbox.record_local(*self.flushing, now)
        self.flushing = None
