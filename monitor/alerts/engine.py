"""The alert evaluator: one leader at a time (a Redis lease), state and outbox kept in Redis.

Any number of sidecar processes run it; only the lease holder evaluates, so three replicas with
four gunicorn workers each still evaluate once per interval. State lives in Redis, so a restarted
or new leader continues where the last one stopped. Notifications go to an outbox list and are
sent by a separate step with capped exponential backoff: a receiver that is down never delays
evaluation, and gets every notification once it is back.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import Redis, RedisError
from rqscope.monitor.alerts.evaluate import evaluate
from rqscope.monitor.alerts.notifiers import DeliveryError
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.alerts.silences import Silence, all_silences, silenced
from rqscope.monitor.alerts.state import Alert, Notification, advance
from rqscope.monitor.rates import read_series
from rqscope.monitor.snapshot import Snapshot

log = logging.getLogger(__name__)

STATE_KEY = "rqscope:alerts:state"
OUTBOX_KEY = "rqscope:alerts:outbox"
LEASE_KEY = "rqscope:alerts:leader"
HISTORY_KEY = "rqscope:alerts:history"
# what a process evaluated from memory during an outage, for whoever leads once Redis is back
HANDOVER_KEY = "rqscope:alerts:handover"
HISTORY_MAXLEN = 1000
MAX_BACKOFF_SECONDS = 60.0

# renew when we hold the lease, take it when nobody does
LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""


class Notifier(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def severities(self) -> tuple[str, ...]: ...

    def send(self, note: Notification, base_url: str) -> None: ...


@dataclass
class Delivery:
    """One notification for one receiver, waiting in the outbox."""

    receiver: int
    status: str
    alert: dict[str, Any]
    attempts: int = 0
    next_attempt: float = 0.0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


def parsed(raws: Sequence[bytes]) -> list[Alert]:
    """Alerts from their stored JSON; an unreadable entry is skipped."""
    return [a for a in (Alert.from_json(raw) for raw in raws) if a is not None]


def changed_at(alert: Alert) -> float:
    return max(alert.since, alert.started_at or 0.0, alert.ended_at or 0.0, alert.last_notified or 0.0)


def adopt(current: dict[str, Alert], newer: Sequence[Alert]) -> dict[str, Alert]:
    """`current`, with each alert replaced by a handed-over version that changed more recently."""
    merged = dict(current)
    for alert in newer:
        known = merged.get(alert.fingerprint)
        if known is None or changed_at(alert) > changed_at(known):
            merged[alert.fingerprint] = alert
    return merged


class AlertEngine:
    def __init__(
        self,
        redis: Redis,
        rules: Sequence[Rule],
        snapshot: Callable[[], Snapshot],
        notifiers: Sequence[Notifier] = (),
        *,
        interval: float = 15.0,
        repeat_seconds: float = 4 * 3600,
        base_url: str = "http://127.0.0.1:9190/",
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.rules = tuple(rules)
        self.snapshot = snapshot
        self.notifiers = tuple(notifiers)
        self.interval = interval
        self.repeat_seconds = repeat_seconds
        self.base_url = base_url
        # the lease value names the process, so that an operator (or a test) can see who leads
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.lease_ms = int(interval * 3 * 1000)
        self.evaluations = 0
        self._lease = redis.register_script(LEASE_SCRIPT)
        self._led = False
        self._memory: dict[str, Alert] = {}
        self._outage = False
        self._silences: list[Silence] = []
        self._unsaved: list[Delivery] = []  # deliveries not yet in the outbox (Redis away)

    def is_leader(self) -> bool:
        try:
            self._led = bool(self._lease(keys=[LEASE_KEY], args=[self.holder, self.lease_ms]))
        except RedisError as exc:
            # nobody can take the lease while Redis is away: the last holder goes on, from memory
            log.warning("alert lease unavailable: %s", exc)
        return self._led

    def load(self) -> dict[str, Alert]:
        return {a.fingerprint: a for a in parsed(self.redis.hvals(STATE_KEY))}  # type: ignore[arg-type]

    def history(self, limit: int = 100) -> list[tuple[float, str, Alert]]:
        """The newest transitions (firing or resolved), newest first."""
        entries = []
        for _, fields in self.redis.xrevrange(HISTORY_KEY, count=limit):  # type: ignore[union-attr]
            alert = Alert.from_json(fields.get(b"alert", b""))
            if alert is not None:
                entries.append((float(fields.get(b"at", b"0")), fields.get(b"status", b"").decode(), alert))
        return entries

    def _deliveries(self, notes: list[Notification], now: float) -> list[Delivery]:
        found = []
        for note in notes:
            labels = {"alertname": note.alert.rule, "severity": note.alert.severity, **dict(note.alert.labels)}
            if silenced(self._silences, labels, now):
                continue  # evaluated and kept in state, but not sent
            for index, notifier in enumerate(self.notifiers):
                if notifier.severities and note.alert.severity not in notifier.severities:
                    continue
                found.append(Delivery(index, note.status, json.loads(note.alert.to_json())))
        return found

    def evaluate_once(self) -> list[Notification] | None:
        """Evaluate if this process leads; return the new notifications, or None when it does not lead."""
        if not self.is_leader():
            if self._outage:
                self._hand_over()
            return None
        now = self.clock()
        snapshot = self.snapshot()
        series = None
        try:
            self._silences = all_silences(self.redis)
            series = read_series(self.redis, minutes=61, now=now) if snapshot.redis.up else None
            stored, handed_over = self._load_with_handovers()
            # after an outage this process's memory is newer than Redis (which may even be empty),
            # and so is what another process evaluated from memory while it led through the outage
            self._memory = adopt(self._memory if self._outage else stored, handed_over)
            self._outage = False
        except RedisError as exc:
            self._outage = True
            log.warning("alert state unavailable, evaluating from memory: %s", exc)
        evaluated = {r.name for r in self.rules if snapshot.redis.up or r.kind == "redis_down"}
        current, notes = advance(self._memory, evaluate(self.rules, snapshot, series, now), evaluated, now,
                                 self.repeat_seconds)  # fmt: skip
        self._memory = current
        self._unsaved += self._deliveries(notes, now)
        try:
            with self.redis.pipeline() as pipe:
                pipe.delete(STATE_KEY)
                if current:
                    pipe.hset(STATE_KEY, mapping={fp: a.to_json() for fp, a in current.items()})
                for delivery in self._unsaved:
                    pipe.rpush(OUTBOX_KEY, delivery.to_json())
                for note in notes:
                    entry = {"at": repr(now), "status": note.status, "alert": note.alert.to_json()}
                    pipe.xadd(HISTORY_KEY, entry, maxlen=HISTORY_MAXLEN, approximate=True)  # type: ignore[arg-type]
                pipe.execute()
            self._unsaved = []
        except RedisError:
            # Redis is away (the RedisDown alert itself): send straight from this process
            self._unsaved = [d for d in self._unsaved if not self._send(d)]
        self.evaluations += 1
        return notes

    def _hand_over(self) -> None:
        """Redis is back and another process leads: give it what this one fired or resolved meanwhile."""
        try:
            with self.redis.pipeline() as pipe:
                for alert in self._memory.values():
                    pipe.rpush(HANDOVER_KEY, alert.to_json())
                for delivery in self._unsaved:
                    pipe.rpush(OUTBOX_KEY, delivery.to_json())
                pipe.execute()
        except RedisError as exc:
            log.warning("alert hand-over postponed: %s", exc)
            return
        self._outage, self._unsaved, self._memory = False, [], {}

    def _load_with_handovers(self) -> tuple[dict[str, Alert], list[Alert]]:
        """The stored state, and the alerts handed over since (taken, so only once), in one round trip."""
        with self.redis.pipeline() as pipe:
            pipe.hvals(STATE_KEY)
            pipe.lrange(HANDOVER_KEY, 0, -1)
            pipe.delete(HANDOVER_KEY)
            stored_raw, handed_raw, _ = pipe.execute()
        return {a.fingerprint: a for a in parsed(stored_raw)}, parsed(handed_raw)

    def _send(self, delivery: Delivery) -> bool:
        notifier = self.notifiers[delivery.receiver % len(self.notifiers)]
        note = Notification(delivery.status, Alert.from_json(json.dumps(delivery.alert)))  # type: ignore[arg-type]
        try:
            notifier.send(note, self.base_url)
        except DeliveryError as exc:
            delivery.attempts += 1
            delivery.next_attempt = self.clock() + min(MAX_BACKOFF_SECONDS, 2.0**delivery.attempts)
            log.warning("%s delivery failed (attempt %d): %s", notifier.kind, delivery.attempts, exc)
            return False
        return True

    def deliver(self, limit: int = 100) -> int:
        """Send what the outbox holds, oldest first; failures wait with capped exponential backoff."""
        if not self.notifiers or not self.is_leader():
            return 0
        sent = 0
        now = self.clock()
        waiting: set[int] = set()  # a receiver gets its notifications in order, so one wait holds the rest
        for raw in self.redis.lrange(OUTBOX_KEY, 0, limit - 1):  # type: ignore[union-attr]
            delivery = Delivery(**json.loads(raw))
            if delivery.receiver in waiting or delivery.next_attempt > now:
                waiting.add(delivery.receiver)
                continue
            if not self._send(delivery):
                self.redis.lset(OUTBOX_KEY, self._index(raw), delivery.to_json())
                waiting.add(delivery.receiver)
                continue
            self.redis.lrem(OUTBOX_KEY, 1, raw)
            sent += 1
        return sent

    def _index(self, raw: bytes) -> int:
        items = self.redis.lrange(OUTBOX_KEY, 0, -1)
        return items.index(raw)  # type: ignore[union-attr]
