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
from rqscope.monitor.alerts.engine import AlertEngine
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.collectors import build_registry
from rqscope.monitor.cron_fetch import CronCache, CronReader
from rqscope.monitor.fanout import Fanout
from rqscope.monitor.instances import DEFAULT_NAME, InstanceConfig, by_prefix
from rqscope.monitor.names import label
from rqscope.monitor.redis_client import make_client
from rqscope.monitor.settings import Settings, env_name, from_env
from rqscope.monitor.snapshot import JOB_STATES
from rqscope.tasks.errors import RqscopeError
from rqscope.tasks.procstats import Publisher
from rqscope.tasks.registry import REGISTRY, TaskRegistry, import_task_modules
from rqscope.tasks.rq_internals.keys import rq_key_prefix
from rqscope.web import (
    access,
    api,
    api_series,
    api_tasks,
    bodies,
    charts,
    controls,
    cron_views,
    dashboard,
    errors,
    front,
    health,
    hosts,
    instances,
    jobs_views,
    openapi,
    pages,
    redis_views,
    session_key,
    session_views,
    sessions,
)
from rqscope.web.children import Children
from rqscope.web.state import EXTENSION, Instance, State

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    registry: TaskRegistry = REGISTRY,
    testing: bool = False,
    children: Children | None = None,
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
    watched = _instances(settings, redis, children)
    deadline = settings.redis_connect_timeout + settings.redis_timeout + 0.5
    # one snapshot, ping and metrics read per instance, and per other prefix's sidecar
    fanout = Fanout(deadline, threads=3 * (len(watched) + len(children.children if children else ())) + 1)
    homes = _homes(settings, watched, children)
    app.extensions[EXTENSION] = State(settings, registry, watched, homes, fanout, children)
    app.secret_key = settings.secret_key
    app.session_interface = sessions.interface(settings)  # Secure cookies over https; the Redis key if unset
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    hosts.trust_proxies(app, settings)
    bodies.install(app, settings.max_batch_bytes)  # each route's body limit, before any hook reads a body
    access.install(app, settings)  # the first hook: the Host and the caller are checked before anything else
    instances.install(app)  # then ?redis= picks the instance every later read and action is scoped to
    front.install(app)  # and one under another RQ prefix is its own sidecar's to serve
    for watched_instance in watched.values():
        watched_instance.alerts = _engine(settings, watched_instance)
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


def _instances(settings: Settings, redis: Redis | None, children: Children | None) -> dict[str, Instance]:
    """One Instance per configured Redis under this process's RQ prefix; a given client (tests) stands for the first."""
    local, groups = by_prefix(env_name("redis_url"), settings.instances, rq_key_prefix())
    if groups and children is None:
        raise RqscopeError(
            f"{env_name('redis_url')} names instances under other RQ key prefixes ({', '.join(groups)}): "
            "`rqscope serve` starts a sidecar process for each; this way of starting serves one prefix only"
        )
    if children is not None:  # what no child serves (with process_per_instance, the first instance only)
        local = tuple(i for i in settings.instances if i.name not in children.by_name)
    if not settings.instances:
        client = redis if redis is not None else make_client(settings)  # with no Redis at all, that one raises
        configs: tuple[InstanceConfig | None, ...] = (None,)
    else:
        configs = local
    built = {}
    for position, config in enumerate(configs):
        name = config.name if config is not None else DEFAULT_NAME
        if position == 0 and redis is not None:
            client = redis
        elif config is not None:
            client = make_client(settings, config, client_name="rqscope-web")
        cache = SnapshotCache(client, ttl=settings.snapshot_ttl)
        cron = CronCache(CronReader(client), ttl=max(1.0, settings.snapshot_ttl))
        built[name] = Instance(name, client, cache, cron, build_registry(cache, cron.get))
    return built


def _homes(settings: Settings, watched: dict[str, Instance], children: Children | None) -> dict[str, Redis]:
    """Where sessions may live, in the configured order: the instances this process reads, and those under its
    RQ prefix that a child reads (process_per_instance). Another prefix's keys are not this process's to write."""
    homes = {name: instance.redis for name, instance in watched.items()}
    if children is None:
        return homes
    for config in settings.instances:
        if config.name in children.by_name and config.prefix == rq_key_prefix():
            homes[config.name] = make_client(settings, config, client_name="rqscope-web")
    return {config.name: homes[config.name] for config in settings.instances if config.name in homes}


def _engine(settings: Settings, instance: Instance) -> AlertEngine:
    return alerting.build_engine(settings, instance.redis, instance.snapshots.get, instance.cron.get, instance.name)


def _shown(value: object) -> object:
    if isinstance(value, Markup):  # a macro's output: already escaped, and it must stay markup
        return value if value.isascii() else Markup(label(value))
    return label(value) if isinstance(value, str) and not value.isascii() else value


def start(app: Flask) -> Callable[[], None]:
    """Start this process's background work (process stats, alerts, the shared session key); returns its stop."""
    current = app.extensions[EXTENSION]
    publishers, schedulers = [], []
    for instance in current.instances.values():
        if instance.alerts is not None:
            # an engine built before gunicorn forked (preload_app) would lend every worker the same lease holder,
            # and each would lead: this process evaluates with a holder of its own
            instance.alerts = _engine(current.settings, instance)
            schedulers.append(alerting.start(instance.alerts))
        publishers.append(Publisher(instance.redis, "web", current.settings.publish_interval))
        publishers[-1].start()
    stopped = threading.Event()
    if not current.settings.secret_key:
        session_key.keep_making(current.first.redis, stopped)

    def stop() -> None:
        stopped.set()
        for scheduler in schedulers:
            scheduler.shutdown(wait=True)
        for publisher in publishers:
            publisher.stop()

    return stop
