"""Gunicorn settings for the Procfile's `web` line (`-c python:inbox.gunicorn_conf`).

Sync workers, one per request at a time: the receiver's work is CPU (HMAC, JSON) plus one
short database round trip, so threads buy nothing but GIL contention. See
docs/architecture.md for the measurement behind the worker class and count.
WEB_CONCURRENCY (Heroku's convention) overrides the count.
"""

from __future__ import annotations

import multiprocessing
import os

from inbox.logs import configure_logging

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "sync"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
# Providers time out after 10-30 s; a request of ours never needs more than a few.
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
# Several web processes share a machine (dev, tests, benchmarks): no shared control socket.
control_socket_disable = True
errorlog = "-"


def post_fork(server, worker) -> None:
    """Logging is set up in each worker, after the fork."""
    configure_logging()
