"""The front's side of the instances it does not serve itself: those under other RQ prefixes, and with
process_per_instance every instance after the first, each served by a sidecar of its own (web.children).

A request for such an instance (`?redis=<name>`) is judged here, like every other (the caller, the role,
the CSRF token of a form), then relayed to that sidecar as that caller. What spans every instance (/metrics, /readyz,
/api/instances, /instances) asks each sidecar at once, each bounded by the same timeout as a Redis read.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from flask import Flask, Response, g, request, session
from rqscope.monitor.exposition import render_labelled
from rqscope.monitor.families import unreachable
from rqscope.web.access import SAFE_METHODS
from rqscope.web.auth import csrf_token
from rqscope.web.children import Child, Children, Reply
from rqscope.web.front_headers import (
    FLASHES,
    FRONT_CSRF_HEADER,
    FRONT_FLASHES_HEADER,
    FRONT_USER_HEADER,
    caller_header,
    flashes,
    flashes_header,
)
from rqscope.web.state import RELAYED, State, state
from werkzeug.exceptions import BadGateway, UnsupportedMediaType

log = logging.getLogger(__name__)

# what the front answers itself, whichever instance the request names
FRONT_ONLY = frozenset(
    {
        "static",
        "health.healthz",
        "instances.api_instances",
        "instances.overview",
        "openapi.openapi",
        "session_views.login_form",
        "session_views.login",
        "session_views.logout",
    }
)
# request headers a relayed request keeps: the caller's own credentials and cookies stay here
KEPT_REQUEST_HEADERS = (
    "Accept",
    "Accept-Language",
    "Content-Type",
    "If-None-Match",
    "If-Modified-Since",
    "User-Agent",
)
# response headers the front sets itself; a child's session cookie is never the caller's
DROPPED_REPLY_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "set-cookie", "server", "date"}
    | {FRONT_FLASHES_HEADER.lower()}
)


def install(app: Flask) -> None:
    """Relay the requests for an instance a child serves, after the access guard judged them."""

    @app.before_request
    def relay() -> Response | None:
        name = g.get(RELAYED)
        if name is None or request.endpoint in FRONT_ONLY:
            return None
        children = state().children
        assert children is not None  # RELAYED names only the instances of a child
        return relayed(children, children.by_name[name])


def _target() -> str:
    """The request's path and query exactly as the caller sent them (a queue name need not be UTF-8)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        return str(raw)
    path = quote(request.environ.get("PATH_INFO", "/").encode("latin-1"), safe="/%:@!$&'()*+,;=-._~")
    query = request.environ.get("QUERY_STRING", "")
    return path + ("?" + query if query else "")


def _body() -> bytes:
    """The request's body; a form the access guard already read (for its CSRF token) is encoded again."""
    if request.mimetype == "application/x-www-form-urlencoded":
        return urlencode(list(request.form.items(multi=True))).encode()
    if request.mimetype == "multipart/form-data":  # no form of the dashboard sends files
        raise UnsupportedMediaType("forms with files are not accepted")
    return request.get_data()


def relayed(children: Children, child: Child) -> Response:
    """The child's answer to this request, made as the caller the access guard let in."""
    headers = {k: v for k, v in request.headers.items() if k in KEPT_REQUEST_HEADERS}
    who = g.get("who")
    headers[FRONT_USER_HEADER] = caller_header(who)
    if who is not None and who.is_browser and not request.path.startswith("/api/"):
        headers[FRONT_CSRF_HEADER] = csrf_token()  # the forms of the child's page post back here, with this token
    if pending := session.pop(FLASHES, None):  # messages for the page the child renders next
        headers[FRONT_FLASHES_HEADER] = flashes_header(pending)
    body = _body() if request.method not in SAFE_METHODS else None
    try:
        reply = children.request(child, request.method, _target(), headers, body)
    except (OSError, http.client.HTTPException) as exc:
        log.warning("%s did not answer: %s", child.shown, exc)
        raise BadGateway(
            f"the sidecar serving instance {g.get(RELAYED)} (RQ key prefix {child.prefix!r}) is not answering;"
            " it is started again when it exits"
        ) from None
    kept = [(k, v) for k, v in reply.headers if k.lower() not in DROPPED_REPLY_HEADERS]
    for key, value in reply.headers:  # what the child flashed, kept in the caller's session for the next page
        if key.lower() == FRONT_FLASHES_HEADER.lower():
            session[FLASHES] = session.get(FLASHES, []) + flashes(value)
    return Response(reply.body, status=reply.status, headers=kept)


def child_reads(current: State, path: str) -> dict[str, Callable[[], Reply | None]]:
    """For Fanout.each: one GET `path` per child, keyed `child:<socket>` (no instance name holds a ':')."""
    children = current.children
    if children is None:
        return {}

    def ask(child: Child) -> Reply | None:
        try:
            return children.request(child, "GET", path)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("%s did not answer: %s", child.shown, exc)
            return None

    return {_key(child): functools.partial(ask, child) for child in children.children}


def _key(child: Child) -> str:
    return f"child:{child.socket}"


def _answers(current: State, path: str, done: dict[str, Any] | None) -> list[tuple[Child, Reply | None]]:
    """Each child with its reply to `path`: from `done` (one Fanout.each with other reads), or asked now."""
    if done is None:
        done = current.fanout.calls(child_reads(current, path), kind=f"child:{path}")
    return [(child, done.get(_key(child))) for child in _children(current)]


def metrics_parts(current: State, done: dict[str, Any]) -> list[bytes]:
    """Each child's exposition; for a child that did not answer, its instances as unreachable."""
    parts = []
    for child, reply in _answers(current, "/metrics", done):
        if isinstance(reply, Reply) and reply.status == 200:
            parts.append(reply.body)
        else:
            parts.append(render_labelled([(name, unreachable()) for name in child.names]))
    return parts


def _json(reply: Reply | None) -> dict[str, Any]:
    if reply is None:
        return {}
    try:
        found = json.loads(reply.body)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def instance_rows(current: State, done: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """{name: its /api/instances row} of every child's instances; an unanswered one is shown down."""
    rows: dict[str, dict[str, Any]] = {}
    for child, reply in _answers(current, "/api/instances", done):
        given = {row.get("name"): row for row in _json(reply).get("instances", []) if isinstance(row, dict)}
        for name in child.names:
            rows[name] = given.get(name) or {"name": name, "up": False}
    return rows


def readiness(current: State, done: dict[str, Any] | None = None) -> dict[str, str]:
    """{name: "ok" or why not} of every child's instances."""
    answers: dict[str, str] = {}
    for child, reply in _answers(current, "/readyz", done):
        given = _json(reply).get("instances", {})
        for name in child.names:
            answer = given.get(name) if isinstance(given, dict) else None
            answers[name] = answer if isinstance(answer, str) else "unreachable: its sidecar did not answer"
    return answers


def _children(current: State) -> list[Child]:
    return current.children.children if current.children is not None else []
