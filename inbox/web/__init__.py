"""The receiver: a Flask app that verifies webhooks, stores them and answers.

It does no business work. `create_app()` is what the Procfile's gunicorn serves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from flask import Flask, Response
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException

from inbox import db
from inbox.config import Settings
from inbox.console import auth as console_auth
from inbox.console import views as console_views
from inbox.metrics import endpoint as metrics_endpoint
from inbox.metrics import web as web_metrics
from inbox.providers import Clock, ReceivedEvent
from inbox.web import health, store, webhooks
from inbox.web.allowlist import StripeAllowlist
from inbox.web.duties import WebDuties
from inbox.web.group_commit import GroupCommit
from inbox.web.wakeup import WakeNotifier

# The receiver's statements are tiny: anything slower means the database is in trouble,
# and the provider should retry rather than wait on us.
STATEMENT_TIMEOUT_SECONDS = 5.0


class Database:
    """The process's connection pool, made on first use (after gunicorn forks), its group
    commit that stores the events of concurrent requests together, and its notifier that
    wakes idle workers after inserts commit."""

    def __init__(self, settings: Settings, max_size: int) -> None:
        self._settings = settings
        self._max_size = max_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self.notifier = WakeNotifier(self._connect_notifier)
        self.inserter = GroupCommit(self._insert_events, lambda: self.notifier.wake())

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = db.create_pool(
                        self._settings.require_database_url(),
                        max_size=self._max_size,
                        wait_seconds=self._settings.db_wait_seconds,
                        statement_timeout_seconds=STATEMENT_TIMEOUT_SECONDS,
                        application_name="inbox-web",
                        # No liveness round trip per request: a connection broken by a
                        # database restart is retried once (the insert is idempotent).
                        check=False,
                    )
        return self._pool

    def _insert_events(self, events: Sequence[ReceivedEvent]) -> Sequence[bool | Exception]:
        """One insert of the group commit (and its size, for the metrics)."""
        web_metrics.record_group_commit(len(events))
        return store.insert_events(self.pool, events)

    def _connect_notifier(self) -> db.Connection:
        """The notifier thread's own connection, outside the pool: requests never wait on
        it, and it never waits on them."""
        return db.connect(self._settings.require_database_url(),
                          application_name="inbox-web-wakeup")

    def close(self) -> None:
        """Stop the notifier and close the pool; both are made afresh if used again."""
        self.notifier.close()
        self.notifier = WakeNotifier(self._connect_notifier)
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def create_app(
    settings: Settings | None = None, *, clock: Clock = time.time, pool_size: int = 4
) -> Flask:
    """The receiver app. Tests pass settings and a clock; gunicorn passes nothing."""
    settings = settings or Settings.from_env()
    app = Flask("inbox")
    database = Database(settings, pool_size)
    app.extensions["inbox.database"] = database
    allowlist = (StripeAllowlist(settings.trusted_proxy_hops)
                 if settings.stripe_webhook_ip_allowlist else None)
    # Started by gunicorn's post_worker_init (inbox/gunicorn_conf.py), not here: a test
    # that makes an app gets no thread it did not ask for.
    duties = WebDuties(settings, lambda: db.connection(database.pool), allowlist)
    app.extensions["inbox.duties"] = duties
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_endpoint.blueprint(
        settings.metrics_token, lambda: db.connection(database.pool)))
    if settings.console_password:  # else every /console/ path is a 404
        console_auth.configure(app, settings)
        app.register_blueprint(console_views.blueprint(
            settings, lambda: db.connection(database.pool)))
    app.wsgi_app = webhooks.WebhookRoute(  # type: ignore[method-assign]
        app.wsgi_app, settings, clock, database.inserter, on_answer=duties.answered,
        allowlist=allowlist)
    app.register_error_handler(HTTPException, _http_error_as_json)
    logging.getLogger("inbox").setLevel(logging.INFO)
    return app


def _http_error_as_json(error: HTTPException) -> Response:
    """Flask's errors (404 and 405 of other paths) in the format of the webhook route's."""
    return Response(webhooks.error_body(error.name, error.description or ""),
                    status=error.code or 500, mimetype="application/json")
