"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from redis import RedisError
from rqscope.monitor.exposition import render
from rqscope.web.access import metrics_endpoint, public
from rqscope.web.state import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
@public
def readyz() -> tuple[Response, int]:
    try:
        state().redis.ping()
    except RedisError as exc:
        return jsonify(status="unavailable", redis=f"unreachable: {type(exc).__name__}"), 503
    return jsonify(status="ok", redis="ok"), 200


@bp.get("/metrics")
@metrics_endpoint
def metrics() -> Response:
    return Response(render(state().metrics.collect()), mimetype=CONTENT_TYPE_LATEST)
