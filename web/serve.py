"""`rqscope serve`: the app under gunicorn, with the same settings as plain gunicorn and `gunicorn_conf`."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from gunicorn.app.base import BaseApplication
from redis import RedisError
from rqscope.monitor.settings import Settings
from rqscope.tasks.errors import RqscopeError
from rqscope.web.children import Children, plan
from rqscope.web.front_headers import MAX_HEADER_BYTES

KEEPALIVE_REQUESTS = 100


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """gunicorn's settings for the sidecar, from rqscope's (RQSCOPE_HOST, _PORT, _WEB_WORKERS, ...)."""
    return {
        "bind": f"unix:{settings.front_socket}" if settings.front_socket else settings.address,
        "workers": settings.web_workers,
        "threads": settings.web_threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 5,
        "loglevel": settings.log_level.lower(),
        "accesslog": None,
        "proc_name": "rqscope-serve",
        # the app, the task modules and their imports are loaded once, before the workers fork: a worker's
        # first requests do not wait for them
        "preload_app": True,
        "post_worker_init": post_worker_init,
        "pre_request": pre_request,
        # a queue name may be any length (RQ takes 5,000 characters); gunicorn's 4,094-byte request
        # line would refuse its percent-encoded URL. 0 lifts gunicorn's cap (at most 8,190 otherwise)
        "limit_request_line": 0,
        # a child sidecar takes its front's flashed messages in a header, and a message may name such a queue
        **({"limit_request_field_size": MAX_HEADER_BYTES} if settings.front_socket else {}),
    }


class SidecarServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application that builds one app per worker from explicit settings."""

    def __init__(self, settings: Settings, children: Children | None = None) -> None:
        self.settings = settings
        self.children = children
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from rqscope.web.app import create_app

        return create_app(self.settings, children=self.children)


def pre_request(worker: Any, req: Any) -> None:
    """gunicorn's hook before each request: close a keep-alive connection after KEEPALIVE_REQUESTS requests.

    A gthread worker keeps every connection it accepted. The first worker up after a start accepts every
    connection a client opens at once, and serves them all on one core while the other idles; reopened now
    and then, connections spread over the workers (nginx's keepalive_requests does the same)."""
    if req.req_number % KEEPALIVE_REQUESTS == 0:
        req.must_close = True


def post_worker_init(worker: Any) -> None:
    """gunicorn's hook, once each worker has loaded the app: start its background work, connect to Redis."""
    from rqscope.web.app import start
    from rqscope.web.state import EXTENSION

    start(worker.wsgi)
    try:  # the first request need not open the connection; a Redis that is away is the requests' concern
        worker.wsgi.extensions[EXTENSION].first.redis.ping()
    except RedisError as exc:
        worker.log.warning("Redis not reachable at worker start: %s", exc)


def serve(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run the sidecar; first the sidecar of each other RQ prefix (web.children), stopped with this one."""
    if settings.redis_url is None and not settings.sentinel_hosts:
        raise RqscopeError("RQSCOPE_REDIS_URL is not set (run `rqscope demo` for an embedded Redis)")
    children = plan(settings, environ)
    if children is not None:
        # until gunicorn sets its own handler, a SIGTERM leaves through the finally below, which stops them
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        children.start()
    try:
        SidecarServer(settings, children).run()
    finally:
        if children is not None:
            children.stop()
        if settings.front_socket:  # a child: the last of its front's to leave removes their directory
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(settings.front_socket))
    return 0
