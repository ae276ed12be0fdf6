"""Who is asking, and may they act: bearer tokens compared in constant time."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from flask import abort, request

from monitor.settings import Settings

OPERATOR = "operator"
VIEWER = "viewer"


@dataclass(frozen=True)
class Identity:
    name: str
    role: str


ANONYMOUS_OPERATOR = Identity("anonymous", OPERATOR)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def identify(settings: Settings) -> Identity | None:
    """The caller's identity from the request, or None when it presented no valid credential."""
    token = _bearer()
    if token is not None and settings.api_token is not None:
        if hmac.compare_digest(token.encode(), settings.api_token.encode()):
            return Identity("api-token", OPERATOR)
        return None
    if settings.no_auth:
        return ANONYMOUS_OPERATOR
    if settings.api_token is None and settings.bound_to_loopback:
        return ANONYMOUS_OPERATOR
    return None


def require_operator(settings: Settings) -> Identity:
    """Abort with 401/403 unless the caller may mutate."""
    who = identify(settings)
    if who is None:
        if settings.api_token is None:
            abort(403, "no credentials are configured on this non-loopback sidecar; set RQSCOPE_API_TOKEN")
        abort(401, "send Authorization: Bearer <RQSCOPE_API_TOKEN>")
    if who.role != OPERATOR:
        abort(403, "this action needs the operator role")
    return who
