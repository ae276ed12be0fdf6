"""The outbox: notifications waiting for their receiver, claimed before they are sent.

A claim lasts `claim_seconds`; a process that dies holding one leaves the entry to be sent again
once the claim ends (at least once to the receiver), and no two live processes send it together.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from rqscope.monitor.alerts import scripts
from rqscope.monitor.alerts.keys import (
    CLAIMS_KEY,
    COUNTS_KEY,
    DEAD_KEY,
    DUE_KEY,
    ENTRIES_KEY,
    FINISHED_KEY,
    LEASE_KEY,
    META_KEY,
    OUTBOX_KEY,
    RESULTS,
)
from rqscope.monitor.alerts.state import Alert, Notification

log = logging.getLogger(__name__)
DEAD_LETTER_MAX = 500
KEEP_FINISHED_SECONDS = 24 * 3600  # how long a replayed write of a finished entry is still recognised
SCAN = 1000  # entries the claim script looks at per call, oldest first


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
            return cls(str(data["receiver"]), str(entry.get("status", "")), alert, str(data["reason"]),
                       float(data["at"]), int(entry.get("attempts", 0)))  # fmt: skip
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def as_dict(self) -> dict[str, Any]:
        """For the JSON API: labels as an object."""
        alert = {**self.alert, "labels": {str(k): str(v) for k, v in self.alert.get("labels", ())}}
        return {**asdict(self), "alert": alert}


def dead_letter_json(delivery: Delivery, reason: str, now: float) -> str:
    return json.dumps({"receiver": delivery.receiver, "reason": reason, "at": now, "entry": delivery.to_json()})


@dataclass
class Outbox:
    redis: Redis
    claim_seconds: float = 60.0
    give_up_seconds: float = 24 * 3600.0
    _scripts: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("CLAIM", "FINISH", "RELEASE"):
            self._scripts[name] = self.redis.register_script(getattr(scripts, name))

    def claim(self, token: str, receivers: Sequence[str], now: float, limit: int = 50) -> list[Delivery]:
        """Take up to `limit` due entries for these receivers, oldest first; nothing unless `token` leads."""
        keys = [LEASE_KEY, OUTBOX_KEY, ENTRIES_KEY, META_KEY, DUE_KEY, CLAIMS_KEY, FINISHED_KEY, DEAD_KEY, COUNTS_KEY]
        args = [token, int(now * 1000), int(self.claim_seconds * 1000), limit, SCAN,
                int(self.give_up_seconds * 1000), DEAD_LETTER_MAX, *receivers]  # fmt: skip
        claimed = []
        for raw in self._scripts["CLAIM"](keys=keys, args=args):
            try:
                claimed.append(Delivery.from_json(raw))
            except (ValueError, TypeError) as exc:  # written by a newer or older rqscope: leave it to its claim's end
                log.warning("unreadable outbox entry skipped: %s", exc)
        return claimed

    def finish(self, token: str, delivery: Delivery, result: str, now: float, next_due: float = 0.0,
               reason: str = "") -> bool:  # fmt: skip
        """Record one attempt's result; False when this process no longer held the entry's claim."""
        keys = [OUTBOX_KEY, ENTRIES_KEY, META_KEY, DUE_KEY, CLAIMS_KEY, FINISHED_KEY, DEAD_KEY, COUNTS_KEY]
        args = [token, delivery.id, result, int(now * 1000), f"{delivery.receiver}\n{result}",
                int(KEEP_FINISHED_SECONDS * 1000), DEAD_LETTER_MAX, int(next_due * 1000), delivery.to_json(),
                dead_letter_json(delivery, reason, now) if result == "dropped" else ""]  # fmt: skip
        return bool(self._scripts["FINISH"](keys=keys, args=args))

    def release(self, token: str, deliveries: Sequence[Delivery], now: float) -> None:
        if deliveries:
            self._scripts["RELEASE"](keys=[DUE_KEY, CLAIMS_KEY], args=[token, int(now * 1000),
                                                                       *(d.id for d in deliveries)])  # fmt: skip

    def size(self) -> int:
        return int(self.redis.zcard(OUTBOX_KEY))  # type: ignore[arg-type]

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest undeliverable notifications, newest first."""
        found = (DeadLetter.from_json(raw) for raw in self.redis.lrange(DEAD_KEY, 0, limit - 1))  # type: ignore[union-attr]
        return [letter for letter in found if letter is not None]


def notification_counts(redis: Redis) -> dict[tuple[str, str], float]:
    """Delivery outcomes per (receiver, result), as every process recorded them in Redis."""
    counts: dict[tuple[str, str], float] = {}
    for raw_field, value in redis.hgetall(COUNTS_KEY).items():  # type: ignore[union-attr]
        receiver, _, result = raw_field.decode("utf-8", "replace").rpartition("\n")
        if result in RESULTS:
            counts[(receiver, result)] = float(value)
    return counts
