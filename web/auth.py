"""Who is asking, and may they read or act: bearer tokens compared in constant time."""

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

    @property
    def can_act(self) -> bool:
        return self.role == OPERATOR


ANONYMOUS_OPERATOR = Identity("anonymous", OPERATOR)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def identify(settings: Settings) -> Identity | None:
    """The caller's identity from the request, or None when it presented no valid credential."""
    token = _bearer()
    if token is not None and settings.has_credentials:
        # both comparisons always run, so timing does not tell which token was close
        operator, viewer = _same(token, settings.api_token), _same(token, settings.viewer_token)
        if operator:
            return Identity("api-token", OPERATOR)
        if viewer:
            return Identity("viewer-token", VIEWER)
        return None
    if settings.no_auth:
        return ANONYMOUS_OPERATOR
    if not settings.has_credentials and settings.bound_to_loopback:
        return ANONYMOUS_OPERATOR
    return None


def _refuse_unknown(settings: Settings) -> None:
    if not settings.has_credentials:
        abort(403, "no credentials are configured on this non-loopback sidecar; set RQSCOPE_API_TOKEN")
    abort(401, "send Authorization: Bearer <token>")


def require_viewer(settings: Settings) -> Identity:
    """Abort with 401/403 unless the caller may read."""
    who = identify(settings)
    if who is None:
        _refuse_unknown(settings)
    assert who is not None
    return who


def require_operator(settings: Settings) -> Identity:
    """Abort unless the caller may mutate: an operator, not from another site."""
    if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
        abort(403, "cross-site requests may not change anything")
    who = require_viewer(settings)
    if not who.can_act:
        abort(403, "this action needs the operator role")
    return who
