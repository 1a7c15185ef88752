"""Gunicorn settings for the Procfile's `web` line (`-c python:inbox.gunicorn_conf`).

Threaded workers (gthread), one process per core with 8 threads each, chosen by
measurement (`python -m bench ingest --sweep`, table in docs/decisions.md, "gunicorn gthread,
one process per core x 8 threads"). A request waits on its commit's WAL flush, and threads
overlap those waits where a sync worker sits idle; gthread also keeps connections alive,
which sync workers never do. The requests a process holds while one insert commits share
the next insert (group commit, inbox/store/group_commit.py), so fewer processes with more
threads make larger groups: 2x8 stored ~3.5 events per insert against ~1.7 for 4x4, for
the same req/s with half the p99 and less CPU per request; at a steady 500 events/s it also
left more of the machine to the workers. WEB_CONCURRENCY (Heroku's convention) overrides
the process count.
"""

from __future__ import annotations

import multiprocessing
import os

from inbox.logs import configure_logging

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
threads = 8
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
