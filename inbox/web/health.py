"""GET /healthz (the process is up) and GET /readyz (it can take events)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from inbox.errors import DatabaseUnavailable
from inbox.web import store

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        problems = store.readiness(current_app.extensions["inbox.database"].pool)
    except DatabaseUnavailable as exc:
        problems = [str(exc)]
    if problems:
        return jsonify(status="unavailable", problems=problems), 503
    return jsonify(status="ok"), 200
