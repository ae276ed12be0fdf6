"""`?redis=<name>` scopes a request to one watched Redis instance; `GET /api/instances` lists them all."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, jsonify, render_template, request, url_for
from rqscope.monitor.instances import InstanceConfig
from rqscope.monitor.settings import redact_url
from rqscope.monitor.snapshot import Snapshot
from rqscope.web import front
from rqscope.web.state import RELAYED, SELECTED, Instance, State, state
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
        current = state()
        if current.children is not None and name in current.children.by_name:
            g.setdefault(RELAYED, name)  # served by a sidecar the front started (web.front)
            return
        if name not in current.instances:
            raise NotFound(f"no Redis instance named {name[:64]!r} (see /api/instances)")
        if name != current.default_name:  # the default's links stay as they were
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
        "instance_names": current.names,
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
    return here(**{PARAMETER: None if name == state().default_name else name})


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


def rows(current: State) -> tuple[dict[str, dict[str, Any]], dict[str, Snapshot | None]]:
    """Every instance's /api/instances row by name, in the configured order, and this process's snapshots."""
    configs = {config.name: config for config in current.settings.instances}
    reads = {name: functools.partial(_snapshot, instance) for name, instance in current.instances.items()}
    done = current.fanout.calls({**reads, **front.child_reads(current, "/api/instances")}, kind="snapshot")
    read = {name: done[name] for name in reads}
    found = {name: describe(configs.get(name), name, snapshot) for name, snapshot in read.items()}
    found |= front.instance_rows(current, done)
    return {name: found[name] for name in current.names if name in found}, read


def _snapshot(instance: Instance) -> Snapshot:
    return instance.snapshots.get()


@bp.get("/api/instances")
def api_instances() -> Response:
    current = state()
    return jsonify(default=current.default_name, instances=list(rows(current)[0].values()))


@bp.get("/instances")
def overview() -> str:
    """Every instance's headline figures, read at once: one that does not answer in time is shown unreachable."""
    current = state()
    found, read = rows(current)
    sections = []
    for name, row in found.items():
        snapshot = read.get(name)
        queues = []
        if snapshot is not None and snapshot.redis.up:
            queues = sorted(snapshot.queues, key=lambda q: (-q.counts["failed"], -q.queued, q.name))
        sections.append(
            {
                "row": row,
                "error": "no answer in time" if snapshot is None else snapshot.redis.error,
                "queues": queues[:QUEUES_SHOWN],
                "more": max(0, len(queues) - QUEUES_SHOWN),
                "redis": None if name == current.default_name else name,  # the default's links take no ?redis=
                "relayed": name not in current.instances,  # its queues are on its own overview
            }
        )
    return render_template("instances/overview.html", sections=sections)
