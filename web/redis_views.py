"""The Redis page and GET /api/redis: the server's INFO, read once per view and cached like the snapshot."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template
from flask.sansio.blueprints import BlueprintSetupState
from redis import Redis, RedisError
from rqscope.monitor.cache import TtlCache
from rqscope.monitor.report import iso
from rqscope.tasks.procstats import pool_usage
from rqscope.web.state import EXTENSION, state

bp = Blueprint("redis_views", __name__)
CACHE = "rqscope.redis_info"

# The INFO fields shown, by section; a whitelist, so that nothing else INFO carries (paths, hosts of other
# clients, anything a later Redis adds) reaches the page. INFO never holds passwords; CONFIG is never read.
FIELDS: dict[str, tuple[str, ...]] = {
    "server": ("redis_version", "redis_mode", "os", "uptime_in_seconds"),
    "memory": (
        "used_memory",
        "used_memory_rss",
        "used_memory_peak",
        "maxmemory",
        "maxmemory_policy",
        "mem_fragmentation_ratio",
    ),
    "clients": ("connected_clients", "blocked_clients", "maxclients", "rejected_connections"),
    "persistence": (
        "loading",
        "rdb_changes_since_last_save",
        "rdb_bgsave_in_progress",
        "rdb_last_save_time",
        "rdb_last_bgsave_status",
        "aof_enabled",
        "aof_rewrite_in_progress",
        "aof_last_bgrewrite_status",
        "aof_last_write_status",
    ),
    "replication": (
        "role",
        "connected_slaves",
        "master_link_status",
        "master_last_io_seconds_ago",
        "master_sync_in_progress",
    ),
}
TEXT_LIMIT = 200  # INFO values are short; a longer one is cut, not trusted


@dataclass(frozen=True)
class RedisInfo:
    """What the page shows of one INFO reply, or why there is none."""

    up: bool
    read_at: float
    error: str = ""
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    keyspace: dict[str, dict[str, int]] = field(default_factory=dict)


def _plain(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:TEXT_LIMIT]


def shape(info: Mapping[str, Any], now: float) -> RedisInfo:
    """The whitelisted figures of an INFO reply, with the last save as an ISO time as well."""
    sections = {name: {key: _plain(info[key]) for key in keys if key in info} for name, keys in FIELDS.items()}
    last_save = sections["persistence"].get("rdb_last_save_time")
    if isinstance(last_save, (int, float)) and last_save > 0:
        sections["persistence"]["rdb_last_save_at"] = iso(float(last_save))
    keyspace = {
        str(name): {k: int(v) for k, v in value.items() if k in ("keys", "expires", "avg_ttl") and isinstance(v, int)}
        for name, value in info.items()
        if str(name).startswith("db") and str(name)[2:].isdigit() and isinstance(value, Mapping)
    }
    return RedisInfo(up=True, read_at=now, sections=sections, keyspace=keyspace)


def read_info(redis: Redis) -> RedisInfo:
    """One INFO call, shaped; an outage is a state, and is cached like any read, so it costs one timeout."""
    try:
        return shape(redis.info(), time.time())
    except RedisError as exc:
        return RedisInfo(up=False, read_at=time.time(), error=str(exc)[:TEXT_LIMIT])


@bp.record_once
def _install(setup: BlueprintSetupState) -> None:
    current = setup.app.extensions[EXTENSION]
    ttl = max(1.0, current.settings.snapshot_ttl)
    setup.app.extensions[CACHE] = {  # one INFO cache per instance: each page shows its own instance's server
        name: TtlCache(functools.partial(read_info, instance.redis), ttl=ttl)
        for name, instance in current.instances.items()
    }


def _read() -> tuple[RedisInfo, dict[str, int]]:
    current = state()
    in_use, idle, maximum = pool_usage(current.redis)
    info = current_app.extensions[CACHE][current.current.name].get()
    return info, {"in_use": in_use, "idle": idle, "max": maximum}


@bp.get("/redis")
def redis_page() -> str:
    info, pool = _read()
    return render_template("dashboard/redis.html", info=info, pool=pool, now=time.time())


@bp.get("/api/redis")
def redis_api() -> tuple[Response, int]:
    info, pool = _read()
    body = {"up": info.up, "read_at": iso(info.read_at), **info.sections, "keyspace": info.keyspace, "pool": pool}
    if not info.up:
        return jsonify(error=f"Redis is unavailable: {info.error}", **body), 503
    return jsonify(body), 200
