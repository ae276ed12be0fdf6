"""Silences: matchers over alert labels for a time window. A silenced alert is evaluated, not sent."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass

from redis import Redis
from rqscope.tasks.rq_internals.keys import OWN

SILENCES_KEY = OWN + "alerts:silences"


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: dict[str, str]  # label -> exact value; alertname and severity match too
    starts_at: float
    ends_at: float
    author: str
    comment: str

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(name) == value for name, value in self.matchers.items())


def create(
    redis: Redis, matchers: dict[str, str], starts_at: float, ends_at: float, author: str, comment: str
) -> Silence:
    silence = Silence(secrets.token_hex(8), dict(matchers), starts_at, ends_at, author, comment)
    redis.hset(SILENCES_KEY, silence.id, json.dumps(asdict(silence)))
    return silence


def all_silences(redis: Redis) -> list[Silence]:
    found = []
    for raw in redis.hvals(SILENCES_KEY):  # type: ignore[union-attr]
        try:
            found.append(Silence(**json.loads(raw)))
        except (ValueError, TypeError):
            continue
    return sorted(found, key=lambda s: s.ends_at, reverse=True)


def expire(redis: Redis, silence_id: str, now: float) -> bool:
    """End a silence now; False when there is no such silence."""
    raw = redis.hget(SILENCES_KEY, silence_id)
    if raw is None:
        return False
    silence = Silence(**json.loads(raw))  # type: ignore[arg-type]
    ended = Silence(**{**asdict(silence), "ends_at": min(silence.ends_at, now)})
    redis.hset(SILENCES_KEY, silence_id, json.dumps(asdict(ended)))
    return True


def silenced(silences: list[Silence], labels: dict[str, str], now: float) -> bool:
    return any(s.active(now) and s.matches(labels) for s in silences)
