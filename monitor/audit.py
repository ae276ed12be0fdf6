"""The audit log: every operator action, in a bounded Redis stream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline
from rqscope.tasks.rq_internals.keys import OWN

AUDIT_KEY = OWN + "audit"
AUDIT_MAXLEN = 10_000


@dataclass(frozen=True)
class AuditEntry:
    at: float
    who: str
    action: str
    target: str
    count: int


def record(redis: Redis | Pipeline, who: str, action: str, target: str, count: int) -> None:
    """Append one entry; given a pipeline, it is written with the pipeline's other commands."""
    fields = {"at": repr(time.time()), "who": who, "action": action, "target": target, "count": str(count)}
    redis.xadd(AUDIT_KEY, fields, maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]


def recent(redis: Redis, limit: int = 100) -> list[AuditEntry]:
    entries = []
    for _, fields in cast(list[Any], redis.xrevrange(AUDIT_KEY, count=limit)):
        data = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
        try:
            entries.append(AuditEntry(float(data["at"]), data["who"], data["action"], data["target"],
                                      int(data["count"])))  # fmt: skip
        except (KeyError, ValueError):
            continue
    return entries
