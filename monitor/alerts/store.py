"""Alert state, history and hand-overs in Redis; the leader's writes are fenced by its lease token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis
from rqscope.monitor.alerts.keys import (
    HANDOVER_DELIVERIES_KEY,
    HANDOVER_KEY,
    HISTORY_KEY,
    STATE_KEY,
    VERSION_KEY,
    ready_key,
)
from rqscope.monitor.alerts.outbox import Delivery
from rqscope.monitor.alerts.outbox_scripts import OUTBOX_KEYS
from rqscope.monitor.alerts.scripts import COMMIT
from rqscope.monitor.alerts.state import Alert, Notification

HISTORY_MAXLEN = 1000
COMMIT_KEYS = OUTBOX_KEYS + [STATE_KEY, VERSION_KEY, HISTORY_KEY, HANDOVER_KEY, HANDOVER_DELIVERIES_KEY]
LOST, STALE = 0, -1  # a commit's answer when another process leads, or another write came first


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


@dataclass(frozen=True)
class Loaded:
    """The stored state at one version, and what other processes handed over since."""

    state: dict[str, Alert]
    version: int
    handed: list[Alert]
    deliveries: list[Delivery]
    taken: tuple[int, int]  # how many hand-overs of each kind were read, for the commit to remove


def newer(alert: Alert | Delivery, than: Alert | None) -> bool:
    """Whether `alert` (or a delivery's alert) has been through a transition that `than` has not."""
    return than is None or alert.transition > than.transition


def adopt(current: dict[str, Alert], candidates: Sequence[Alert]) -> dict[str, Alert]:
    """`current`, with each alert replaced by a candidate that has been through more transitions."""
    merged = dict(current)
    for alert in candidates:
        if newer(alert, merged.get(alert.fingerprint)):
            merged[alert.fingerprint] = alert
    return merged


def reconcile(
    loaded: Loaded, memory: dict[str, Alert], kept: Sequence[Delivery], base: int | None
) -> tuple[dict[str, Alert], list[Delivery]]:
    """The state to evaluate from and the deliveries to queue; `base`: the version unsaved memory follows, or None."""
    if base is not None and loaded.version == base:  # nobody wrote since: the memory is the newest state
        merged = adopt(memory, loaded.handed)
    else:  # another leader wrote after it: the memory counts as a hand-over, where it went further
        merged = adopt(loaded.state, [*(memory.values() if base is not None else ()), *loaded.handed])
    # a transition the stored state has been through was queued by whoever went through it
    return merged, [d for d in [*kept, *loaded.deliveries] if newer(d, loaded.state.get(d.lane[1]))]


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

    def load_with_handovers(self) -> Loaded:
        """The stored state and its version, and what was handed over since (one atomic read).

        The hand-overs are removed by the commit that applies them, so none is lost to a failed commit.
        """
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hvals(STATE_KEY)
            pipe.get(VERSION_KEY)
            pipe.lrange(HANDOVER_KEY, 0, -1)
            pipe.lrange(HANDOVER_DELIVERIES_KEY, 0, -1)
            stored_raw, version, handed_raw, deliveries_raw = pipe.execute()
        return Loaded(
            {a.fingerprint: a for a in parsed(stored_raw)},
            int(version or 0),
            parsed(handed_raw),
            _deliveries(deliveries_raw),
            (len(handed_raw), len(deliveries_raw)),
        )

    def commit(
        self,
        token: str,
        state: dict[str, Alert],
        notes: Sequence[Notification],
        deliveries: Sequence[Delivery],
        taken: tuple[int, int],
        count_fields: Sequence[str],
        now: float,
        version: int,
    ) -> int:
        """Write state, history and outbox while `token` leads and Redis is at `version`: the new one, LOST or STALE."""
        receivers = list(dict.fromkeys(d.receiver for d in deliveries))
        ready = {receiver: len(COMMIT_KEYS) + 1 + n for n, receiver in enumerate(receivers)}
        args: list[object] = [token, version, HISTORY_MAXLEN, *taken, len(state)]
        for fingerprint, alert in state.items():
            args += [fingerprint, alert.to_json()]
        args.append(len(notes))
        for note in notes:
            args += [repr(now), note.status, note.alert.to_json()]
        args.append(len(deliveries))
        for delivery in deliveries:
            args += [delivery.id, delivery.meta(), delivery.to_json(), ready[delivery.receiver]]
        args += [len(count_fields), *count_fields]
        return int(self._commit(keys=COMMIT_KEYS + [ready_key(r) for r in receivers], args=args))

    def hand_over(self, alerts: Sequence[Alert], deliveries: Sequence[Delivery]) -> None:
        """For whoever leads now: what this process evaluated from memory, and what it could not send."""
        with self.redis.pipeline() as pipe:
            if alerts:
                pipe.rpush(HANDOVER_KEY, *(a.to_json() for a in alerts))
            if deliveries:
                pipe.rpush(HANDOVER_DELIVERIES_KEY, *(d.to_json() for d in deliveries))
            pipe.execute()
