"""The Flask application factory."""

from __future__ import annotations

import logging
import os

from flask import Flask
from redis import Redis

from monitor.cache import SnapshotCache
from monitor.collectors import build_registry
from monitor.embedded import with_default_redis
from monitor.redis_client import make_client
from monitor.settings import Settings, from_env
from tasks.procstats import Publisher
from tasks.registry import REGISTRY, TaskRegistry, import_task_modules
from web import api, api_tasks, errors, health
from web.state import EXTENSION, State

log = logging.getLogger(__name__)


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
    if not testing:
        Publisher(client, "web", settings.publish_interval).start()
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api_tasks.bp)
    app.register_blueprint(api.bp)
    return app
