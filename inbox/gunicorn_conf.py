"""Gunicorn settings for the Procfile's `web` line (`-c python:inbox.gunicorn_conf`).

Threaded workers (gthread), 2 per core with 4 threads each, chosen by measurement
(`python -m bench ingest --sweep`, table in docs/decisions.md): a request waits on its
commit's WAL flush, and threads overlap those waits (and let PostgreSQL group the commits)
where a sync worker sits idle; gthread also keeps connections alive, which sync workers
never do. 4x4 took about 1.8x the events/s of 4 sync workers with a lower p99, while more
threads or processes gave nothing more on 2 cores (the receiver is then CPU-bound).
The threads per process match the receiver's pool size (create_app(pool_size=4)): more
threads would only queue for a connection. WEB_CONCURRENCY (Heroku's convention)
overrides the process count.
"""

from __future__ import annotations

import multiprocessing
import os

from inbox.logs import configure_logging

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
threads = 4
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


def worker_exit(server, worker) -> None:
    """Stop the receiver's notifier thread and close its pool as a worker exits, so its
    connections end cleanly rather than with the process."""
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", {})
    database = extensions.get("inbox.database")
    if database is not None:
        database.close()
