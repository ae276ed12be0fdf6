"""Where a request comes from: the Host allow-list, trusted proxies, and whether the caller is local.

A browser page on any site can reach a sidecar on 127.0.0.1 through DNS rebinding, with its own name
in the Host header; a reverse proxy on the same machine makes every remote user look local. So every
request must name an allowed Host, and only a loopback peer that no proxy relayed may go without
credentials.
"""

from __future__ import annotations

import ipaddress

from flask import Flask, Request, abort, request
from rqscope.monitor.settings import Settings, env_name
from werkzeug.middleware.proxy_fix import ProxyFix

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
UNSPECIFIED = ("", "0.0.0.0", "::")
# headers a proxy adds when it relays a request; any of them means the peer is not the caller
FORWARDING_HEADERS = (
    "Forwarded",
    "Via",
    "X-Real-IP",
    "X-Client-IP",
    "True-Client-IP",
    "CF-Connecting-IP",
    "X-Forwarded",
    "Forwarded-For",
    "X-Original-Forwarded-For",
    "X-Cluster-Client-IP",
    "Client-IP",
    "Fastly-Client-IP",
    "X-Envoy-External-Address",
    "X-ProxyUser-Ip",
)
FORWARDING_PREFIX = "x-forwarded-"
# the same names as WSGI environ keys (X-Real-IP and X_Real_IP both arrive as HTTP_X_REAL_IP): a set lookup
# per key, where asking werkzeug's headers for each absent name raises and catches an exception
FORWARDING_KEYS = frozenset("HTTP_" + name.upper().replace("-", "_") for name in FORWARDING_HEADERS)
FORWARDING_KEY_PREFIX = "HTTP_" + FORWARDING_PREFIX.upper().replace("-", "_")
MAX_SHOWN = 100


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """The host names a request may carry: loopback names, the bound address, RQSCOPE_ALLOWED_HOSTS."""
    bound = settings.host.strip("[]").lower()
    extra = () if bound in UNSPECIFIED else (bound,)
    return frozenset((*LOOPBACK_NAMES, *extra, *settings.allowed_hosts))


def host_name(host: str) -> str | None:
    """The name part of a Host header, lower-cased, without port or trailing dot; None when malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[1:end], host[end + 1 :]
    else:
        name, colon, port = host.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    name = name.rstrip(".")
    return name or None


def check_host(allowed: frozenset[str]) -> None:
    """Abort with 400 unless the request's Host (after any trusted proxy) is allowed."""
    raw = request.environ.get("HTTP_HOST", "")
    if host_name(raw) not in allowed:
        shown = raw[:MAX_SHOWN] if raw.isprintable() else repr(raw[:MAX_SHOWN])
        abort(400, f"Host {shown!r} is not allowed here; add its name to {env_name('allowed_hosts')}")


def relayed(req: Request) -> bool:
    """Whether any proxy forwarding header is present, trusted or not."""
    return any(key in FORWARDING_KEYS or key.startswith(FORWARDING_KEY_PREFIX) for key in req.environ)


def peer_address(req: Request) -> str:
    """The address of the TCP peer, before any rewriting by ProxyFix."""
    original = req.environ.get("werkzeug.proxy_fix.orig") or {}
    return str(original.get("REMOTE_ADDR") or req.environ.get("REMOTE_ADDR") or "")


def is_loopback_address(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)
    return bool((mapped or parsed).is_loopback)


def local_caller(req: Request) -> bool:
    """A loopback peer that no proxy relayed: the only caller allowed in without credentials."""
    return is_loopback_address(peer_address(req)) and not relayed(req)


def trust_proxies(app: Flask, settings: Settings) -> None:
    """Behind RQSCOPE_TRUSTED_PROXIES proxies, take client address, scheme, host and prefix from them."""
    hops = settings.trusted_proxies
    if hops:
        # no x_prefix: most proxies never set X-Forwarded-Prefix and pass a client's own copy through
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]


def exposure_warnings(settings: Settings) -> list[str]:
    """What an operator should hear at start-up about how exposed this configuration is."""
    found = []
    if not settings.bound_to_loopback and not settings.secret_key:
        found.append(
            f"{env_name('secret_key')} is not set and the sidecar binds {settings.host}: session cookies are "
            "signed with a key kept in Redis, so anyone who can read that Redis can sign cookies; "
            f"set {env_name('secret_key')} (32+ random characters)"
        )
    if len(settings.instances) > 1 and not settings.secret_key and settings.has_credentials:
        found.append(
            f"{env_name('secret_key')} is not set: the key that signs session cookies lives on the first "
            "instance only, so while it is away a sign-in on another instance holds only in the process that "
            f"signed it; set {env_name('secret_key')} (32+ random characters)"
        )
    if not settings.bound_to_loopback and not settings.has_credentials:
        found.append(
            f"no credentials are configured and the sidecar binds {settings.host}: every caller except a local, "
            f"unproxied one gets 401; set {env_name('api_token')} or {env_name('users')}"
        )
    return found
