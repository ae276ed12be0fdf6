"""`?redis=<name>` scopes a request to one watched Redis instance; `GET /api/instances` lists them all."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, jsonify, render_template, request, url_for
from rqscope.monitor.instances import InstanceConfig
from rqscope.monitor.settings import redact_url
from rqscope.monitor.snapshot import Snapshot
from rqscope.web.state import SELECTED, State, state
from werkzeug.exceptions import BadRequest, NotFound

PARAMETER = "redis"
QUEUES_SHOWN = 10  # per instance on /instances: the ones with most failed, then most queued jobs
bp = Blueprint("instances", __name__)


def install(app: Flask) -> None:
    """Pick the request's instance before any view reads Redis, and keep it in every link the page builds."""

    @app.before_request
    def select() -> None:
        try:
            name = request.args.get(PARAMETER)
        except UnicodeDecodeError:  # a query string that is not UTF-8 (gunicorn refuses it before this)
            raise BadRequest("the query string is not UTF-8") from None
        if name is None or request.routing_exception is not None:  # a 404 or 405 of the route itself comes first
            return
        if name not in state().instances:
            raise NotFound(f"no Redis instance named {name[:64]!r} (see /api/instances)")
        if name != state().first.name:  # the first is the default: its links stay as they were
            g.setdefault(SELECTED, name)

    @app.url_defaults
    def keep(endpoint: str, values: dict[str, Any]) -> None:
        selected = g.get(SELECTED)
        if selected is not None and endpoint != "static" and PARAMETER not in values:
            values[PARAMETER] = selected

    app.context_processor(_page_context)
    app.register_blueprint(bp)


def _page_context() -> dict[str, Any]:
    current = state()
    return {
        "instance_names": list(current.instances),
        "instance": current.current.name,
        "selected_instance": g.get(SELECTED),  # None on the default instance, whose URLs carry no ?redis=
        "here": here,
        "on_instance": on_instance,
    }


def here(**changes: str | None) -> str:
    """This page's URL with some query arguments replaced (None drops one); the overview where there is no page.

    The path is built again from the routed endpoint and arguments, so a queue name keeps its exact encoding;
    the query is encoded here rather than handed to url_for, whose `_scheme`/`_external` a caller could set.
    """
    rule = request.url_rule
    if request.endpoint is None or rule is None or "GET" not in (rule.methods or ()):
        path = url_for("dashboard.overview", **{PARAMETER: None})
        query = [(k, v) for k, v in changes.items() if k == PARAMETER and v is not None]
    else:
        path = url_for(request.endpoint, **(request.view_args or {}), **{PARAMETER: None})
        query = [(k, v) for k, v in request.args.items(multi=True) if k not in changes]
        query += [(k, v) for k, v in changes.items() if v is not None]
    return path + ("?" + urlencode(query) if query else "")


def on_instance(name: str) -> str:
    """This page on another instance: the first (the default) takes no ?redis=."""
    return here(**{PARAMETER: None if name == state().first.name else name})


def describe(config: InstanceConfig | None, name: str, snapshot: Snapshot | None) -> dict[str, Any]:
    """One instance for the API: where it is (password hidden), and its headline figures when it answered."""
    row: dict[str, Any] = {"name": name, "up": bool(snapshot is not None and snapshot.redis.up)}
    if config is not None:
        kind = "sentinel" if config.sentinel_master else "cluster" if config.cluster else "url"
        row.update(kind=kind, prefix=config.prefix, address=config.sentinel_master or redact_url(config.url))
    if snapshot is not None and snapshot.redis.up:
        row.update(
            queues=len(snapshot.queues),
            queued=sum(q.queued for q in snapshot.queues),
            failed=sum(q.counts["failed"] for q in snapshot.queues),
            workers=len(snapshot.live_workers),
        )
    return row


def snapshots(current: State) -> dict[str, Snapshot | None]:
    """Every instance's snapshot, read concurrently; None for one that did not answer in time."""
    return current.fanout.each(current.instances, lambda instance: instance.snapshots.get(), kind="snapshot")


@bp.get("/api/instances")
def api_instances() -> Response:
    current = state()
    configs = {config.name: config for config in current.settings.instances}
    read = snapshots(current)
    return jsonify(
        default=current.first.name,
        instances=[describe(configs.get(name), name, snapshot) for name, snapshot in read.items()],
    )


@bp.get("/instances")
def overview() -> str:
    """Every instance's headline figures, read at once: one that does not answer in time is shown unreachable."""
    current = state()
    configs = {config.name: config for config in current.settings.instances}
    read = snapshots(current)
    sections = []
    for name, snapshot in read.items():
        queues = []
        if snapshot is not None and snapshot.redis.up:
            queues = sorted(snapshot.queues, key=lambda q: (-q.counts["failed"], -q.queued, q.name))
        sections.append(
            {
                "row": describe(configs.get(name), name, snapshot),
                "error": "no answer in time" if snapshot is None else snapshot.redis.error,
                "queues": queues[:QUEUES_SHOWN],
                "more": max(0, len(queues) - QUEUES_SHOWN),
                "redis": None if name == current.first.name else name,  # the default's links take no ?redis=
            }
        )
    return render_template("instances/overview.html", sections=sections)
