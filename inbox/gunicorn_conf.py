"""Gunicorn settings for the Procfile's `web` line (`-c python:inbox.gunicorn_conf`).

gevent workers, one process per core, chosen by measurement (`python -m bench ingest
--sweep`, table in docs/decisions.md, "gunicorn gevent, one process per core"). A request
waits on its commit's WAL flush; while it waits, the process takes the next requests, and
the requests a process holds while one insert commits share the next insert (group
commit, inbox/web/group_commit.py). Greenlets switch far more cheaply than gthread's OS
threads hand the GIL around, and a process holds more requests at once: ~9 events per
insert against ~3.6 for gthread 2x8, 1,695 against 1,128 req/s in the same run, p99 42
against 55 ms. psycopg cooperates with gevent by itself (since 3.1.14); the worker
monkey-patches the standard library before the app is imported, so the pool's threads,
the wake-up notifier and group commit's locks are greenlets and gevent locks.
WEB_CONCURRENCY (Heroku's convention) overrides the process count.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os

from inbox.config import log_format_from_env
from inbox.logs import configure_logging
from inbox.metrics import multiprocess as metrics_multiprocess

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
# Requests one process holds at once: a provider's burst queues in the listen backlog
# beyond this, rather than as greenlets waiting on the database.
worker_connections = 256
# Providers time out after 10-30 s; a request of ours never needs more than a few.
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
# Several web processes share a machine (dev, tests, benchmarks): no shared control socket.
control_socket_disable = True
errorlog = "-"


def on_starting(server) -> None:
    """In the master, before any web process exists: the folder where they add up their
    metrics (inbox/metrics/multiprocess.py)."""
    metrics_multiprocess.prepare_directory()


def child_exit(server, worker) -> None:
    """A web process ended: its live gauges go, its counters stay."""
    metrics_multiprocess.worker_exited(worker.pid)


def post_fork(server, worker) -> None:
    """Logging is set up in each worker, after the fork.

    Records skip the thread and process names no format of the web process prints: under
    gevent `threading.current_thread()` makes a dummy thread object per greenlet. The
    request log line cost ~300 us of the receiver's ~1,100 us of CPU per request
    (`python -m bench ingest --variants no_log`); with these off the receiver kept pace
    with the variant without a log line (1,696 vs 1,614 req/s). Only in the web process:
    handlers' own logging elsewhere may print thread names.

    The process id stays (`logProcesses`): gunicorn's own log format prints
    `[%(process)d]`, and without it every line gunicorn logs from a worker (a stop, each
    malformed request it rejects) was a `--- Logging error ---` traceback instead. It is
    one `os.getpid()` per record, not the name lookups above.
    """
    logging.logThreads = False
    logging.logMultiprocessing = False
    configure_logging(log_format=log_format_from_env())


# The cyclic garbage collector, relaxed in each web process once the app is loaded: the
# first generation is collected after 20,000 net allocations rather than 700, and the
# objects that live as long as the process (modules, the app) are frozen out of every
# collection. Requests free their objects by reference counting; what the collector did
# was pause the process, with all the requests it holds. Beside the default, in two runs of
# `python -m bench ingest --seconds 8 --rounds 3 --variants gc_relaxed` (a receiver variant
# that did this in create_app, removed when the hook came here, which runs after create_app
# and so would override any variant): p99 52 and 51 ms against 83 and 145, the slowest
# request 93 and 92 ms against 250 and 310, req/s level.
GC_THRESHOLDS = (20_000, 20, 20)


def post_worker_init(worker) -> None:
    """Freeze what the loaded app holds and relax the collector (GC_THRESHOLDS); start the
    process's periodic duties (heartbeat, alerts, metrics line: inbox/web/duties.py)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    duties = _extensions(worker).get("inbox.duties")
    if duties is not None:
        duties.start()


def worker_exit(server, worker) -> None:
    """Stop the duties, the receiver's notifier thread and its pool as a worker exits, so
    its connections end cleanly rather than with the process."""
    extensions = _extensions(worker)
    duties = extensions.get("inbox.duties")
    if duties is not None:
        duties.stop()
    database = extensions.get("inbox.database")
    if database is not None:
        database.close()


def _extensions(worker) -> dict:
    """The loaded Flask app's extensions (none before the app is loaded)."""
    return getattr(getattr(worker, "wsgi", None), "extensions", {})
