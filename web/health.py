"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from redis import RedisError
from rqscope.monitor.exposition import render_labelled
from rqscope.monitor.families import unreachable
from rqscope.web.access import metrics_endpoint, public
from rqscope.web.state import Instance, state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
@public
def readyz() -> tuple[Response, int]:
    """Ready while any instance answers (the others are shown as down, not the whole sidecar); each is listed."""
    current = state()
    answers = {
        name: answer or "unreachable: no answer in time"
        for name, answer in current.fanout.each(current.instances, _ping, kind="ping").items()
    }
    reachable = [name for name, answer in answers.items() if answer == "ok"]
    status = "ok" if len(reachable) == len(answers) else "degraded" if reachable else "unavailable"
    body = {"status": status, "redis": answers[current.first.name], "instances": answers}
    return jsonify(body), 200 if reachable else 503


def _ping(instance: Instance) -> str:
    try:
        instance.redis.ping()
    except RedisError as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


@bp.get("/metrics")
@metrics_endpoint
def metrics() -> Response:
    """Every instance's families (or the one `?redis=` names), collected concurrently, each sample labelled with
    its instance's name."""
    current = state()
    chosen = {current.current.name: current.current} if "redis" in request.args else current.instances
    collected = current.fanout.each(chosen, lambda i: list(i.metrics.collect()), kind="metrics")
    groups = [(name, families if families is not None else unreachable()) for name, families in collected.items()]
    return Response(render_labelled(groups), mimetype=CONTENT_TYPE_LATEST)
