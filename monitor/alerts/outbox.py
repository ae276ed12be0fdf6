"""The outbox: notifications waiting for their receiver, claimed before they are sent.

A claim lasts `claim_seconds`; a process that dies holding one leaves the entry to be sent again
once the claim ends (at least once to the receiver), and no two live processes send it together.
An entry's id names its transition and receiver, so a transition that two processes evaluated, or
that one process queues again after a lost reply, is queued once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from rqscope.monitor.alerts import outbox_scripts
from rqscope.monitor.alerts.keys import COUNTS_KEY, DEAD_KEY, OUTBOX_KEY, READY_PREFIX, RESULTS, count_field, ready_key
from rqscope.monitor.alerts.outbox_scripts import FIRST_READY, OUTBOX_KEYS
from rqscope.monitor.alerts.state import Alert, Notification

log = logging.getLogger(__name__)
DEAD_LETTER_MAX = 500
KEEP_FINISHED_SECONDS = 24 * 3600  # how long a replayed write of a finished entry is still recognised
SWEEP = 100  # the oldest entries a claim looks at for receivers no process here sends to


@dataclass
class Delivery:
    """One notification for one receiver (by name), from queueing until it is sent or dropped."""

    id: str
    receiver: str
    status: str
    alert: dict[str, Any]
    queued_at: float
    attempts: int = 0
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Delivery:
        return cls(**json.loads(raw))

    @property
    def lane(self) -> tuple[str, str]:
        """Notifications in one lane go out in the order they were queued."""
        return self.receiver, str(self.alert.get("fingerprint", ""))

    @classmethod
    def of(cls, receiver: str, note: Notification, queued_at: float) -> Delivery:
        """The delivery of one transition to one receiver, named the same by every process."""
        alert = note.alert
        key = json.dumps([receiver, alert.fingerprint, alert.epoch, alert.seq, note.status])
        return cls(
            hashlib.sha256(key.encode()).hexdigest()[:32], receiver, note.status, json.loads(alert.to_json()), queued_at
        )

    @property
    def transition(self) -> tuple[int, int]:
        """The (epoch, seq) of the alert this notification is for; see Alert.transition."""
        try:
            return int(self.alert.get("epoch", 0)), int(self.alert.get("seq", 0))
        except (TypeError, ValueError):
            return 0, 0

    def meta(self) -> str:
        return f"{int(self.queued_at * 1000)}|{self.lane[1]}|{self.receiver}"

    def notification(self) -> Notification | None:
        alert = Alert.from_json(json.dumps(self.alert))
        return None if alert is None else Notification(self.status, alert)


@dataclass(frozen=True)
class DeadLetter:
    """A notification that was never delivered, and why."""

    receiver: str
    status: str
    alert: dict[str, Any]
    reason: str
    at: float
    attempts: int = 0

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeadLetter | None:
        try:
            data = json.loads(raw)
            entry = json.loads(data["entry"])
            alert = entry.get("alert") or {}
            return cls(
                str(data["receiver"]),
                str(entry.get("status", "")),
                alert,
                str(data["reason"]),
                float(data["at"]),
                int(entry.get("attempts", 0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def as_dict(self) -> dict[str, Any]:
        """For the JSON API: labels as an object."""
        alert = {**self.alert, "labels": {str(k): str(v) for k, v in self.alert.get("labels", ())}}
        return {**asdict(self), "alert": alert}


def dead_letter_json(delivery: Delivery, reason: str, now: float) -> str:
    return json.dumps({"receiver": delivery.receiver, "reason": reason, "at": now, "entry": delivery.to_json()})


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@dataclass
class Outbox:
    redis: Redis
    claim_seconds: float = 60.0
    give_up_seconds: float = 24 * 3600.0
    _scripts: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("CLAIM", "SWEEP", "FINISH", "RELEASE", "FLUSH"):
            self._scripts[name] = self.redis.register_script(getattr(outbox_scripts, name))

    def claim(self, token: str, limits: dict[str, int], now: float, sweep: bool = True) -> list[Delivery]:
        """Take up to `limits[receiver]` due entries per receiver, oldest first; nothing unless `token` leads."""
        # with `sweep`, what waited past the give-up time for a receiver no process here sends to is
        # dead-lettered too: one more script, only when the claim found some
        keys = OUTBOX_KEYS + [ready_key(receiver) for receiver in limits]
        args: list[object] = [token, _ms(now), _ms(self.claim_seconds), _ms(self.give_up_seconds)]
        args.append(SWEEP if sweep else 0)
        for receiver, limit in limits.items():
            args += [receiver, limit]
        raw_claimed, unknown = self._scripts["CLAIM"](keys=keys, args=args)
        if unknown:
            self._sweep(token, unknown, now)
        claimed = []
        for raw in raw_claimed:
            try:
                claimed.append(Delivery.from_json(raw))
            except (ValueError, TypeError) as exc:  # written by a newer or older rqscope: leave it to its claim's end
                log.warning("unreadable outbox entry skipped: %s", exc)
        return claimed

    def _sweep(self, token: str, receivers: Sequence[bytes], now: float) -> None:
        keys = OUTBOX_KEYS + [READY_PREFIX.encode() + receiver for receiver in receivers]
        args = [
            token,
            _ms(now),
            _ms(self.give_up_seconds),
            SWEEP,
            DEAD_LETTER_MAX,
            _ms(KEEP_FINISHED_SECONDS),
            *receivers,
        ]
        dropped = self._scripts["SWEEP"](keys=keys, args=args)
        if dropped:
            log.warning("%d alert notifications dead-lettered: no process sends to their receiver", dropped)

    def finish(
        self, token: str, delivery: Delivery, result: str, now: float, next_due: float = 0.0, reason: str = ""
    ) -> bool:
        """Record one attempt's result; False when this process no longer held the entry's claim."""
        keys = OUTBOX_KEYS + [ready_key(delivery.receiver)]
        args = [
            token,
            delivery.id,
            result,
            _ms(now),
            count_field(delivery.receiver, result),
            _ms(KEEP_FINISHED_SECONDS),
            DEAD_LETTER_MAX,
            _ms(next_due),
            delivery.to_json(),
            dead_letter_json(delivery, reason, now) if result == "dropped" else "",
        ]
        return bool(self._scripts["FINISH"](keys=keys, args=args))

    def release(self, token: str, deliveries: Sequence[Delivery], now: float) -> None:
        """Claims this process will not use: due again at once, for whoever sends next."""
        if not deliveries:
            return
        receivers = list(dict.fromkeys(d.receiver for d in deliveries))
        index = {receiver: FIRST_READY + n for n, receiver in enumerate(receivers)}
        args: list[object] = [token, _ms(now)]
        for delivery in deliveries:
            args += [delivery.id, index[delivery.receiver]]
        self._scripts["RELEASE"](keys=OUTBOX_KEYS + [ready_key(r) for r in receivers], args=args)

    def record_local(self, batch: str, counts: Counter[tuple[str, str]], dead: Sequence[str], now: float) -> None:
        """Results of sends made without the outbox, applied once per batch id."""
        args: list[object] = [batch, _ms(now), _ms(KEEP_FINISHED_SECONDS), DEAD_LETTER_MAX, len(counts)]
        for (receiver, result), count in counts.items():
            args += [count_field(receiver, result), count]
        self._scripts["FLUSH"](keys=OUTBOX_KEYS, args=[*args, *dead])

    def size(self) -> int:
        return int(self.redis.zcard(OUTBOX_KEY))  # type: ignore[arg-type]

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest undeliverable notifications, newest first."""
        found = (DeadLetter.from_json(raw) for raw in self.redis.lrange(DEAD_KEY, 0, limit - 1))  # type: ignore[union-attr]
        return [letter for letter in found if letter is not None]


def notification_counts(redis: Redis) -> dict[tuple[str, str], float]:
    """Delivery outcomes per (receiver, result), as every process recorded them in Redis."""
    return counts_from(redis.hgetall(COUNTS_KEY))  # type: ignore[arg-type]


def counts_from(raw: Mapping[bytes, bytes]) -> dict[tuple[str, str], float]:
    """The outcomes of a read of COUNTS_KEY; a field that is not "<receiver>\\n<result>", or whose value is not a
    count (finite, not negative: HINCRBY writes no other), is skipped."""
    counts: dict[tuple[str, str], float] = {}
    for raw_field, value in raw.items():
        receiver, _, result = raw_field.decode("utf-8", "replace").rpartition("\n")
        if result in RESULTS:
            with contextlib.suppress(ValueError):
                count = float(value)
                if math.isfinite(count) and count >= 0:  # "nan", "inf" and "-2" parse, but are no count
                    counts[(receiver, result)] = count
    return counts
