"""`rqscope serve`: the app under gunicorn, with the same settings as plain gunicorn and `gunicorn_conf`."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from rqscope.monitor.settings import Settings
from rqscope.tasks.errors import RqscopeError


class SidecarServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application that builds one app per worker from explicit settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        options: dict[str, Any] = {
            "bind": f"{host}:{self.settings.port}",
            "workers": self.settings.web_workers,
            "threads": self.settings.web_threads,
            "worker_class": "gthread",
            "timeout": 30,
            "graceful_timeout": 5,
            "loglevel": self.settings.log_level.lower(),
            "accesslog": None,
            "proc_name": "rqscope-serve",
            "post_worker_init": post_worker_init,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from rqscope.web.app import create_app

        return create_app(self.settings)


def post_worker_init(worker: Any) -> None:
    """gunicorn's hook, once each worker has loaded the app: start its background work."""
    from rqscope.web.app import start

    start(worker.wsgi)


def serve(settings: Settings) -> int:
    if settings.redis_url is None and not settings.sentinel_hosts:
        raise RqscopeError("RQSCOPE_REDIS_URL is not set (run `rqscope demo` for an embedded Redis)")
    SidecarServer(settings).run()
    return 0
