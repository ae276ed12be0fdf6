"""Every rqscope setting: defaults, parsing of RQSCOPE_* variables, validation."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from rqscope.monitor.cluster import check_cluster, split_url
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.instances import CLUSTER_SCHEMES, InstanceConfig, parse_instances
from rqscope.tasks.errors import TaskArgumentsError
from rqscope.tasks.when import DEFAULT_MAX_DELAY, parse_delay

PREFIX = "RQSCOPE_"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9190
DEFAULT_REDIS_CONNECT_TIMEOUT = 2.0
DEFAULT_REDIS_TIMEOUT = 2.0
DEFAULT_SNAPSHOT_TTL = 1.0
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
DEFAULT_WEB_WORKERS = 2
DEFAULT_WEB_THREADS = 4
DEFAULT_PUBLISH_INTERVAL = 5.0
DEFAULT_TASK_MODULES = ("rqscope.tasks.examples",)
DEFAULT_QUEUES = ("high", "default", "low")
DEFAULT_ALERT_INTERVAL = 15.0
DEFAULT_ALERT_REPEAT = 4 * 3600.0
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_TRUSTED_PROXIES = 5

REDIS_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


ROLES = ("operator", "viewer")


@dataclass(frozen=True)
class User:
    """A dashboard login: a werkzeug password hash, never the password."""

    name: str
    role: str
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one rqscope process."""

    redis_url: str | None = field(default=None, repr=False)
    sentinel_hosts: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    redis_connect_timeout: float = DEFAULT_REDIS_CONNECT_TIMEOUT
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_token: str | None = field(default=None, repr=False)
    viewer_token: str | None = field(default=None, repr=False)
    users: tuple[User, ...] = field(default=(), repr=False)
    secret_key: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    no_auth: bool = False
    allowed_hosts: tuple[str, ...] = ()
    trusted_proxies: int = 0
    log_level: str = DEFAULT_LOG_LEVEL
    snapshot_ttl: float = DEFAULT_SNAPSHOT_TTL
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH  # jobs one POST /api/tasks/batch may enqueue
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES  # the batch route's body limit, instead of max_body_bytes
    max_delay: float = DEFAULT_MAX_DELAY  # seconds ahead a job may be scheduled
    web_workers: int = DEFAULT_WEB_WORKERS
    web_threads: int = DEFAULT_WEB_THREADS
    process_per_instance: bool = False  # `rqscope serve`: each instance after the first in a process of its own
    publish_interval: float = DEFAULT_PUBLISH_INTERVAL
    task_modules: tuple[str, ...] = DEFAULT_TASK_MODULES
    display_pickle_types: tuple[str, ...] = ()  # module.Name types the dashboard may build from job data
    alert_rules: str | None = None
    alert_interval: float = DEFAULT_ALERT_INTERVAL
    alert_repeat: float = DEFAULT_ALERT_REPEAT
    alert_webhook_urls: tuple[str, ...] = ()
    alert_slack_urls: tuple[str, ...] = field(default=(), repr=False)
    pagerduty_routing_key: str | None = field(default=None, repr=False)
    pagerduty_url: str = DEFAULT_PAGERDUTY_URL
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_to: tuple[str, ...] = ()
    smtp_starttls: bool = False
    public_url: str | None = None
    webhook_severities: tuple[str, ...] = ()
    slack_severities: tuple[str, ...] = ()
    pagerduty_severities: tuple[str, ...] = ("critical",)
    smtp_severities: tuple[str, ...] = ()
    # set only by `rqscope serve` for the sidecar process it starts per other RQ prefix (web.children)
    front_token: str | None = field(default=None, repr=False)  # what the front sends with every request
    front_socket: str | None = None  # the Unix socket to listen on instead of host:port
    front_instances: tuple[str, ...] = ()  # every instance the front serves, in order: the pages' switcher

    @property
    def log_level_number(self) -> int:
        return int(logging.getLevelName(self.log_level))

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_token or self.viewer_token or self.users)

    @property
    def address(self) -> str:
        """host:port as a URL or a bind names it, an IPv6 host in brackets."""
        bare = ":" in self.host and not self.host.startswith("[")
        return f"[{self.host}]:{self.port}" if bare else f"{self.host}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard's URL as alerts link to it: the public URL, or where this sidecar listens."""
        return self.public_url or f"http://{self.address}/"

    @property
    def bound_to_loopback(self) -> bool:
        return is_loopback(self.host)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @cached_property
    def instances(self) -> tuple[InstanceConfig, ...]:
        """The Redis instances to watch, named; the first is the default of every page and route."""
        from rqscope.tasks.rq_internals.keys import rq_key_prefix

        masters = self.sentinel_master if self.sentinel_hosts else None
        return parse_instances(
            env_name("redis_url"), self.redis_url, env_name("sentinel_master"), masters, rq_key_prefix(), _redis_url
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def redact_url(url: str | None) -> str:
    """The URL with any password replaced, safe for logs and pages."""
    if not url:
        return ""
    url = re.sub(r"([?&]password=)[^&#]*", r"\1***", url)  # redis-py also takes the password as a query option
    parts = urlsplit(url)
    if parts.password is None:
        # a password holding '#', '?' or '/' ends the netloc early: mask from the user's ':' to the last '@'
        return re.sub(r"^([A-Za-z+]+://[^:@/]*:).*@", r"\1***@", url, flags=re.DOTALL)
    user = parts.username or ""
    host_and_port = parts.netloc.rpartition("@")[2]  # as written: a port that is not a number is shown, not parsed
    netloc = f"{user}:***@{host_and_port}"
    return parts._replace(netloc=netloc).geturl()


def _float(name: str, raw: str, minimum: float = 0.0, allow_zero: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name}={raw!r} must be a finite number")
    if value < minimum or (value == 0 and not allow_zero):
        raise SettingsError(f"{name}={raw!r} must be greater than 0")
    return value


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} must be between {low} and {high}")
    return value


