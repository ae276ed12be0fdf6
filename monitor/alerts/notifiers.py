"""Where alerts go: a generic webhook (Alertmanager's webhook v4 shape), Slack, PagerDuty Events v2, email.

Each notifier builds its payload first, then transmits it. A payload that cannot be built never will
be, and a receiver's 4xx (other than 408 and 429) says the same payload will never be taken: both
are permanent failures. Everything else is worth trying again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlsplit

from rqscope.monitor.alerts.escape import PAGERDUTY_SUMMARY_LENGTH, header_text, shortened, slack_text, valid_text
from rqscope.monitor.alerts.state import FIRING, Notification
from rqscope.monitor.names import encode_segment

TIMEOUT_SECONDS = 5.0
RETRYABLE_4XX = (408, 429)  # request timeout, too many requests: the receiver asks to be tried again


class DeliveryError(Exception):
    """A receiver did not take the notification; it will be tried again."""


class PermanentDeliveryError(DeliveryError):
    """The receiver will never take this notification: it goes to the dead-letter list."""


def digest(secret: str) -> str:
    """A short, stable name for a target whose text is secret (a Slack URL, a PagerDuty key)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def _iso(ts: float | None) -> str:
    if ts is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def dashboard_link(base_url: str, note: Notification) -> str:
    """The dashboard page an on-call engineer should open for this alert."""
    base = base_url.rstrip("/")
    labels = dict(note.alert.labels)
    scope = f"?redis={quote(labels['redis'], safe='')}" if "redis" in labels else ""  # the instance it is about
    queue = labels.get("queue")
    if queue is None:
        pages = {"cron_overdue": "cron", "workers_below": "workers", "dead_workers": "workers"}
        return f"{base}/{pages.get(note.alert.kind, '')}{scope}"
    state = "failed" if note.alert.kind in ("failed_jobs", "failure_ratio") else "queued"
    return f"{base}/queues/{encode_segment(queue)}/{state}{scope}"


def alertmanager_payload(note: Notification, base_url: str) -> dict[str, Any]:
    """The body Alertmanager's webhook receiver sends (version 4), for one alert."""
    alert = note.alert
    labels = {"alertname": alert.rule, "severity": alert.severity, **dict(alert.labels)}
    annotations = {"summary": alert.summary, "value": repr(alert.value)}
    return {
        "version": "4",
        "groupKey": f"rqscope:{alert.fingerprint}",
        "truncatedAlerts": 0,
        "status": note.status,
        "receiver": "rqscope",
        "groupLabels": {"alertname": alert.rule},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": base_url,
        "alerts": [
            {
                "status": note.status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _iso(alert.started_at or alert.since),
                "endsAt": _iso(alert.ended_at if note.status != FIRING else None),
                "generatorURL": dashboard_link(base_url, note),
                "fingerprint": alert.fingerprint,
            }
        ],
    }


def post_json(url: str, body: dict[str, Any]) -> None:
    """POST one JSON body; errors name the status or cause, never the URL (it may hold a secret)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            if not 200 <= response.status < 300:
                raise DeliveryError(f"answered HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in RETRYABLE_4XX:
            raise PermanentDeliveryError(f"answered HTTP {exc.code}") from None
        raise DeliveryError(f"answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None


@dataclass(frozen=True)
class Webhook:
    url: str
    severities: tuple[str, ...] = ()  # empty: every severity
    name: str = ""  # stable across restarts and reorderings; derived from the target when empty
    kind: str = "webhook"

    def __post_init__(self) -> None:
        if not self.name:
            host = urlsplit(self.url).netloc.rpartition("@")[2]  # never user:password
            object.__setattr__(self, "name", f"webhook:{host}")

    def build(self, note: Notification, base_url: str) -> Any:
        return alertmanager_payload(note, base_url)

    def transmit(self, payload: Any) -> None:
        post_json(self.url, payload)


@dataclass(frozen=True)
class Slack:
    url: str = field(repr=False)  # the path is the secret
    severities: tuple[str, ...] = ()
    name: str = ""
    kind: str = "slack"

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"slack:{digest(self.url)}")

    def build(self, note: Notification, base_url: str) -> Any:
        icon = ":red_circle:" if note.status == FIRING else ":large_green_circle:"
        alert = note.alert
        text = f"{icon} [{note.status.upper()}] {slack_text(alert.rule)} ({slack_text(alert.severity)}): "
        return {"text": f"{text}{slack_text(alert.summary)}\n<{dashboard_link(base_url, note)}|Open in rqscope>"}

    def transmit(self, payload: Any) -> None:
        post_json(self.url, payload)


@dataclass(frozen=True)
class PagerDuty:
    routing_key: str = field(repr=False)
    url: str = "https://events.pagerduty.com/v2/enqueue"
    severities: tuple[str, ...] = ()
    name: str = ""
    kind: str = "pagerduty"

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"pagerduty:{digest(self.routing_key)}")

    def build(self, note: Notification, base_url: str) -> Any:
        alert = note.alert
        body: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": "trigger" if note.status == FIRING else "resolve",
            "dedup_key": alert.fingerprint,
        }
        if note.status == FIRING:
            body["payload"] = {
                "summary": shortened(valid_text(alert.summary), PAGERDUTY_SUMMARY_LENGTH),
                "source": "rqscope",
                "severity": alert.severity,
                "custom_details": dict(alert.labels),
            }
            body["links"] = [{"href": dashboard_link(base_url, note), "text": "rqscope"}]
        return body

    def transmit(self, payload: Any) -> None:
        post_json(self.url, payload)


@dataclass(frozen=True)
class Email:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    severities: tuple[str, ...] = ()
    name: str = ""
    kind: str = "email"

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"email:{self.host}:{self.port}")

    def build(self, note: Notification, base_url: str) -> Any:
        alert = note.alert
        message = EmailMessage()
        message["Subject"] = header_text(f"[{note.status.upper()}] {alert.rule}: {alert.summary}")
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(
            valid_text(
                f"{alert.summary}\n\nSeverity: {alert.severity}\nLabels: {dict(alert.labels)}\n"
                f"Dashboard: {dashboard_link(base_url, note)}\n"
            )
        )
        message.as_bytes()  # a message that cannot be written fails here, as a payload never to be sent
        return message

    def transmit(self, payload: Any) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(payload)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"smtp {self.host}:{self.port}: {exc}") from None
