"""The Flask application factory."""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime

from flask import Flask
from redis import Redis, RedisError
from rqscope.monitor.alerts import runner as alerting
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.collectors import build_registry
from rqscope.monitor.embedded import with_default_redis
from rqscope.monitor.redis_client import make_client
from rqscope.monitor.settings import Settings, from_env
from rqscope.monitor.snapshot import JOB_STATES
from rqscope.tasks.procstats import Publisher
from rqscope.tasks.registry import REGISTRY, TaskRegistry, import_task_modules
from rqscope.web import api, api_tasks, dashboard, errors, health, jobs_views, openapi, pages, session_views
from rqscope.web.state import EXTENSION, State

log = logging.getLogger(__name__)

SECRET_KEY = "rqscope:session-key"


def create_app(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    registry: TaskRegistry = REGISTRY,
    testing: bool = False,
) -> Flask:
    """Build the sidecar app; with no settings, read RQSCOPE_* from the environment."""
    if settings is None:
        settings = with_default_redis(from_env(os.environ))
    import_task_modules(settings.task_modules)
    app = Flask(__name__)
    app.config.update(
        TESTING=testing,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    client = redis if redis is not None else make_client(settings, client_name="rqscope-web")
    cache = SnapshotCache(client, ttl=settings.snapshot_ttl)
    app.extensions[EXTENSION] = State(
        settings=settings, redis=client, registry=registry, snapshots=cache, metrics=build_registry(cache)
    )
    app.secret_key = settings.secret_key or shared_secret(client)
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    app.extensions[EXTENSION].alerts = alerting.build_engine(settings, client, cache.get)
    if not testing:
        Publisher(client, "web", settings.publish_interval).start()
        alerting.start(app.extensions[EXTENSION].alerts)
    errors.register(app)
    pages.register(app)
    pages.register_login_redirect(app)
    app.jinja_env.filters["utc"] = lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    app.jinja_env.globals["job_states"] = list(JOB_STATES)
    for blueprint in (health.bp, api_tasks.bp, api.bp, openapi.bp, session_views.bp, dashboard.bp, jobs_views.bp):
        app.register_blueprint(blueprint)
    return app


def shared_secret(redis: Redis) -> str:
    """One session key for every gunicorn worker and replica: kept in Redis, made once."""
    try:
        redis.set(SECRET_KEY, secrets.token_hex(32), nx=True)
        value = redis.get(SECRET_KEY)
        if value:
            return value.decode() if isinstance(value, bytes) else str(value)
    except RedisError as exc:
        log.warning("Redis unavailable for the shared session key (%s); sessions last until restart", exc)
    return secrets.token_hex(32)
