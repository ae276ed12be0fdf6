"""The rqscope sidecar: Flask app factory for the dashboard, JSON API, enqueue API and /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """Build the sidecar app (see web.app.create_app); imported lazily so `rqscope worker` stays lean."""
    from rqscope.web.app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
