"""Where alerts go: a generic webhook (Alertmanager's webhook v4 shape), Slack, PagerDuty Events v2, email."""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from rqscope.monitor.alerts.state import FIRING, Notification

TIMEOUT_SECONDS = 5.0


class DeliveryError(Exception):
    """A receiver did not take the notification; it will be tried again."""


def _iso(ts: float | None) -> str:
    if ts is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def dashboard_link(base_url: str, note: Notification) -> str:
    """The dashboard page an on-call engineer should open for this alert."""
    base = base_url.rstrip("/")
    queue = dict(note.alert.labels).get("queue")
    if queue is None:
        return f"{base}/workers" if "worker" in note.alert.kind else f"{base}/"
    state = "failed" if note.alert.kind in ("failed_jobs", "failure_ratio") else "queued"
    return f"{base}/queues/{quote(queue, safe='')}/{state}"


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
        "alerts": [{
            "status": note.status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": _iso(alert.started_at or alert.since),
            "endsAt": _iso(alert.ended_at if note.status != FIRING else None),
            "generatorURL": dashboard_link(base_url, note),
            "fingerprint": alert.fingerprint,
        }],
    }  # fmt: skip


def _post_json(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            if not 200 <= response.status < 300:
                raise DeliveryError(f"{url} answered {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{url}: {exc}") from None


@dataclass(frozen=True)
class Webhook:
    url: str
    severities: tuple[str, ...] = ()  # empty: every severity
    kind: str = "webhook"

    def send(self, note: Notification, base_url: str) -> None:
        _post_json(self.url, alertmanager_payload(note, base_url))


@dataclass(frozen=True)
class Slack:
    url: str
    severities: tuple[str, ...] = ()  # empty: every severity
    kind: str = "slack"

    def send(self, note: Notification, base_url: str) -> None:
        icon = ":red_circle:" if note.status == FIRING else ":large_green_circle:"
        alert = note.alert
        text = f"{icon} [{note.status.upper()}] {alert.rule} ({alert.severity}): {alert.summary}"
        _post_json(self.url, {"text": f"{text}\n<{dashboard_link(base_url, note)}|Open in rqscope>"})


@dataclass(frozen=True)
class PagerDuty:
    routing_key: str
    url: str = "https://events.pagerduty.com/v2/enqueue"
    severities: tuple[str, ...] = ()
    kind: str = "pagerduty"

    def send(self, note: Notification, base_url: str) -> None:
        alert = note.alert
        body: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": "trigger" if note.status == FIRING else "resolve",
            "dedup_key": alert.fingerprint,
        }
        if note.status == FIRING:
            body["payload"] = {
                "summary": alert.summary[:1000], "source": "rqscope", "severity": alert.severity,
                "custom_details": dict(alert.labels),
            }  # fmt: skip
            body["links"] = [{"href": dashboard_link(base_url, note), "text": "rqscope"}]
        _post_json(self.url, body)


@dataclass(frozen=True)
class Email:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    severities: tuple[str, ...] = ()
    kind: str = "email"

    def send(self, note: Notification, base_url: str) -> None:
        alert = note.alert
        message = EmailMessage()
        message["Subject"] = f"[{note.status.upper()}] {alert.rule}: {alert.summary}"[:200]
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(f"{alert.summary}\n\nSeverity: {alert.severity}\nLabels: {dict(alert.labels)}\n"
                            f"Dashboard: {dashboard_link(base_url, note)}\n")  # fmt: skip
        try:
            with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"smtp {self.host}:{self.port}: {exc}") from None
