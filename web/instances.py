"""`?redis=<name>` scopes a request to one watched Redis instance; `GET /api/instances` lists them all."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request
from rqscope.monitor.instances import InstanceConfig
from rqscope.monitor.settings import redact_url
from rqscope.monitor.snapshot import Snapshot
from rqscope.web.state import SELECTED, State, state
from werkzeug.exceptions import NotFound

PARAMETER = "redis"
bp = Blueprint("instances", __name__)


def install(app: Flask) -> None:
    """Pick the request's instance before any view reads Redis, and keep it in every link the page builds."""

    @app.before_request
    def select() -> None:
        name = request.args.get(PARAMETER)
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

    app.context_processor(lambda: {"instance_names": list(state().instances), "instance": state().current.name})
    app.register_blueprint(bp)


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
    return current.fanout.each(current.instances, lambda instance: instance.snapshots.get())


@bp.get("/api/instances")
def api_instances() -> Response:
    current = state()
    configs = {config.name: config for config in current.settings.instances}
    read = snapshots(current)
    return jsonify(
        default=current.first.name,
        instances=[describe(configs.get(name), name, snapshot) for name, snapshot in read.items()],
    )
