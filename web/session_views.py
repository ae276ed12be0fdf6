"""Signing in and out of the dashboard."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from rqscope.web.auth import check_user, csrf_ok, csrf_token
from rqscope.web.state import state
from werkzeug.wrappers import Response

bp = Blueprint("session_views", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.overview")


@bp.get("/login")
def login_form() -> str:
    return render_template("session/login.html", next=_safe_next(request.args.get("next")))


@bp.post("/login")
def login() -> Response | tuple[str, int]:
    csrf_token()
    if not csrf_ok():
        abort(403, "the sign-in form expired; reload the page and try again")
    name = request.form.get("username", "")[:200]
    password = request.form.get("password", "")[:1000]
    user = check_user(state().settings, name, password)
    if user is None:
        return render_template("session/login.html", next=_safe_next(request.form.get("next")),
                               error="Unknown user or wrong password."), 401  # fmt: skip
    session.clear()
    session["user"], session["role"] = user.name, user.role
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout() -> Response:
    if not csrf_ok():
        abort(403, "the form expired; reload the page and try again")
    session.clear()
    flash("Signed out.")
    return redirect(url_for("session_views.login_form"))
