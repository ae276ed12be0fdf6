"""Create the one Redis client a process uses, with explicit timeouts."""

from __future__ import annotations

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.settings import Settings, env_name
from rqscope.tasks.procstats import CountingConnectionPool


def make_client(
    settings: Settings, *, client_name: str | None = "rqscope", max_connections: int = 50, retries: int = 0
) -> Redis:
    """Return a Redis client for the configured URL or Sentinel master.

    `retries` is explicit because redis-py's default changed between releases; the sidecar uses 0 so
    that a hanging Redis costs one timeout, never several.
    """
    common = {
        "retry": Retry(NoBackoff(), retries),
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_timeout,
        "health_check_interval": 30,
        "client_name": client_name,
    }
    if settings.sentinel_hosts:
        sentinel = Sentinel(
            list(settings.sentinel_hosts),
            sentinel_kwargs={
                "socket_connect_timeout": settings.redis_connect_timeout,
                "socket_timeout": settings.redis_timeout,
                "password": settings.sentinel_password,
            },
            **common,
        )
        return sentinel.master_for(settings.sentinel_master, max_connections=max_connections)
    if not settings.redis_url:
        raise SettingsError(f"{env_name('redis_url')} is not set (run `rqscope demo` for an embedded Redis)")
    pool = CountingConnectionPool.from_url(settings.redis_url, max_connections=max_connections, **common)
    return Redis(connection_pool=pool)
