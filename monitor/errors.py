"""Errors raised by the monitor; all derive from RqscopeError."""

from __future__ import annotations

from rqscope.tasks.errors import RqscopeError, SettingsError

__all__ = ["RqscopeError", "SettingsError"]
