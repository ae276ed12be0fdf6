"""Per-app state, kept in app.extensions['rqscope']."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from prometheus_client import CollectorRegistry
from redis import Redis

from monitor.alert_engine import AlertEngine
from monitor.cache import SnapshotCache
from monitor.settings import Settings
from tasks.registry import TaskRegistry

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
