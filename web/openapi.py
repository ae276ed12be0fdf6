"""GET /api/openapi.json: the JSON API described as OpenAPI 3.0."""

from __future__ import annotations

import copy
import functools
from typing import Any

from flask import Blueprint, Response, jsonify
from rqscope.monitor.jobs import MAX_PER_PAGE, ORDERS
from rqscope.monitor.paused import MAX_SUSPEND_SECONDS
from rqscope.monitor.snapshot import JOB_STATES
from rqscope.web.api import DURATION_PATTERN
from rqscope.web.state import state

bp = Blueprint("openapi", __name__)

ERROR = {
    "description": "what is wrong",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): ERROR for code in codes}


OBJECT = {"type": "object"}
QUEUE = {"name": "queue", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
         "description": "percent-encode every byte but A-Z a-z 0-9 - _ ~; write the names . and .. as %2E; and %2E%2E;"}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
TEXT = {"type": "string", "maxLength": 200, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
FILTER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "func": TEXT,
        "exc": TEXT,
        "q": TEXT,
        "ids": {"type": "array", "maxItems": 10000, "items": {"type": "string", "minLength": 1, "maxLength": 128}},
    },
}
READ = _errors(401, 403, 503)
NULLABLE_TEXT = {"type": ["string", "null"]}
CRON = {
    "type": "object", "required": ["schedulers", "jobs"],
    "properties": {
        "schedulers": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "hostname": NULLABLE_TEXT, "pid": {"type": ["integer", "null"]},
            "last_heartbeat": {**NULLABLE_TEXT, "format": "date-time"}, "alive": {"type": "boolean"}}}},
        "jobs": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "func": NULLABLE_TEXT, "queue": NULLABLE_TEXT, "cron": NULLABLE_TEXT,
            "interval": {"type": ["number", "null"]}, "last_enqueued_at": {**NULLABLE_TEXT, "format": "date-time"},
            "next_enqueue_at": {**NULLABLE_TEXT, "format": "date-time"}, "overdue_seconds": {"type": "number"},
            "scheduler": {"type": "string"}}}},
    },
}
INSTANCES = {
    "type": "object", "required": ["default", "instances"],
    "properties": {
        "default": {"type": "string"},
        "instances": {"type": "array", "items": {"type": "object", "required": ["name", "up"], "properties": {
            "name": {"type": "string"}, "up": {"type": "boolean"},
            "kind": {"type": "string", "enum": ["url", "cluster", "sentinel"]}, "prefix": {"type": "string"},
            "address": {"type": "string"}, "queues": {"type": "integer"}, "queued": {"type": "integer"},
            "failed": {"type": "integer"}, "workers": {"type": "integer"}}}},
    },
}  # fmt: skip
TASK_JOB = {
    "get": {"summary": "A job's status, times, result and error", "responses": {"200": _json(OBJECT), **_errors(404, 503)}},
    "delete": {"summary": "Cancel a queued job or stop a running one",
               "responses": {"200": _json(OBJECT), "202": _json(OBJECT), **_errors(401, 403, 404, 409, 422, 503)}},
}
TASK_ITEM = {
    "type": "object", "required": ["task"], "additionalProperties": False,
    "properties": {
        "task": {"type": "string"}, "args": {"type": "array"}, "kwargs": {"type": "object"},
        "queue": {"type": "string"}, "job_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "in": {"oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": "^[0-9.]+ *[smhd]?$"}],
               "description": "run after this delay: seconds, or like 90s, 5m, 2h, 1d (at most RQSCOPE_MAX_DELAY)"},
        "at": {"type": "string", "format": "date-time",
               "description": "run at this ISO 8601 time, which must name its UTC offset; not with 'in'"},
    },
}
DEAD_LETTER = {
    "type": "object",
    "description": "a notification that was never delivered: receiver name, alert, status, reason, time (epoch s)",
    "properties": {"receiver": {"type": "string"}, "status": {"type": "string", "enum": ["firing", "resolved"]},
                   "alert": OBJECT, "reason": {"type": "string"}, "at": {"type": "number"},
                   "attempts": {"type": "integer"}},
}
ALERTS = {
    "type": "object",
    "properties": {"alerts": {"type": "array", "items": OBJECT}, "history": {"type": "array", "items": OBJECT},
                   "dead_letters": {"type": "array", "items": DEAD_LETTER}},
}
ACT = _errors(400, 401, 403, 415, 503)
CONTROL_QUEUE = {
    "type": "object", "required": ["queue", "url_name", "paused", "changed"],
    "properties": {"queue": {"type": "string"}, "url_name": {"type": "string"}, "paused": {"type": "boolean"},
                   "changed": {"type": "boolean", "description": "false when the queue was already in that state"}},
}
CONTROL_WORKERS = {
    "type": "object", "required": ["suspended", "ttl"],
    "properties": {"suspended": {"type": "boolean"}, "ttl": {"type": ["integer", "null"]}},
}
SECTION = {"type": "object", "additionalProperties": {"type": ["string", "number"]}}
REDIS_INFO = {
    "type": "object", "required": ["up", "server", "memory", "clients", "persistence", "replication", "keyspace", "pool"],
    "properties": {
        "up": {"type": "boolean"}, "read_at": {"type": "string", "format": "date-time"},
        "server": SECTION, "memory": SECTION, "clients": SECTION, "persistence": SECTION, "replication": SECTION,
        "keyspace": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "keys": {"type": "integer"}, "expires": {"type": "integer"}, "avg_ttl": {"type": "integer"}}}},
        "pool": {"type": "object", "properties": {"in_use": {"type": "integer"}, "idle": {"type": "integer"},
                                                  "max": {"type": "integer"}}},
    },
}
REDIS_DOWN = {"type": "object", "required": ["error", "up"], "properties": {
    "error": {"type": "string"}, "up": {"type": "boolean", "const": False}, "pool": OBJECT}}
