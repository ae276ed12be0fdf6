"""The alert evaluator: one leader at a time (a Redis lease), state and outbox kept in Redis.

Any number of sidecar processes run it; only the lease holder evaluates, and every state write is
fenced by its lease token and by the state version it follows, so a write from memory that another
leader wrote over since changes nothing. A restarted or new leader continues where the last one stopped.
Notifications go to an outbox and are claimed before they are sent, with capped backoff on failure:
a receiver that is down never delays evaluation, and a notification that can never be delivered
goes to a dead-letter list instead of holding the ones behind it.

While Redis is away nobody can take the lease, so the process that led when it went away keeps
watch: it evaluates RedisDown from memory, pages directly, and hands its memory to whoever leads
once Redis is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

from redis import Redis, RedisError
from rqscope.monitor.alerts.delivery import DeliveryRound
from rqscope.monitor.alerts.evaluate import Observation, evaluate
from rqscope.monitor.alerts.from_memory import MemorySends
from rqscope.monitor.alerts.keys import LEASE_KEY, OUTBOX_KEY, RESULTS, STATE_KEY, count_field
from rqscope.monitor.alerts.lease import Lease
from rqscope.monitor.alerts.outbox import DeadLetter, Delivery, Outbox
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.alerts.sending import Notifier, Outcome
from rqscope.monitor.alerts.silences import Silence, all_silences, silenced
from rqscope.monitor.alerts.state import Alert, Notification, advance
from rqscope.monitor.alerts.store import LOST, STALE, Store, parsed, reconcile
from rqscope.monitor.cron import CronState
from rqscope.monitor.cron_memory import remember
from rqscope.monitor.rates import Series, read_series
from rqscope.monitor.snapshot import Snapshot

log = logging.getLogger(__name__)
__all__ = ["LEASE_KEY", "OUTBOX_KEY", "STATE_KEY", "AlertEngine", "Notifier", "parsed"]


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
        claim_seconds: float = 60.0,
        give_up_seconds: float = 24 * 3600.0,
        cron: Callable[[], CronState] | None = None,
        instance: str = "default",
    ) -> None:
        self.redis = redis
        self.instance = instance  # every alert carries it as its `redis` label
        self.rules = tuple(rules)
        self.snapshot = snapshot
        self.cron = cron  # read once per evaluation, only when a rule needs it
        self.notifiers = tuple(notifiers)
        self.interval = interval
        self.repeat_seconds = repeat_seconds
        self.base_url = base_url
        # the lease value names the process, so that an operator (or a test) can see who leads
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.give_up_seconds = give_up_seconds
        self.evaluations = 0
        # three intervals, renewed every interval; acting stops one interval before Redis could end it
        self.lease = Lease(redis, self.holder, interval * 3, interval)
        self.store = Store(redis)
        self.outbox = Outbox(redis, claim_seconds, give_up_seconds)
        self._memory: dict[str, Alert] = {}
        self._version = 0  # of the stored state this process's memory follows
        self._outage = False  # this process's memory may hold what Redis does not
        self._watching = False  # led when Redis went away, and keeps watch until it answers
        self._silences: list[Silence] = []
        self._unsaved: dict[str, Delivery] = {}  # for the outbox, not yet known to be in it
        self._unrecorded: list[tuple[Delivery, Outcome, float]] = []  # results Redis did not take yet
        self._local = MemorySends()  # sent from memory while Redis is away
        self._sending = threading.Lock()  # the scheduler runs one delivery at a time; so do direct callers

    def load(self) -> dict[str, Alert]:
        return self.store.load()

    def history(self, limit: int = 100) -> list[tuple[float, str, Alert]]:
        return self.store.history(limit)

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        return self.outbox.dead_letters(limit)

    def _deliveries(self, notes: list[Notification], now: float) -> list[Delivery]:
        found = []
        for note in notes:
            labels = {"alertname": note.alert.rule, "severity": note.alert.severity, **dict(note.alert.labels)}
            if silenced(self._silences, labels, now):
                continue  # evaluated and kept in state, but not sent
            for notifier in self.notifiers:
                if notifier.severities and note.alert.severity not in notifier.severities:
                    continue
                found.append(Delivery.of(notifier.name, note, now))
        return found

    def evaluate_once(self) -> list[Notification] | None:
        """Evaluate if this process leads (or keeps watch); the new notifications, or None when it does not."""
        acted = self.lease.held() or self._watching
        leading = self.lease.renew()
        if not self.lease.reachable:
            self._watching = acted  # nobody can lead without Redis: the last one to act keeps watch
        elif self._watching or (self._outage and not leading):
            self._watching = False
            if not leading:
                self._hand_over()
        if leading:
            return self._lead()
        if self._watching:
            return self._keep_watch()
        return None

    def _observe(
        self, snapshot: Snapshot, series: Series | None, now: float, cron: CronState | None = None
    ) -> list[Observation]:
        """What the rules observe, each with this instance's name: two instances' alerts never share a fingerprint."""
        scope = ("redis", self.instance)
        return [replace(o, labels=(*o.labels, scope)) for o in evaluate(self.rules, snapshot, series, now, cron)]

    def _lead(self) -> list[Notification]:
        now = self.clock()
        snapshot = self.snapshot()
        series, taken = None, (0, 0)
        try:
            self._silences = all_silences(self.redis)
            series = read_series(self.redis, minutes=61, now=now) if snapshot.redis.up else None
            loaded = self.store.load_with_handovers()
            # after an outage this process's memory may be newer than Redis (which may even be empty),
            # and so may what another process evaluated from memory while it kept watch; but whatever
            # another leader committed in between stands, and its transitions are not queued again
            carried = [*self._unsaved.values(), *self._local.take()]  # Redis answers: all of it for the outbox
            base = self._version if self._outage else None
            self._memory, kept = reconcile(loaded, self._memory, carried, base)
            self._unsaved = {d.id: d for d in kept}
            self._version, taken, self._outage = loaded.version, loaded.taken, False
        except RedisError as exc:
            self._outage = True
            log.warning("alert state unavailable, evaluating from memory: %s", exc)
        cron = self._read_cron(snapshot)
        evaluated = {
            r.name
            for r in self.rules
            if (snapshot.redis.up or r.kind == "redis_down") and (r.kind != "cron_overdue" or cron is not None)
        }
        current, notes = advance(
            self._memory,
            self._observe(snapshot, series, now, cron),
            evaluated,
            now,
            self.repeat_seconds,
            self._version,
        )
        self._memory = current
        fresh = self._deliveries(notes, now)
        if snapshot.redis.up:
            self._unsaved.update((d.id, d) for d in fresh + self._local.take())
        else:  # Redis is away (the RedisDown alert itself): these go from memory, never through the outbox
            self._local.add(fresh)
        fields = [count_field(n.name, result) for n in self.notifiers for result in RESULTS]
        try:
            version = self.store.commit(
                self.holder, current, notes, list(self._unsaved.values()), taken, fields, now, self._version
            )
        except RedisError as exc:  # it may still land: the version it names makes it the only one that does
            self._outage = True
            log.warning("alert state not saved: %s", exc)
        else:
            if version == LOST:
                log.warning("alert lease lost to another process; this one stops evaluating")
                self.lease.drop()
                self._memory, self._unsaved, self._local.unsent = {}, {}, []
                return []
            if version == STALE:  # read again next round, where what was written first stands
                log.warning("alert state changed since this process read it; evaluating again")
                self._outage = True
            else:
                self._version, self._unsaved = version, {}
        self._local.send({n.name: n for n in self.notifiers}, self.base_url, now, self.give_up_seconds)
        self.evaluations += 1
        return notes

    def _read_cron(self, snapshot: Snapshot) -> CronState | None:
        """The cron read when a rule needs it and Redis answers; None leaves cron_overdue alerts as they are."""
        if self.cron is None or not snapshot.redis.up or not any(r.kind == "cron_overdue" for r in self.rules):
            return None
        cron = self.cron()
        if not cron.up:
            return None
        try:
            remember(self.redis, cron)  # a dead scheduler's jobs outlive RQ's copy of them (monitor/cron_memory.py)
        except RedisError as exc:
            log.warning("could not remember the cron schedulers: %s", exc)
        return cron

    def _keep_watch(self) -> list[Notification]:
        """Redis is away: evaluate RedisDown from memory and page directly."""
        now = self.clock()
        snapshot = self.snapshot()
        if snapshot.redis.up:
            return []  # Redis answers reads again: the lease will say who leads
        evaluated = {r.name for r in self.rules if r.kind == "redis_down"}
        current, notes = advance(
            self._memory, self._observe(snapshot, None, now), evaluated, now, self.repeat_seconds, self._version
        )
        self._memory, self._outage = current, True
        self._local.add(self._deliveries(notes, now))
        self._local.send({n.name: n for n in self.notifiers}, self.base_url, now, self.give_up_seconds)
        self.evaluations += 1
        return notes

    def _hand_over(self) -> None:
        """Redis is back and another process leads: give it what this one evaluated and could not send."""
        deliveries = list(self._unsaved.values()) + [d for d, _ in self._local.unsent]
        try:
            self.store.hand_over(list(self._memory.values()), deliveries)
        except RedisError as exc:
            log.warning("alert hand-over postponed: %s", exc)
            return
        self._outage, self._memory, self._unsaved, self._local.unsent = False, {}, {}, []

    def _record(self, delivery: Delivery, outcome: Outcome, at: float) -> None:
        try:
            self.outbox.finish(self.holder, delivery, outcome.result, at, outcome.next_due, outcome.reason)
        except RedisError as exc:  # kept, and recorded before anything else is claimed
            log.warning("alert delivery result not recorded yet: %s", exc)
            self._unrecorded.append((delivery, outcome, at))

    def deliver(self, limit: int = 100) -> int:
        """Claim due outbox entries, up to `limit` per receiver, and send them oldest first; how many were sent."""
        if not self.notifiers or not self._sending.acquire(blocking=False):
            return 0
        try:
            return self._deliver(limit)
        finally:
            self._sending.release()

    def _deliver(self, limit: int) -> int:
        try:
            self._local.flush(self.outbox, self.clock())
            while self._unrecorded:  # only after an outage: one by one, so each recorded one is done
                delivery, outcome, at = self._unrecorded[0]
                self.outbox.finish(self.holder, delivery, outcome.result, at, outcome.next_due, outcome.reason)
                self._unrecorded.pop(0)
            if not self.lease.renew():
                return 0
        except RedisError as exc:
            log.warning("alert delivery skipped: %s", exc)
            return 0
        by_name = {n.name: n for n in self.notifiers}
        sending = DeliveryRound(
            self.outbox, self.lease, self.holder, by_name, self.base_url, self.clock, self.give_up_seconds, self._record
        )
        return sending.run(limit)
