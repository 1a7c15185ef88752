"""GET /metrics: the Prometheus scrape, behind a bearer token.

Served only when INBOX_METRICS_TOKEN is set (404 otherwise, as if there were no such
page); a request without `Authorization: Bearer <token>`, or with another token, gets 401.
The token is compared in constant time. The figures describe the system (payload-free
counts), but they still tell an outsider how much business flows through: not public.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import AbstractContextManager

from flask import Blueprint, Response, abort, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from inbox import db
from inbox.metrics import multiprocess, web
from inbox.metrics.system import SystemCollector

ConnectionSource = Callable[[], AbstractContextManager[db.Connection]]


def blueprint(token: str | None, connection: ConnectionSource) -> Blueprint:
    """The /metrics route for this token, reading the system through `connection`."""
    bp = Blueprint("metrics", __name__)
    system = SystemCollector(connection)

    @bp.get("/metrics")
    def metrics() -> Response:
        if not token:
            abort(404)
        if not _authorized(request.headers.get("Authorization", ""), token):
            return Response("a bearer token is required\n", status=401, mimetype="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        registry = _scrape_registry()
        registry.register(system)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return bp


def _authorized(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def _scrape_registry() -> CollectorRegistry:
    """Every web process's figures under gunicorn, this process's own otherwise."""
    if multiprocess.enabled():
        return multiprocess.scrape_registry()
    registry = CollectorRegistry()
    for collector in (web.WEBHOOK_REQUESTS, web.WEBHOOK_SECONDS, web.GROUP_COMMIT_EVENTS):
        registry.register(collector)
    return registry
