"""POST /webhooks/<provider>: verify, store once, answer only after the commit.

The route is WSGI middleware in front of the Flask app, not a Flask view: it takes the
requests for /webhooks/<provider> and hands every other request to Flask. Flask's request
context, URL map and response object cost the web process ~300 us of CPU per delivery
under load, a third of the receiver's, for a route that needs none of them
(docs/decisions.md, "The webhook route is plain WSGI"). Flask still serves everything
else (health, readiness, its error pages), and `create_app` still returns the Flask app.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from inbox.config import Settings
from inbox.errors import DatabaseUnavailable, InvalidEvent, InvalidSignature, UnknownProvider
from inbox.logs import Lines
from inbox.metrics import web as metrics
from inbox.providers import Clock, Provider, get_provider
from inbox.web.allowlist import STRIPE_PROVIDERS, StripeAllowlist
from inbox.web.group_commit import GroupCommit

log = logging.getLogger("inbox.web")
PREFIX = "/webhooks/"
RETRY_AFTER_SECONDS = 5
# The two answers of the hot path, encoded once: the bytes jsonify makes for them.
STORED_BODY = b'{"duplicate":false,"received":true}\n'
DUPLICATE_BODY = b'{"duplicate":true,"received":true}\n'
FORBIDDEN_DETAIL = "this endpoint takes deliveries only from Stripe's webhook addresses"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Headers = list[tuple[str, str]]


def error_body(error: str, detail: str) -> bytes:
    """A JSON error answer, as jsonify writes it (sorted keys, compact): the format of
    every error the web process gives, from this route or from Flask."""
    return json.dumps({"detail": detail, "error": error}, separators=(",", ":")).encode() + b"\n"


class WebhookRoute:
    """Serves POST /webhooks/<provider>; passes every other request to `next_app`.

    One instance per app: settings, clock and the group commit are fixed for its life,
    and each provider is made on first use and then serves every request.
    """

    def __init__(self, next_app: WSGIApp, settings: Settings, clock: Clock,
                 inserter: GroupCommit, on_answer: Callable[[str, str], None] | None = None,
                 allowlist: StripeAllowlist | None = None) -> None:
        self._next_app = next_app
        self._settings = settings
        self._clock = clock
        self._inserter = inserter
        self._on_answer = on_answer  # (provider, outcome): the web's duties (alerts)
        self._providers: dict[str, Provider] = {}
        self._allowlist = allowlist  # None: STRIPE_WEBHOOK_IP_ALLOWLIST is off

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        name = _provider_name(environ.get("PATH_INFO", ""))
        if name is None:
            return self._next_app(environ, start_response)
        started = time.perf_counter()
        record: dict[str, object] = {"provider": name}
        try:
            status, headers, body = self._receive(environ, name, record)
        finally:
            seconds = time.perf_counter() - started
            record["ms"] = round(seconds * 1000, 2)
            log.info(Lines("request", (record,)))  # inbox/logs.py: text or JSON
            known = (name if name in self._providers or name in STRIPE_PROVIDERS
                     else metrics.UNKNOWN_PROVIDER)
            outcome = str(record.get("outcome", "internal_error"))
            metrics.record_answer(known, outcome, seconds)
            if self._on_answer is not None:
                self._on_answer(known, outcome)
        start_response(f"{status} {HTTP_STATUS_CODES[status]}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers,
        ])
        return [body]

    def _receive(self, environ: dict[str, Any], name: str, record: dict[str, object]
                 ) -> tuple[int, Headers, bytes]:
        """Do the work and fill `record` (the request's log line) with what happened."""
        if self._allowlist is not None and name in STRIPE_PROVIDERS:
            client = self._allowlist.refused(environ)  # before the body, before the database
            if client is not None:
                record["client"] = client
                return _error(record, 403, "forbidden", FORBIDDEN_DETAIL, outcome="forbidden")
        if environ["REQUEST_METHOD"] != "POST":
            return _http_error(record, MethodNotAllowed(), [("Allow", "POST")])
        try:
            provider = self._provider(name)
            event = provider.receive(self._read_body(environ), EnvironHeaders(environ))
            record.update(event_id=event.event_id, type=event.event_type)
            stored = self._inserter.insert(event)
        except HTTPException as exc:  # 413 from the body limit
            return _http_error(record, exc)
        except UnknownProvider as exc:
            return _error(record, 404, "unknown_provider", str(exc))
        except InvalidSignature as exc:
            return _error(record, 400, "InvalidSignature", str(exc), outcome="invalid_signature")
        except InvalidEvent as exc:
            return _error(record, 400, "InvalidEvent", str(exc), outcome="invalid_event")
        except DatabaseUnavailable:
            return _error(record, 503, "database_unavailable", "try again later",
                          [("Retry-After", str(RETRY_AFTER_SECONDS))], outcome="unavailable")
        except Exception:  # a bug: the provider retries, and the log has the traceback
            log.exception("receiving a %s delivery failed", name)
            return _error(record, 500, "internal_error", "the event was not stored")
        record["outcome"] = "stored" if stored else "duplicate"
        return 200, [], STORED_BODY if stored else DUPLICATE_BODY

    def _provider(self, name: str) -> Provider:
        """The provider called `name` (or UnknownProvider)."""
        provider = self._providers.get(name)
        if provider is None:
            provider = get_provider(name, self._settings, self._clock)
            self._providers[name] = provider
        return provider

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        """The raw body, or 413 when it is longer than the limit.

        Werkzeug answers 413 from Content-Length alone, and stops reading a chunked body at
        the limit it is given (silently, so one byte past ours tells us it was too big).
        """
        limit = self._settings.max_body_bytes
        body = get_input_stream(environ, max_content_length=limit + 1).read()
        if len(body) > limit:
            raise RequestEntityTooLarge()
        return body


def _provider_name(path: str) -> str | None:
    """The <provider> of /webhooks/<provider>, or None for any other path."""
    if not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX):]
    if not name or "/" in name:
        return None
    # WSGI gives the path as latin-1 text of its bytes; URLs are UTF-8.
    return name.encode("latin-1").decode("utf-8", "replace")


# The outcome (log line, metrics) of Werkzeug's HTTP errors, by status.
HTTP_ERROR_OUTCOMES = {413: "too_large", 405: "method_not_allowed"}


def _error(record: dict[str, object], status: int, error: str, detail: str,
           headers: Headers | None = None, *, outcome: str | None = None
           ) -> tuple[int, Headers, bytes]:
    """An error answer named `error` in its body; `outcome` (default: `error`) is what the
    request's log line and the metrics call it (web.OUTCOMES)."""
    record["outcome"] = outcome or error
    record["status"] = status
    return status, headers or [], error_body(error, detail)


def _http_error(record: dict[str, object], exc: HTTPException, headers: Headers | None = None
                ) -> tuple[int, Headers, bytes]:
    """Werkzeug's HTTP errors, answered as Flask's error handler answers them."""
    status = exc.code or 500
    return _error(record, status, exc.name, exc.description or "", headers,
                  outcome=HTTP_ERROR_OUTCOMES.get(status, "bad_request"))
