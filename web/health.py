"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import functools

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric
from redis import RedisError
from rqscope.monitor.exposition import render_labelled
from rqscope.monitor.exposition_merge import merge
from rqscope.monitor.families import unreachable
from rqscope.web import front
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
    reads = {name: functools.partial(_ping, instance) for name, instance in current.instances.items()}
    done = current.fanout.calls({**reads, **front.child_reads(current, "/readyz")}, kind="ping")
    found = {name: done[name] for name in reads} | front.readiness(current, done)
    answers = {name: found.get(name) or "unreachable: no answer in time" for name in current.names}
    reachable = [name for name, answer in answers.items() if answer == "ok"]
    status = "ok" if len(reachable) == len(answers) else "degraded" if reachable else "unavailable"
    body = {"status": status, "redis": answers[current.default_name], "instances": answers}
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
    whole = "redis" not in request.args
    chosen = current.instances if whole else {current.current.name: current.current}
    reads = {name: functools.partial(_families, instance) for name, instance in chosen.items()}
    done = current.fanout.calls({**reads, **(front.child_reads(current, "/metrics") if whole else {})}, "metrics")
    groups = [(name, done[name] or unreachable()) for name in reads]
    body = render_labelled(groups)
    if whole and current.children is not None:  # and every other RQ prefix's instances, from its sidecar
        body = merge([body, *front.metrics_parts(current, done)])
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _families(instance: Instance) -> list[Metric]:
    return list(instance.metrics.collect())