def _delay(name: str, raw: str) -> float:
    try:
        seconds = parse_delay(raw, name)
    except TaskArgumentsError:
        raise SettingsError(f"{name}={raw[:64]!r} must be seconds or like 90s, 5m, 2h, 30d") from None
    if seconds <= 0:
        raise SettingsError(f"{name}={raw!r} must be greater than 0")
    return seconds


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r} must be true or false")


def _redis_url(name: str, raw: str) -> str:
    parts = split_url(name, raw)
    if parts.scheme not in REDIS_SCHEMES:
        raise SettingsError(
            f"{name}={redact_url(raw)!r} must start with redis://, rediss://, unix:// or redis+cluster://"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise SettingsError(f"{name}={redact_url(raw)!r} needs a socket path, e.g. unix:///run/redis.sock")
    elif not parts.hostname:
        raise SettingsError(f"{name}={redact_url(raw)!r} needs a host, e.g. redis://localhost:6379/0")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SettingsError(f"{name}={redact_url(raw)!r} has an invalid port") from None
    if parts.scheme != "unix" and not re.fullmatch(r"(/\d{0,5})?/?", parts.path):
        raise SettingsError(  # the path is not shown: it may be a second URL, with its own password
            f"{name}: the path after the host must be a database number, like /0 (several instances: name=url,...)"
        )
    return raw


def _sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise SettingsError(f"{name}: {item!r} must be host:port")
        hosts.append((host, _int(name, port, 1, 65535)))
    return tuple(hosts)


def _users(name: str, raw: str) -> tuple[User, ...]:
    users = []
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        user, _, rest = entry.partition(":")
        role, _, password_hash = rest.partition(":")
        if not user or role not in ROLES or not password_hash:
            raise SettingsError(
                f"{name}: each entry must be name:role:hash with role operator or viewer "
                "(make the hash with `python -m rqscope.web.passwords`)"
            )
        if not password_hash.startswith(("scrypt:", "pbkdf2:")):
            raise SettingsError(f"{name}: the hash for {user!r} is not a werkzeug scrypt or pbkdf2 hash")
        users.append(User(user, role, password_hash))
    if len({u.name for u in users}) != len(users):
        raise SettingsError(f"{name}: a user name appears twice")
    return tuple(users)


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = []
    for entry in filter(None, (part.strip().lower() for part in raw.split(","))):
        bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        if not bare or not all(ch.isalnum() or ch in ".-:_" for ch in bare) or (":" in bare and bare == entry):
            raise SettingsError(
                f"{name}: {entry!r} must be a host name or address without scheme or port (IPv6 in brackets)"
            )
        hosts.append(bare.rstrip("."))
    return tuple(hosts)


def _auth_settings(get: Any, values: dict[str, object]) -> None:
    for key in ("api_token", "viewer_token", "metrics_token"):
        if raw := get(key):
            if len(raw) < 16:
                raise SettingsError(f"{env_name(key)} must be at least 16 characters")
            values[key] = raw
    if values.get("api_token") and values.get("api_token") == values.get("viewer_token"):
        raise SettingsError(f"{env_name('viewer_token')} must differ from {env_name('api_token')}")
    if raw := get("users"):
        values["users"] = _users(env_name("users"), raw)
    if raw := get("secret_key"):
        if len(raw) < 32:
            raise SettingsError(f"{env_name('secret_key')} must be at least 32 characters")
        values["secret_key"] = raw
    if (raw := get("no_auth")) is not None:
        values["no_auth"] = _bool(env_name("no_auth"), raw)
    if raw := get("allowed_hosts"):
        values["allowed_hosts"] = _hosts(env_name("allowed_hosts"), raw)
    if raw := get("trusted_proxies"):
        values["trusted_proxies"] = _int(env_name("trusted_proxies"), raw, 0, MAX_TRUSTED_PROXIES)
    credentials = [env_name(key) for key in ("api_token", "viewer_token", "users") if values.get(key)]
    if values.get("no_auth") and credentials:
        raise SettingsError(
            f"{env_name('no_auth')} (--no-auth) contradicts {', '.join(credentials)}: "
            "turn authentication off or configure credentials, not both"
        )


def _http_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = tuple(filter(None, (part.strip() for part in raw.split(","))))
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"{name}: {redact_url(url)!r} must be an http:// or https:// URL")
    return urls


