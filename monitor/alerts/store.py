"""Alert state, history and hand-overs in Redis; the leader's writes are fenced by its lease token."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rqscope.monitor.alerts.keys import (
    COUNTS_KEY,
    DUE_KEY,
    ENTRIES_KEY,
    FINISHED_KEY,
    HANDOVER_DELIVERIES_KEY,
    HANDOVER_KEY,
    HISTORY_KEY,
    LEASE_KEY,
    META_KEY,
    OUTBOX_KEY,
    SEQUENCE_KEY,
    STATE_KEY,
)
from rqscope.monitor.alerts.outbox import Delivery
from rqscope.monitor.alerts.scripts import COMMIT
from rqscope.monitor.alerts.state import Alert, Notification

HISTORY_MAXLEN = 1000
COMMIT_KEYS = [LEASE_KEY, STATE_KEY, HISTORY_KEY, OUTBOX_KEY, ENTRIES_KEY, META_KEY, DUE_KEY, SEQUENCE_KEY,
               FINISHED_KEY, COUNTS_KEY, HANDOVER_KEY, HANDOVER_DELIVERIES_KEY]  # fmt: skip


def parsed(raws: Sequence[bytes]) -> list[Alert]:
    """Alerts from their stored JSON; an unreadable entry is skipped."""
    return [a for a in (Alert.from_json(raw) for raw in raws) if a is not None]


def _deliveries(raws: Sequence[bytes]) -> list[Delivery]:
    found = []
    for raw in raws:
        try:
            found.append(Delivery.from_json(raw))
        except (ValueError, TypeError):
            continue
    return found


def changed_at(alert: Alert) -> float:
    return max(alert.since, alert.started_at or 0.0, alert.ended_at or 0.0, alert.last_notified or 0.0)


class Store:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._commit = redis.register_script(COMMIT)

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

    def load_with_handovers(self) -> tuple[dict[str, Alert], list[Alert], list[Delivery], tuple[int, int]]:
        """The stored state, the alerts and deliveries handed over since, and how many of each were read.

        The hand-overs are removed by the commit that applies them, so none is lost to a failed commit.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hvals(STATE_KEY)
            pipe.lrange(HANDOVER_KEY, 0, -1)
            pipe.lrange(HANDOVER_DELIVERIES_KEY, 0, -1)
            stored_raw, handed_raw, deliveries_raw = pipe.execute()
        stored = {a.fingerprint: a for a in parsed(stored_raw)}
        return stored, parsed(handed_raw), _deliveries(deliveries_raw), (len(handed_raw), len(deliveries_raw))

    @staticmethod
    def adopt(current: dict[str, Alert], newer: Sequence[Alert]) -> dict[str, Alert]:
        """`current`, with each alert replaced by a handed-over version that changed more recently."""
        merged = dict(current)
        for alert in newer:
            known = merged.get(alert.fingerprint)
            if known is None or changed_at(alert) > changed_at(known):
                merged[alert.fingerprint] = alert
        return merged

    def commit(
        self,
        token: str,
        state: dict[str, Alert],
        notes: Sequence[Notification],
        deliveries: Sequence[Delivery],
        taken: tuple[int, int],
        count_fields: Sequence[str],
        now: float,
    ) -> bool:
        """Write state, history and outbox in one script, only while `token` holds the lease."""
        args: list[object] = [token, HISTORY_MAXLEN, *taken, len(state)]
        for fingerprint, alert in state.items():
            args += [fingerprint, alert.to_json()]
        args.append(len(notes))
        for note in notes:
            args += [repr(now), note.status, note.alert.to_json()]
        args.append(len(deliveries))
        for delivery in deliveries:
            args += [delivery.id, delivery.meta(), delivery.to_json()]
        args += [len(count_fields), *count_fields]
        return bool(self._commit(keys=COMMIT_KEYS, args=args))

    def hand_over(self, alerts: Sequence[Alert], deliveries: Sequence[Delivery]) -> None:
        """For whoever leads now: what this process evaluated from memory, and what it could not send."""
        with self.redis.pipeline() as pipe:
            if alerts:
                pipe.rpush(HANDOVER_KEY, *(a.to_json() for a in alerts))
            if deliveries:
                pipe.rpush(HANDOVER_DELIVERIES_KEY, *(d.to_json() for d in deliveries))
            pipe.execute()
