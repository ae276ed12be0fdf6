"""The rqscope sidecar: Flask app factory for the dashboard, JSON API, enqueue API and /metrics."""

from web.app import create_app

__all__ = ["create_app"]