def _alert_settings(get: Any, values: dict[str, object]) -> None:
    if raw := get("alert_rules"):
        values["alert_rules"] = raw
    for key in ("alert_interval", "alert_repeat"):
        if raw := get(key):
            values[key] = _float(env_name(key), raw)
    for key in ("alert_webhook_urls", "alert_slack_urls"):
        if raw := get(key):
            values[key] = _http_urls(env_name(key), raw)
    if raw := get("pagerduty_routing_key"):
        values["pagerduty_routing_key"] = raw
    if raw := get("pagerduty_url"):
        values["pagerduty_url"] = _http_urls(env_name("pagerduty_url"), raw)[0]
    if raw := get("public_url"):
        values["public_url"] = _http_urls(env_name("public_url"), raw)[0]
    if raw := get("smtp_host"):
        values["smtp_host"] = raw
    if raw := get("smtp_port"):
        values["smtp_port"] = _int(env_name("smtp_port"), raw, 1, 65535)
    if raw := get("smtp_from"):
        values["smtp_from"] = raw
    if raw := get("smtp_to"):
        values["smtp_to"] = tuple(filter(None, (p.strip() for p in raw.split(","))))
    if (raw := get("smtp_starttls")) is not None:
        values["smtp_starttls"] = _bool(env_name("smtp_starttls"), raw)
    for key in ("webhook_severities", "slack_severities", "pagerduty_severities", "smtp_severities"):
        if (raw := get(key)) is not None:
            chosen = tuple(filter(None, (p.strip() for p in raw.split(","))))
            if any(level not in ("critical", "warning", "info") for level in chosen):
                raise SettingsError(f"{env_name(key)}={raw!r}: severities are critical, warning and info")
            values[key] = chosen
    if values.get("smtp_host") and not (values.get("smtp_from") and values.get("smtp_to")):
        raise SettingsError(f"{env_name('smtp_host')} needs {env_name('smtp_from')} and {env_name('smtp_to')}")


def _type_names(name: str, raw: str) -> tuple[str, ...]:
    names = tuple(filter(None, (part.strip() for part in raw.split(","))))
    for entry in names:
        module, _, qualname = entry.partition(":") if ":" in entry else entry.rpartition(".")
        parts = [*module.split("."), *qualname.split(".")]
        if not module or not qualname or not all(part.isidentifier() for part in parts):
            raise SettingsError(f"{name}: {entry!r} is not a module.Name (e.g. myapp.models.Order)")
    return names


