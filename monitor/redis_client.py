"""Create the one Redis client a process uses, with explicit timeouts."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel
from rqscope.monitor.cluster import check_cluster, cluster_client
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.instances import InstanceConfig
from rqscope.monitor.settings import Settings, env_name
from rqscope.tasks.procstats import CountingConnectionPool


def make_client(
    settings: Settings,
    instance: InstanceConfig | None = None,
    *,
    client_name: str | None = "rqscope",
    max_connections: int = 50,
    retries: int = 0,
) -> Redis:
    """Return a Redis client for one instance's URL or Sentinel master (by default the first instance).

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
    if instance is None:
        if not settings.instances:
            raise SettingsError(f"{env_name('redis_url')} is not set (run `rqscope demo` for an embedded Redis)")
        instance = settings.instances[0]
    if instance.sentinel_master is not None:
        sentinel = Sentinel(
            list(settings.sentinel_hosts),
            sentinel_kwargs={
                "socket_connect_timeout": settings.redis_connect_timeout,
                "socket_timeout": settings.redis_timeout,
                "password": settings.sentinel_password,
            },
            **common,
        )
        return sentinel.master_for(instance.sentinel_master, max_connections=max_connections)
    assert instance.url is not None  # an instance is a URL or a Sentinel master
    if instance.cluster:
        return _cluster_client(instance, max_connections, common)
    pool = CountingConnectionPool.from_url(instance.url, max_connections=max_connections, **common)
    return Redis(connection_pool=pool)


def _cluster_client(instance: InstanceConfig, max_connections: int, common: dict[str, Any]) -> Redis:
    """A client to the cluster node that owns the instance's prefix, which must have a hash tag."""
    url = check_cluster(env_name("redis_url"), instance)
    return cluster_client(url, instance.prefix, max_connections=max_connections, **common)
