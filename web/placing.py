"""Enqueueing a registered task for the API and the dashboard's form alike: the same checks, the same
audited transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.client import Pipeline
from rqscope.monitor import audit
from rqscope.tasks.enqueue import Placed, Placement, enqueue_all, place
from rqscope.tasks.when import run_at
from rqscope.web.state import state


def placement(
    name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    queue: str | None = None,
    job_id: str | None = None,
    delay: Any = None,
    at: Any = None,
) -> Placement:
    """One run of a registered task, checked against the registry and the clock; TaskError names the problem."""
    current = state()
    when = run_at(delay, at, now=datetime.now(UTC), max_delay=current.settings.max_delay)
    return place(current.registry.get(name), args, kwargs, queue=queue, job_id=job_id, at=when)


def enqueue_one(item: Placement, who: str) -> Placed:
    """Enqueue one run, with its audit entry in the same transaction when it creates a job."""

    def audited(pipe: Pipeline, placed: list[Placed]) -> None:
        if placed[0].created:
            audit.record(pipe, who, "enqueue", f"{item.spec.name} {placed[0].job_id}", 1)

    return enqueue_all([item], connection=state().redis, also=audited)[0]
