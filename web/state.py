"""Per-app state, kept in app.extensions['rqscope']."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from prometheus_client import CollectorRegistry
from redis import Redis
from rqscope.monitor.alerts.engine import AlertEngine
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import TaskRegistry

EXTENSION = "rqscope"


@dataclass
class State:
    """Everything one app instance needs."""

    settings: Settings
    redis: Redis
    registry: TaskRegistry
    snapshots: SnapshotCache
    metrics: CollectorRegistry
    alerts: AlertEngine | None = None


def state() -> State:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
