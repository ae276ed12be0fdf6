"""The JSON series behind every chart: runs by outcome, queue depth and latency, task percentiles."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from rqscope.monitor import queue_history, series
from rqscope.monitor.rollups import WINDOWS, read_window
from rqscope.web import names
from rqscope.web.args import choice_arg
from rqscope.web.state import state

bp = Blueprint("api_series", __name__, url_prefix="/api/series")
bp.record_once(names.install)
RUN_WINDOWS = tuple(WINDOWS)
QUEUE_WINDOWS = tuple(queue_history.WINDOWS)


@bp.get("/runs")
def runs() -> Response:
    window = choice_arg("window", "1h", RUN_WINDOWS)
    return jsonify(series.runs(read_window(state().redis, window)))


@bp.get("/queues/<name:queue>")
def queue(queue: str) -> Response:
    window = choice_arg("window", "1h", QUEUE_WINDOWS)
    return jsonify(series.queue(queue_history.read(state().redis, queue, window)))


@bp.get("/queues/<name:queue>/runs")
def queue_runs(queue: str) -> Response:
    window = choice_arg("window", "1h", RUN_WINDOWS)
    return jsonify(series.runs(read_window(state().redis, window, queue=queue)))


@bp.get("/tasks/<name:task>")
def task(task: str) -> Response:
    window = choice_arg("window", "1h", RUN_WINDOWS)
    found = read_window(state().redis, window, task=task)
    return jsonify(series.task(found) | {"rates": series.runs(found)["outcomes"]})
