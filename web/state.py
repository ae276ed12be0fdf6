"""Per-app state, kept in app.extensions['rqscope']: what is shared, and one Instance per watched Redis."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app, g, has_app_context
from prometheus_client import CollectorRegistry
from redis import ConnectionError, Redis, RedisError, TimeoutError
from rqscope.monitor.alerts.engine import AlertEngine
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.cron_fetch import CronCache
from rqscope.monitor.fanout import Fanout
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import TaskRegistry
from rqscope.web.children import Children

EXTENSION = "rqscope"
T = TypeVar("T")
SELECTED = "rqscope_instance"  # the flask.g attribute naming the instance this request is scoped to
RELAYED = "rqscope_relayed"  # ... naming an instance a child sidecar serves (web.children)


@dataclass
class Instance:
    """One watched Redis: its client, its cached reads, its metrics and its alert engine."""

    name: str
    redis: Redis
    snapshots: SnapshotCache
    cron: CronCache
    metrics: CollectorRegistry
    alerts: AlertEngine | None = None


@dataclass
class State:
    """Everything one app needs. `redis`, `snapshots`, `cron` and `alerts` are the request's instance's."""

    settings: Settings
    registry: TaskRegistry
    instances: dict[str, Instance]  # in the configured order; the first is the default
    # where sessions and sign-in counts may live, in order: this process's instances, and those under its RQ
    # prefix that a child serves (process_per_instance), so that sign-in outlives the first instance's outage
    homes: dict[str, Redis]
    fanout: Fanout  # reads every instance at once, each bounded by its own timeout
    children: Children | None = None  # the sidecars serving the instances this process does not

    @property
    def default_name(self) -> str:
        """The instance a request without ?redis= shows: the first of the front's, in a child sidecar."""
        return self.settings.front_instances[0] if self.settings.front_instances else self.first.name

    @property
    def names(self) -> list[str]:
        """Every instance's name in the configured order, those served by another prefix's sidecar too."""
        return list(self.settings.front_instances) or [i.name for i in self.settings.instances] or list(self.instances)

    @property
    def first(self) -> Instance:
        return next(iter(self.instances.values()))

    def reachable(self, action: Callable[[Redis], T]) -> tuple[str, T]:
        """(name, `action`'s result) on the first home that does not drop the connection, in order.

        Only a lost or refused connection moves on: an instance that answers with an error (out of memory,
        read-only) raises it, so what one request checks and what it then writes land on one instance.
        """
        lost: RedisError | None = None
        for name, redis in self.homes.items():
            try:
                return name, action(redis)
            except (ConnectionError, TimeoutError) as exc:
                lost = exc
        assert lost is not None  # there is always a first home
        raise lost

    def home_named(self, name: object) -> Redis | None:
        """The named home's client, or None for a name that is not (or no longer) one of the homes."""
        return self.homes.get(name) if isinstance(name, str) else None

    @property
    def current(self) -> Instance:
        name = g.get(SELECTED) if has_app_context() else None
        return self.instances[name] if name is not None else self.first

    @property
    def redis(self) -> Redis:
        return self.current.redis

    @property
    def snapshots(self) -> SnapshotCache:
        return self.current.snapshots

    @property
    def cron(self) -> CronCache:
        return self.current.cron

    @property
    def alerts(self) -> AlertEngine | None:
        return self.current.alerts


def state() -> State:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