NUMBERS = {"type": "array", "items": {"type": ["number", "null"]}}
SERIES_BASE = {"window": {"type": "string"}, "step_seconds": {"type": "integer", "enum": [60, 3600]},
               "t": {"type": "array", "items": {"type": "integer"}, "description": "each bin's start, epoch seconds"}}
RUNS_SERIES = {
    "type": "object", "required": ["window", "step_seconds", "t", "outcomes", "counts"],
    "description": "runs per second by outcome in each bin, oldest first; the last bin is the current one, its "
                   "rate taken over the time elapsed in it",
    "properties": {**SERIES_BASE, "unit": {"type": "string", "enum": ["runs/s"]},
                   "outcomes": {"type": "object", "additionalProperties": NUMBERS},
                   "counts": {"type": "object", "additionalProperties": {"type": "integer"}}},
}
QUEUE_SERIES = {
    "type": "object", "required": ["window", "t", "queued", "latency_seconds"],
    "description": "one point a minute, recorded by the alert leader; null where none was recorded",
    "properties": {**SERIES_BASE, "queued": NUMBERS, "latency_seconds": NUMBERS},
}
TASK_SERIES = {
    "type": "object", "required": ["window", "t", "runs", "failure_percent", "quantiles_seconds", "histogram"],
    "description": "per bin: runs, failure % and p50/p95/p99 run time estimated from the histogram buckets; the "
                   "window's histogram (le: bucket upper bounds in seconds)",
    "properties": {**SERIES_BASE, "runs": {"type": "array", "items": {"type": "integer"}},
                   "failure_percent": NUMBERS, "quantiles_seconds": {"type": "object", "additionalProperties": NUMBERS},
                   "histogram": {"type": "object", "properties": {"le": {"type": "array", "items": {"type": "string"}},
                                                                 "count": {"type": "array", "items": {"type": "integer"}}}},
                   "rates": {"type": "object", "additionalProperties": NUMBERS}},
}
RUN_WINDOW = {"name": "window", "in": "query", "schema": {"type": "string", "enum": ["15m", "1h", "24h", "7d"]},
              "description": "15m and 1h: minute bins; 24h and 7d: hour bins (default 1h)"}
