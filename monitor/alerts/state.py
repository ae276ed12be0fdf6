"""Alert lifecycle: inactive -> pending (`for:` running) -> firing -> resolved. Pure; stored by the engine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from rqscope.monitor.alerts.evaluate import Observation

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
KEEP_RESOLVED_SECONDS = 24 * 3600


def fingerprint(rule_name: str, labels: tuple[tuple[str, str], ...]) -> str:
    text = json.dumps([rule_name, sorted(labels)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One (rule, label set) and where it is in its lifecycle."""

    fingerprint: str
    rule: str
    kind: str
    severity: str
    labels: tuple[tuple[str, str], ...]
    summary: str
    value: float
    state: str
    since: float  # when the condition started to hold
    started_at: float | None = None  # when it began firing
    ended_at: float | None = None
    last_notified: float | None = None
    # which transition this is, the same in every process that evaluated it from the same stored state:
    # the state version this alert's record began at, and how many notifications it has had since
    epoch: int = 0
    seq: int = 0

    @property
    def transition(self) -> tuple[int, int]:
        """Orders two versions of this alert: the greater one has been through more transitions."""
        return self.epoch, self.seq

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Alert | None:
        try:
            data = json.loads(text)
            data["labels"] = tuple(tuple(pair) for pair in data["labels"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class Notification:
    status: str  # firing or resolved
    alert: Alert


def _summary(observation: Observation) -> str:
    template = observation.rule.summary or observation.rule.name
    try:
        labels = {"queue": "", "role": "", "key": "", **dict(observation.labels)}
        return template.format(**labels, value=observation.value)
    except (KeyError, ValueError, IndexError, AttributeError):
        return template


def advance(
    previous: dict[str, Alert],
    observations: list[Observation],
    evaluated_rules: set[str],
    now: float,
    repeat_seconds: float,
    epoch: int = 0,
) -> tuple[dict[str, Alert], list[Notification]]:
    """The next states and what to send. Rules not evaluated this round (Redis down) keep their state.

    `epoch` is the version of the stored state `previous` was read at or derived from; a new alert's
    record begins there, so that another process evaluating from the same state names its
    transitions the same, and a later record of the same alert never reuses an earlier one's names.
    """
    current: dict[str, Alert] = {}
    notes: list[Notification] = []
    seen: set[str] = set()
    for obs in observations:
        fp = fingerprint(obs.rule.name, obs.labels)
        seen.add(fp)
        old = previous.get(fp)
        base = dict(
            fingerprint=fp,
            rule=obs.rule.name,
            kind=obs.rule.kind,
            severity=obs.rule.severity,
            labels=obs.labels + obs.rule.labels,
            summary=_summary(obs),
            value=obs.value,
        )
        if not obs.active:
            if old is not None and old.state == FIRING:
                resolved = replace(
                    old,
                    **base,
                    state=RESOLVED,
                    ended_at=now,
                    last_notified=now,  # type: ignore[arg-type]
                    seq=old.seq + 1,
                )
                current[fp] = resolved
                notes.append(Notification(RESOLVED, resolved))
            elif old is not None and old.state == RESOLVED and now - (old.ended_at or now) < KEEP_RESOLVED_SECONDS:
                current[fp] = old
            continue
        if old is None:
            old = Alert(**base, state=PENDING, since=now, epoch=epoch)  # type: ignore[arg-type]
        elif old.state == RESOLVED:  # a new incident of a known alert: its transitions go on counting
            old = Alert(**base, state=PENDING, since=now, epoch=old.epoch, seq=old.seq)  # type: ignore[arg-type]
        alert = replace(old, **base)  # type: ignore[arg-type]
        if alert.state == PENDING and now - alert.since >= obs.rule.for_seconds:
            alert = replace(alert, state=FIRING, started_at=now, last_notified=now, seq=alert.seq + 1)
            notes.append(Notification(FIRING, alert))
        elif alert.state == FIRING and now - (alert.last_notified or 0) >= repeat_seconds:
            alert = replace(alert, last_notified=now, seq=alert.seq + 1)
            notes.append(Notification(FIRING, alert))
        current[fp] = alert
    for fp, old in previous.items():
        if fp in seen:
            continue
        if old.rule not in evaluated_rules:
            current[fp] = old  # not evaluated this round: nothing is known, nothing changes
        elif old.state == FIRING:  # its subject is gone (a deleted queue): resolve
            resolved = replace(old, state=RESOLVED, ended_at=now, last_notified=now, seq=old.seq + 1)
            current[fp] = resolved
            notes.append(Notification(RESOLVED, resolved))
        elif old.state == RESOLVED and now - (old.ended_at or now) < KEEP_RESOLVED_SECONDS:
            current[fp] = old
    return current, notes
