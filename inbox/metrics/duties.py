"""The reporting every process does once per poll interval, whatever its kind: it beats
(inbox_processes: who is alive, holding what), takes its turn at the alerts (the backlog,
held alerts whose interval ended: inbox/alerts/watch.py), forgets per-minute counters
older than two days (0012_minute_counts.sql), and logs its l2met metrics line when one is
due (l2met.py).

One class for workers, relays and web processes, so they report alike: the worker's and
relay's tick (inbox/runtime/duties.py) runs it on the claimer's own connection, from the
loop's own thread, so a loop that hangs stops beating; the web process (inbox/web/
duties.py) runs it from a thread on a pooled connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from inbox import db
from inbox.alerts import watch
from inbox.config import Settings
from inbox.metrics.l2met import MetricsLogger, ProcessCounts
from inbox.queries import query
from inbox.store import processes, system_state

log = logging.getLogger(__name__)

ConnectionSource = Callable[[], AbstractContextManager[db.Connection]]
Duty = Callable[[db.Connection], object]


class ReportingDuties:
    """One process's reporting (see the module docstring). `counts` collects what the
    process did, for its metrics line; the process adds to it."""

    def __init__(self, kind: str, settings: Settings, connection: ConnectionSource,
                 extra: Sequence[Duty] = ()) -> None:
        self.settings = settings
        self.connection = connection
        self.extra = tuple(extra)  # the duties of this process's kind, run after the beat
        self.me = processes.Identity.of_this_process(kind)
        self.counts = ProcessCounts()
        self.metrics = MetricsLogger(self.me.dyno or f"{kind}.{self.me.pid}",
                                     settings.log_metrics_seconds, self._read_state,
                                     self.counts)

    def run(self) -> None:
        """Beat, run the `extra` duties of the process's kind, look at the alerts, forget
        old minutes, then log the metrics line if due. A failure of one duty is logged
        and leaves the others alone; a database outage is raised (the caller reconnects
        or tries again next tick)."""
        with self.connection() as conn:
            for duty in (self.beat, *self.extra, self._look, self._forget_old_minutes):
                try:
                    duty(conn)
                except db.UNAVAILABLE_ERRORS:
                    raise
                except Exception:
                    log.exception("%s: a periodic duty failed", self.me.kind)
        self.metrics.log_if_due(time.monotonic())

    def beat(self, conn: db.Connection) -> None:
        """Record that this process is alive now."""
        processes.beat(conn, self.me, self.settings.poll_interval_seconds)

    def goodbye(self) -> None:
        """A graceful exit: forget this process rather than report it gone later."""
        with self.connection() as conn:
            processes.gone(conn, self.me)

    def _look(self, conn: db.Connection) -> None:
        watch.look(conn, self.settings)

    def _forget_old_minutes(self, conn: db.Connection) -> None:
        conn.execute(query("minute_counts_forget"))

    def _read_state(self) -> system_state.SystemState:
        with self.connection() as conn:
            return system_state.read(conn)