TASK = {"name": "task", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
        "description": "a task name, encoded as a queue name is"}
SERIES_ERRORS = _errors(400, 401, 403, 503)

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "rqscope", "version": "1", "description": "Observability sidecar and dashboard for RQ."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "basic": {"type": "http", "scheme": "basic"}},
        "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}},
    },
    "security": [{"bearer": []}, {"basic": []}, {}],
    "paths": {
        "/api/tasks": {
            "post": {
                "summary": "Enqueue a registered task, now or later",
                "requestBody": {"required": True, "content": {"application/json": {"schema": TASK_ITEM}}},
                "responses": {"202": _json(OBJECT, "enqueued (status queued) or scheduled (status scheduled)"),
                              "200": _json(OBJECT, "a job with this job_id already exists"), **ACT},
            }
        },
        "/api/tasks/batch": {
            "post": {
                "summary": "Enqueue up to RQSCOPE_MAX_BATCH tasks at once, all or nothing",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["tasks"], "additionalProperties": False,
                    "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": 1000, "items": TASK_ITEM}}}}}},
                "responses": {"202": _json({"type": "object", "properties": {
                    "ids": {"type": "array", "items": {"type": "string"}, "description": "in request order"},
                    "created": {"type": "integer", "description": "items whose job_id did not exist yet"}}}),
                    **ACT},
            },
            **TASK_JOB,  # GET and DELETE read and cancel the job whose id is "batch", as for any other id
        },
        "/api/tasks/{job_id}": {"parameters": [JOB_ID], **TASK_JOB},
        "/api/queues": {"get": {"summary": "Queues with counts and latency", "responses": {"200": _json(OBJECT), **READ}}},
        "/api/workers": {"get": {
            "summary": "Workers and their health: every worker, or one page of them (by name) with page or per_page",
            "parameters": [{"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000}},
                           {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
            "responses": {"200": _json({"type": "object", "required": ["workers"], "properties": {
                "workers": {"type": "array", "items": OBJECT}, "total": {"type": "integer"},
                "page": {"type": "integer"}, "pages": {"type": "integer"}, "per_page": {"type": "integer"},
                "suspended": {"type": "boolean", "description": "RQ's suspension (rq suspend) is set"}}}),
                **_errors(400, 401, 403, 503)}}},
        "/api/workers/suspend": {"post": {
            "summary": "Suspend every RQ worker (RQ's own suspension, as `rq suspend`): each finishes its job and "
                       "takes no new one; rqscope workers also stop waiting for one",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"ttl": {"type": "integer", "minimum": 1, "maximum": MAX_SUSPEND_SECONDS,
                                       "description": "seconds until the suspension ends by itself"}}}}}},
            "responses": {"200": _json(CONTROL_WORKERS), **ACT}}},
        "/api/workers/resume": {"post": {"summary": "Resume every RQ worker (as `rq resume`)",
                                         "responses": {"200": _json(CONTROL_WORKERS), **ACT}}},
        "/api/queues/{queue}/pause": {"parameters": [QUEUE], "post": {
            "summary": "Pause a queue: rqscope workers take no job from it (a stock rq worker ignores this)",
            "responses": {"200": _json(CONTROL_QUEUE), **ACT, **_errors(404)}}},
        "/api/queues/{queue}/resume": {"parameters": [QUEUE], "post": {
            "summary": "Resume a paused queue", "responses": {"200": _json(CONTROL_QUEUE), **ACT, **_errors(404)}}},
        "/api/redis": {"get": {
            "summary": "Redis INFO as the Redis page shows it (a whitelist: never the config or a password), read at "
                       "most once per snapshot interval, and rqscope's own connection pool",
            "responses": {"200": _json(REDIS_INFO), "503": _json(REDIS_DOWN, "Redis did not answer INFO"),
                          **_errors(401, 403)}}},
        "/api/queues/{queue}/jobs": {
            "parameters": [QUEUE],
            "get": {
                "summary": "A page of a queue's jobs in one state",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(JOB_STATES)}},
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000}},
                    {"name": "per_page", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE}},
                    {"name": "order", "in": "query", "schema": {"type": "string", "enum": list(ORDERS)}},
                    {"name": "func", "in": "query", "schema": TEXT},
                    {"name": "exc", "in": "query", "schema": TEXT},
                    {"name": "q", "in": "query", "schema": TEXT},
                ],
                "responses": {"200": _json({"type": "object", "required": ["total", "page", "per_page", "jobs"]}),
                              **_errors(400, 401, 403, 404, 503)},
            },
        },
        "/api/queues/{queue}/exceptions": {
            "parameters": [QUEUE],
            "get": {"summary": "Exception types among the newest failed jobs",
                    "responses": {"200": _json(OBJECT), **_errors(401, 403, 404, 503)}},
        },
        "/api/queues/{queue}/retry": {
            "parameters": [QUEUE],
            "post": {"summary": "Retry failed jobs: the given ids, or all matching the filter ({} is all)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": FILTER_SCHEMA}}},
                     "responses": {"200": _json(OBJECT), **ACT, **_errors(404)}},
        },
        "/api/queues/{queue}/registries/{registry}": {
            "parameters": [QUEUE, {"name": "registry", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": {"summary": "Empty a queue or registry",
                       "responses": {"200": _json(OBJECT), **_errors(401, 403, 404, 409, 503)}},
        },
        "/api/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": {"summary": "Everything about one job", "responses": {"200": _json(OBJECT), **_errors(401, 403, 404, 503)}},
            "delete": {"summary": "Delete a job", "responses": {"200": _json(OBJECT), **_errors(401, 403, 404, 422, 503)}},
        },
        "/api/jobs/{job_id}/retry": {
            "parameters": [JOB_ID],
            "post": {"summary": "Retry one failed job",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": OBJECT}}},
                     "responses": {"200": _json(OBJECT), **ACT, **_errors(404, 409, 422)}},
        },
        "/api/jobs/{job_id}/enqueue": {
            "parameters": [JOB_ID],
            "post": {"summary": "Enqueue a scheduled job now (409 unless it is scheduled, or when it is due and a "
                                "scheduler is running for its queue)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": OBJECT}}},
                     "responses": {"200": _json(OBJECT), **ACT, **_errors(404, 409, 422)}},
        },
        "/api/jobs/{job_id}/copy": {
            "parameters": [JOB_ID],
            "post": {"summary": "Enqueue a new job running a finished, failed, canceled or stopped job's registered "
                                "task with the same arguments on the same queue; 409 if its task is not registered "
                                "or its arguments are not plain values",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": OBJECT}}},
                     "responses": {"202": _json(OBJECT, "the new job: id, copy_of, status, status_url"), **ACT,
                                   **_errors(404, 409)}},
        },
        "/api/cron": {"get": {"summary": "RQ cron schedulers (alive: heartbeat within 90 s) and their cron jobs, with "
                                         "how many seconds each is past its due run; rq-scheduler's repeating jobs "
                                         "are listed with scheduler 'rq-scheduler'",
                              "responses": {"200": _json(CRON), **READ}}},
        "/api/instances": {"get": {"summary": "The Redis instances this sidecar watches, each read concurrently: "
                                              "name, kind, prefix, address (password hidden), up, and when up its "
                                              "queue, queued, failed and worker counts",
                                   "responses": {"200": _json(INSTANCES), **READ}}},
        "/api/alerts": {"get": {"summary": "Pending, firing and recently resolved alerts, their history, and the "
                                           "notifications that could never be delivered",
                                "responses": {"200": _json(ALERTS), **READ}}},
        "/api/silences": {
            "get": {"summary": "Silences", "responses": {"200": _json(OBJECT), **READ}},
            "post": {"summary": "Silence alerts whose labels match, for a duration",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["matchers"], "additionalProperties": False,
                         "properties": {"matchers": {"type": "object", "minProperties": 1, "maxProperties": 20,
                                                     "propertyNames": {"minLength": 1, "maxLength": 100},
                                                     "additionalProperties": {"type": "string", "maxLength": 200}},
                                        "duration": {"anyOf": [
                                            {"type": "string", "pattern": DURATION_PATTERN, "example": "2h"},
                                            {"type": "number", "exclusiveMinimum": 0, "maximum": 30 * 86400}]},
                                        "comment": {"type": "string", "maxLength": 1000}}}}}},
                     "responses": {"201": _json(OBJECT), **ACT}},
        },
        "/api/silences/{silence_id}": {
            "parameters": [{"name": "silence_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}],
            "delete": {"summary": "Expire a silence now", "responses": {"200": _json(OBJECT), **_errors(401, 403, 404, 503)}},
        },
        "/api/series/runs": {"get": {"summary": "Runs per second by outcome, all tasks (the overview's chart)",
                                     "parameters": [RUN_WINDOW], "responses": {"200": _json(RUNS_SERIES), **SERIES_ERRORS}}},
        "/api/series/queues/{queue}": {
            "parameters": [QUEUE],
            "get": {"summary": "A queue's depth and latency, one point a minute",
                    "parameters": [{"name": "window", "in": "query", "schema": {"type": "string", "enum": ["1h", "24h"]}}],
                    "responses": {"200": _json(QUEUE_SERIES), **SERIES_ERRORS}},
        },
        "/api/series/queues/{queue}/runs": {
            "parameters": [QUEUE],
            "get": {"summary": "Runs per second by outcome of the tasks run from one queue", "parameters": [RUN_WINDOW],
                    "responses": {"200": _json(RUNS_SERIES), **SERIES_ERRORS}},
        },
        "/api/series/tasks/{task}": {
            "parameters": [TASK],
            "get": {"summary": "One task's runs, failure %, run time percentiles and histogram", "parameters": [RUN_WINDOW],
                    "responses": {"200": _json(TASK_SERIES), **SERIES_ERRORS}},
        },
        "/api/audit": {
            "get": {"summary": "The newest audit entries",
                    "parameters": [{"name": "limit", "in": "query",
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                    "responses": {"200": _json(OBJECT), **_errors(400, 401, 403, 503)}},
        },
    },
}  # fmt: skip


REDIS = {"name": "redis", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
         "description": "the Redis instance (GET /api/instances); default: the first; 404 for an unknown name"}
for _item in SPEC["paths"].values():  # every route is scoped to one instance
    _item["parameters"] = [*_item.get("parameters", []), REDIS]
    for _method in ("get", "post", "put", "delete", "patch"):
        if _method in _item:
            _item[_method]["responses"].setdefault("404", ERROR)


@functools.lru_cache(maxsize=4)
def spec_for(instances: tuple[str, ...]) -> dict[str, Any]:
    """The spec with `redis` limited to this sidecar's instance names: any other is 404, by design."""
    spec = copy.deepcopy(SPEC)  # the copies of REDIS stay one shared dict, so one change reaches every path
    for item in spec["paths"].values():
        for parameter in item["parameters"]:
            if parameter["name"] == "redis":
                parameter["schema"] = {"type": "string", "enum": list(instances)}
    return spec


@bp.get("/api/openapi.json")
def openapi() -> Response:
    return jsonify(spec_for(tuple(state().instances)))
