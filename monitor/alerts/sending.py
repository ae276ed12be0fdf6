"""One attempt to send one notification, and what came of it. Never raises: a failure stays with its entry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from rqscope.monitor.alerts.escape import shortened, valid_text
from rqscope.monitor.alerts.notifiers import DeliveryError, PermanentDeliveryError
from rqscope.monitor.alerts.outbox import Delivery
from rqscope.monitor.alerts.state import Notification
from rqscope.tasks.backoff import backoff

log = logging.getLogger(__name__)
RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 60.0
REASON_LENGTH = 500
SENT, RETRIED, DROPPED = "sent", "retried", "dropped"


class Notifier(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def severities(self) -> tuple[str, ...]: ...

    def build(self, note: Notification, base_url: str) -> Any: ...

    def transmit(self, payload: Any) -> None: ...


@dataclass(frozen=True)
class Outcome:
    result: str  # sent, retried or dropped
    reason: str = ""
    next_due: float = 0.0  # for retried: when to try again


def _reason(text: str) -> str:
    return shortened(valid_text(text), REASON_LENGTH)


def attempt(notifier: Notifier, delivery: Delivery, base_url: str, now: float, give_up_seconds: float) -> Outcome:
    """Build and send; a permanent failure is dropped, any other retried with backoff until it is too old."""
    note = delivery.notification()
    if note is None:
        return Outcome(DROPPED, "the stored alert cannot be read")
    try:
        payload = notifier.build(note, base_url)
    except Exception as exc:  # noqa: BLE001 - whatever the cause, this payload will never be built
        log.warning("%s: notification for %s cannot be built: %r", notifier.name, note.alert.rule, exc)
        return Outcome(DROPPED, _reason(f"cannot be built: {type(exc).__name__}: {exc}"))
    try:
        notifier.transmit(payload)
    except PermanentDeliveryError as exc:
        log.warning("%s refused the notification for %s: %s", notifier.name, note.alert.rule, exc)
        return Outcome(DROPPED, _reason(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a receiver's or a notifier's fault, tried again
        reason = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
        delivery.attempts += 1
        delivery.error = _reason(reason)
        if now - delivery.queued_at > give_up_seconds:
            return Outcome(DROPPED, _reason(f"gave up after {delivery.attempts} attempts: {reason}"))
        wait = backoff(delivery.attempts - 1, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)
        log.warning(
            "%s delivery failed (attempt %d, next in %.0f s): %s", notifier.name, delivery.attempts, wait, reason
        )
        return Outcome(RETRIED, delivery.error, now + wait)
    return Outcome(SENT)
