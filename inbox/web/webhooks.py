"""POST /webhooks/<provider>: verify, store once, answer only after the commit."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from inbox.errors import DatabaseUnavailable, InvalidEvent, InvalidSignature, UnknownProvider
from inbox.providers import Provider, get_provider

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("inbox.web")
RETRY_AFTER_SECONDS = 5
# The two answers of the hot path, encoded once: the same bytes jsonify would make, without
# its JSON provider and response machinery on every request.
STORED_BODY = b'{"duplicate":false,"received":true}\n'
DUPLICATE_BODY = b'{"duplicate":true,"received":true}\n'


@bp.post("/webhooks/<provider>")
def receive(provider: str) -> Response:
    started = time.perf_counter()
    record: dict[str, object] = {"provider": provider}
    try:
        response = _receive(provider, record)
    except HTTPException as exc:  # 413 from the body limit
        record.update(outcome=exc.name, status=exc.code)
        raise
    finally:
        record["ms"] = round((time.perf_counter() - started) * 1000, 2)
        log.info(json.dumps(record))
    return response


def _receive(provider_name: str, record: dict[str, object]) -> Response:
    """Do the work and fill `record` (the request's log line) with what happened."""
    extensions = current_app.extensions
    settings = extensions["inbox.settings"]
    try:
        provider = _provider(extensions, provider_name)
        event = provider.receive(_read_body(settings.max_body_bytes), request.headers)
        record.update(event_id=event.event_id, type=event.event_type)
        stored = extensions["inbox.database"].inserter.insert(event)
    except UnknownProvider as exc:
        return _answer(record, 404, "unknown_provider", str(exc))
    except (InvalidSignature, InvalidEvent) as exc:
        return _answer(record, 400, type(exc).__name__, str(exc))
    except DatabaseUnavailable:
        response = _answer(record, 503, "database_unavailable", "try again later")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    record["outcome"] = "stored" if stored else "duplicate"
    return Response(STORED_BODY if stored else DUPLICATE_BODY, mimetype="application/json")


def _provider(extensions: dict[str, Any], name: str) -> Provider:
    """The app's provider called `name`, made on first use: settings and clock are fixed
    for the app's life, so one instance serves every request (or UnknownProvider)."""
    providers = extensions.setdefault("inbox.providers", {})
    provider = providers.get(name)
    if provider is None:
        provider = get_provider(name, extensions["inbox.settings"], extensions["inbox.clock"])
        providers[name] = provider
    return provider


def _read_body(max_bytes: int) -> bytes:
    """The raw body, or 413 when it is longer than `max_bytes` (chunked bodies included)."""
    body = request.get_data(cache=False)
    if len(body) > max_bytes:
        raise RequestEntityTooLarge()
    return body


def _answer(record: dict[str, object], status: int, outcome: str, detail: str) -> Response:
    record["outcome"] = outcome
    record["status"] = status
    response = jsonify(error=outcome, detail=detail)
    response.status_code = status
    return response
