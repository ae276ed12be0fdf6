"""Redis Cluster seed URLs (`redis+cluster://`, `rediss+cluster://`) and the hash slot of an RQ key prefix.

A seed URL names one node: the client learns the cluster's other nodes from it (CLUSTER SLOTS), so the
seed must answer the first time a process connects; after that any known node will do. Several seeds
cannot be given: commas already separate instances in RQSCOPE_REDIS_URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

from redis.connection import parse_url
from redis.crc import key_slot
from rqscope.monitor.errors import SettingsError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# a password in the user part, or as ?password= in the query (redis-py reads both)
_USER_PASSWORD = re.compile(r"^([A-Za-z+]+://[^:@/]*:)[^@]*@", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password (user part or `?password=`) replaced by ***, safe for errors and logs."""
    return _QUERY_PASSWORD.sub(r"\1***", _USER_PASSWORD.sub(r"\1***@", url))


def split_url(variable: str, url: str) -> SplitResult:
    """urlsplit, with an invalid URL (an unclosed IPv6 bracket) a one-line SettingsError naming the variable."""
    try:
        return urlsplit(url)
    except ValueError as exc:  # urlsplit refuses a '[' host without its ']'
        raise SettingsError(
            f"{variable}={mask_url(url)[:200]!r} is not a valid URL ({exc}); an IPv6 host is written "
            f"in brackets, e.g. redis://[::1]:6379/0"
        ) from None


def prefix_slot(prefix: str) -> int | None:
    """The hash slot of every key under `prefix`, or None when the prefix has no hash tag `{...}`."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1)
    if start < 0 or end <= start + 1:
        return None  # without a tag each key hashes whole, so RQ's keys spread over every slot
    return key_slot(prefix.encode())


def parse_cluster_url(url: str) -> dict[str, Any]:
    """Connection keyword arguments of a seed URL, as Redis.from_url takes them; ValueError if bad."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"must start with {' or '.join(s + '://' for s in CLUSTER_SCHEMES)}")
    if not parts.hostname:
        raise ValueError("needs a seed node, e.g. redis+cluster://10.0.0.5:7000")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    plain = parts._replace(scheme=parts.scheme.removesuffix("+cluster"), fragment="").geturl()
    kwargs = parse_url(plain)  # redis-py's own reading, query options included; rediss sets SSLConnection
    if kwargs.pop("db", 0) != 0:
        raise ValueError("names a database other than 0; a cluster has only database 0")
    kwargs.setdefault("port", 6379)
    return kwargs


def check_cluster_url(variable: str, url: str) -> str:
    """The URL if it is a valid seed URL; else SettingsError, one line naming the variable."""
    split_url(variable, url)
    try:
        parse_cluster_url(url)
    except ValueError as exc:
        raise SettingsError(f"{variable}={mask_url(url)[:200]!r} {exc}") from None
    return url


def check_cluster(variable: str, instance: Any) -> str:
    """The instance's seed URL, checked; its prefix must have a hash tag, or RQ's keys spread over every node."""
    url = check_cluster_url(variable, instance.url or "")
    if prefix_slot(instance.prefix) is None:
        raise SettingsError(
            f"{variable}: instance {instance.name!r} is a Redis Cluster, so its RQ key prefix needs a "
            f"hash tag, e.g. RQ_KEY_PREFIX={{rq}}; {instance.prefix!r} has none"
        )
    return url
