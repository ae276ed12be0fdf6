"""Queue and worker controls: pause one queue (rqscope's set, honoured by `rqscope worker`) and
suspend every worker (RQ's own suspension, as `rq suspend` writes it). Each change and its audit
entry go in one MULTI/EXEC."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis
from rq.suspension import resume, suspend
from rqscope.monitor import audit
from rqscope.monitor.names import as_name, exact, label
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.tasks.rq_internals.queue import PAUSED_KEY

MAX_SUSPEND_SECONDS = 30 * 86400


def paused_names(members: Iterable[Any]) -> frozenset[str]:
    """Queue names from the paused set's members (queue keys); members of another shape are ignored."""
    prefix = KEYS.queue_prefix
    keys = (as_name(member) for member in members)
    return frozenset(key[len(prefix) :] for key in keys if key.startswith(prefix))


def set_paused(redis: Redis, queue: str, paused: bool, who: str) -> bool:
    """Pause or resume one queue and audit it; True when that changed anything."""
    with redis.pipeline() as pipe:
        key = exact(KEYS.queue(queue))
        if paused:
            pipe.sadd(PAUSED_KEY, key)
        else:
            pipe.srem(PAUSED_KEY, key)
        audit.record(pipe, who, "pause queue" if paused else "resume queue", label(queue), 1)
        changed = pipe.execute()[0]
    return bool(changed)


def is_paused(redis: Redis, queue: str) -> bool:
    return bool(redis.sismember(PAUSED_KEY, exact(KEYS.queue(queue))))


def set_suspended(redis: Redis, suspended: bool, who: str, ttl: int | None = None) -> None:
    """Suspend (for `ttl` seconds, or until resumed) or resume every RQ worker, and audit it."""
    with redis.pipeline() as pipe:
        if suspended:
            suspend(pipe, ttl)  # type: ignore[arg-type]  # RQ only calls SET and EXPIRE on it
        else:
            resume(pipe)  # type: ignore[arg-type]
        target = "all workers" + (f" for {ttl} s" if suspended and ttl else "")
        audit.record(pipe, who, "suspend workers" if suspended else "resume workers", target, 1)
        pipe.execute()
