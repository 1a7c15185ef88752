"""Adding up the web processes' metrics: prometheus-client's multiprocess mode.

gunicorn runs several web processes per dyno, and a scrape reaches one of them. In
multiprocess mode each process writes its values to memory-mapped files in one folder,
and a scrape reads every file there. The folder must be named in the environment before
any web process imports prometheus-client (which picks its value store at import), so the
gunicorn configuration calls `prepare_directory` in the master, before it forks, and this
module imports prometheus-client only inside its functions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the gunicorn master: prometheus-client only once ENV is set
    from prometheus_client import CollectorRegistry

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_directory() -> str:
    """Point ENV at an empty folder of this gunicorn master's own (made if unset, emptied
    if set: values left by an earlier run would be counted again); the folder."""
    folder = os.environ.get(ENV)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
    else:
        folder = tempfile.mkdtemp(prefix="inbox-metrics-")
        os.environ[ENV] = folder
    return folder


def enabled() -> bool:
    """True in a process started with the multiprocess folder set (a gunicorn worker)."""
    return bool(os.environ.get(ENV))


def worker_exited(pid: int) -> None:
    """Forget a dead process's live gauges (its counters stay: they are history)."""
    if enabled():
        from prometheus_client import multiprocess as prometheus_multiprocess

        prometheus_multiprocess.mark_process_dead(pid)


def scrape_registry() -> CollectorRegistry:
    """A registry that reads every process's files, made per scrape (the files change)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import multiprocess as prometheus_multiprocess

    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry)
    return registry
