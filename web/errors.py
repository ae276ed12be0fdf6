"""Error responses: JSON under /api, a page with the same banner for browsers, plain text otherwise."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from redis import RedisError
from rqscope.tasks.errors import JobIdConflictError, RqscopeError
from rqscope.web.bodies import limit_setting
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)

AUTHENTICATE = 'Bearer realm="rqscope"'


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def wants_html() -> bool:
    return not wants_json() and "text/html" in request.headers.get("Accept", "")


def error_response(status: int, message: str) -> Response:
    if wants_json():
        response = jsonify(error=message)
    elif wants_html():
        response = Response(render_template("error.html", status=status, message=message), mimetype="text/html")
    else:
        response = Response(message + "\n", mimetype="text/plain")
    response.status_code = status
    return response


def register(app: Flask) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        limit = request.max_content_length
        setting = limit_setting(app)
        return error_response(400, f"request body is larger than {limit} bytes ({setting})")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, exc.description or exc.name)
        for header in ("Allow", "Retry-After"):
            if value := exc.get_response().headers.get(header):
                response.headers[header] = value
        if exc.code == 401:
            response.headers["WWW-Authenticate"] = AUTHENTICATE
        return response

    @app.errorhandler(RqscopeError)
    def rqscope_error(exc: RqscopeError) -> Response:
        return error_response(409 if isinstance(exc, JobIdConflictError) else 400, str(exc))

    @app.errorhandler(RedisError)
    def redis_down(exc: RedisError) -> Response:
        log.warning("redis error during %s %s: %s", request.method, request.path, exc)
        return error_response(503, "Redis is unavailable; try again shortly")
