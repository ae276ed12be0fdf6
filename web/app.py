"""The Flask application factory."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from markupsafe import Markup
from redis import Redis
from rqscope.monitor.alerts import runner as alerting
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.collectors import build_registry
from rqscope.monitor.cron_fetch import CronCache, CronReader
from rqscope.monitor.names import label
from rqscope.monitor.redis_client import make_client
from rqscope.monitor.settings import Settings, from_env
from rqscope.monitor.snapshot import JOB_STATES
from rqscope.tasks.procstats import Publisher
from rqscope.tasks.registry import REGISTRY, TaskRegistry, import_task_modules
from rqscope.web import (
    access,
    api,
    api_series,
    api_tasks,
    charts,
    controls,
    cron_views,
    dashboard,
    errors,
    health,
    hosts,
    jobs_views,
    openapi,
    pages,
    redis_views,
    session_key,
    session_views,
    sessions,
)
from rqscope.web.state import EXTENSION, State

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    registry: TaskRegistry = REGISTRY,
    testing: bool = False,
) -> Flask:
    """Build the sidecar app; with no settings, read RQSCOPE_* from the environment.

    The factory only builds: it starts no thread and writes nothing to Redis. `start(app)` starts the
    process-stat publisher and the alert scheduler (`rqscope serve` calls it in each gunicorn worker).
    """
    if settings is None:
        settings = from_env(os.environ)
    import_task_modules(settings.task_modules)
    app = Flask(__name__)
    app.config.update(
        TESTING=testing,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    client = redis if redis is not None else make_client(settings, client_name="rqscope-web")
    cache = SnapshotCache(client, ttl=settings.snapshot_ttl)
    cron = app.extensions[cron_views.EXTENSION] = CronCache(CronReader(client), ttl=max(1.0, settings.snapshot_ttl))
    app.extensions[EXTENSION] = State(
        settings=settings,
        redis=client,
        registry=registry,
        snapshots=cache,
        metrics=build_registry(cache, client, cron.get),
    )
    app.secret_key = settings.secret_key
    app.session_interface = sessions.interface(settings)  # Secure cookies over https; the Redis key if unset
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    hosts.trust_proxies(app, settings)
    access.install(app, settings)  # the first hook: the Host and the caller are checked before anything else
    app.extensions[EXTENSION].alerts = alerting.build_engine(settings, client, cache.get, cron.get)
    errors.register(app)
    pages.register(app)
    app.jinja_env.finalize = _shown  # names from Redis need not be UTF-8: show such bytes as \xff escapes
    app.jinja_env.filters["utc"] = lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    app.jinja_env.globals["job_states"] = list(JOB_STATES)
    for blueprint in (health.bp, api_tasks.bp, api.bp, openapi.bp, session_views.bp, dashboard.bp, jobs_views.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(cron_views.bp)
    app.register_blueprint(controls.bp)
    app.register_blueprint(redis_views.bp)
    app.register_blueprint(api_series.bp)
    app.register_blueprint(charts.bp)
    return app


def _shown(value: object) -> object:
    if isinstance(value, Markup):  # a macro's output: already escaped, and it must stay markup
        return value if value.isascii() else Markup(label(value))
    return label(value) if isinstance(value, str) and not value.isascii() else value


def start(app: Flask) -> Callable[[], None]:
    """Start this process's background work (process stats, alerts, the shared session key); returns its stop."""
    current = app.extensions[EXTENSION]
    if current.alerts is not None:
        # an engine built before gunicorn forked (preload_app) would lend every worker the same lease holder,
        # and each would lead: this process evaluates with a holder of its own
        cron = app.extensions[cron_views.EXTENSION]
        current.alerts = alerting.build_engine(current.settings, current.redis, current.snapshots.get, cron.get)
    publisher = Publisher(current.redis, "web", current.settings.publish_interval)
    publisher.start()
    scheduler = alerting.start(current.alerts) if current.alerts is not None else None
    stopped = threading.Event()
    if not current.settings.secret_key:
        session_key.keep_making(current.redis, stopped)

    def stop() -> None:
        stopped.set()
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        publisher.stop()

    return stop