def _check_instances(settings: Settings) -> None:
    """Parse the instances now, so that a bad one stops the start with one line naming its variable."""
    from rqscope.tasks.rq_internals.keys import rq_key_prefix

    process_prefix = rq_key_prefix()
    for instance in settings.instances:
        if instance.cluster:
            check_cluster(env_name("redis_url"), instance)
    if settings.front_socket and any(i.prefix != process_prefix for i in settings.instances):
        raise SettingsError(f"{env_name('front_socket')}: a child sidecar serves one RQ prefix only")


def _front_settings(get: Any, values: dict[str, object]) -> None:
    """What `rqscope serve` hands the sidecar it starts for another RQ prefix; never set by hand."""
    if raw := get("front_token"):
        values["front_token"] = raw
    if raw := get("front_socket"):
        values["front_socket"] = raw
    if raw := get("front_instances"):
        values["front_instances"] = tuple(filter(None, (n.strip() for n in raw.split(","))))
    if bool(values.get("front_token")) != bool(values.get("front_socket")):
        raise SettingsError(f"{env_name('front_token')} and {env_name('front_socket')} are set together")


def from_env(env: Mapping[str, str]) -> Settings:
    """Build Settings from RQSCOPE_* entries of a mapping; raise SettingsError naming a bad variable."""
    values: dict[str, object] = {}

    def get(key: str) -> str | None:
        raw = env.get(env_name(key))
        return None if raw is None else raw.strip()

    if (raw := get("redis_url")) is not None and raw != "":
        values["redis_url"] = raw
    if raw := get("sentinel_hosts"):
        values["sentinel_hosts"] = _sentinels(env_name("sentinel_hosts"), raw)
    if raw := get("sentinel_master"):
        values["sentinel_master"] = raw
    if raw := get("sentinel_password"):
        values["sentinel_password"] = raw
    if bool(values.get("sentinel_hosts")) != bool(values.get("sentinel_master")):
        raise SettingsError(f"{env_name('sentinel_hosts')} and {env_name('sentinel_master')} must be set together")
    for key in ("redis_connect_timeout", "redis_timeout", "snapshot_ttl", "publish_interval"):
        if raw := get(key):
            values[key] = _float(env_name(key), raw)
    if raw := get("host"):
        values["host"] = raw
    if raw := get("port"):
        values["port"] = _int(env_name("port"), raw, 1, 65535)
    _auth_settings(get, values)
    if raw := get("log_level"):
        if raw.upper() not in LOG_LEVELS:
            raise SettingsError(f"{env_name('log_level')}={raw!r} must be one of {', '.join(LOG_LEVELS)}")
        values["log_level"] = raw.upper()
    if raw := get("max_body_bytes"):
        values["max_body_bytes"] = _int(env_name("max_body_bytes"), raw, 256, 16 * 1024 * 1024)
    if raw := get("max_batch"):
        values["max_batch"] = _int(env_name("max_batch"), raw, 1, 100_000)
    if raw := get("max_batch_bytes"):
        values["max_batch_bytes"] = _int(env_name("max_batch_bytes"), raw, 1024, 256 * 1024 * 1024)
    if raw := get("max_delay"):
        values["max_delay"] = _delay(env_name("max_delay"), raw)
    if raw := get("web_workers"):
        values["web_workers"] = _int(env_name("web_workers"), raw, 1, 64)
    if raw := get("web_threads"):
        values["web_threads"] = _int(env_name("web_threads"), raw, 1, 256)
    if (raw := get("process_per_instance")) is not None:
        values["process_per_instance"] = _bool(env_name("process_per_instance"), raw)
    if (raw := get("task_modules")) is not None:
        values["task_modules"] = tuple(filter(None, (m.strip() for m in raw.split(","))))
    if raw := get("display_pickle_types"):
        values["display_pickle_types"] = _type_names(env_name("display_pickle_types"), raw)
    _alert_settings(get, values)
    _front_settings(get, values)
    settings = Settings(**values)  # type: ignore[arg-type]
    _check_instances(settings)
    if settings.no_auth and not settings.bound_to_loopback:
        raise SettingsError(
            f"{env_name('no_auth')} is only allowed on a loopback host, not {env_name('host')}={settings.host!r}"
        )
    return settings
