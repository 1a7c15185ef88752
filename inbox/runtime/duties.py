"""What every worker and relay process does on its poll tick, besides rescuing the leases
of dead processes: it beats (inbox_processes: who is alive, holding what), takes its turn
at the alerts (the backlog, held alerts whose interval ended: inbox/alerts/watch.py),
forgets per-minute counters older than two days (0012_minute_counts.sql), and logs its
l2met metrics line when one is due (inbox/metrics/l2met.py); a worker also reconciles
Stripe's events when that is due (INBOX_STRIPE_RECONCILE_SECONDS,
inbox/stripe/reconcile.py: one worker at a time, beating between the pages it stores).

Everything runs on the claimer's own connection, from the loop's own thread, between two
turns: a process whose loop hangs stops beating, even while its connection stays open,
and its heartbeat's `holding` counts the leases of exactly that connection.
"""

from __future__ import annotations

import logging
import time

from inbox import db
from inbox.alerts import watch
from inbox.config import Settings
from inbox.metrics.l2met import MetricsLogger, ProcessCounts
from inbox.queries import query
from inbox.store import processes, system_state
from inbox.stripe.reconcile import reconcile_if_due

log = logging.getLogger(__name__)


class TickDuties:
    """One process's tick duties (see the module docstring). `counts` collects what the
    process did for its metrics line; the claimer adds to it."""

    def __init__(self, kind: str, settings: Settings, conn: db.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.me = processes.Identity.of_this_process(kind)
        self.counts = ProcessCounts()
        self.metrics = MetricsLogger(self.me.dyno or f"{kind}.{self.me.pid}",
                                     settings.log_metrics_seconds,
                                     lambda: system_state.read(conn), self.counts)

    def run(self) -> None:
        """Beat, look at the alerts, log the metrics line if due. A failure of one duty is
        logged and leaves the others (and the work) alone; a database outage surfaces in
        the claimer's next statement anyway."""
        duties = [self._beat, self._look, self._forget_old_minutes, self._metrics_line]
        if self.me.kind == "worker":
            duties.append(self._reconcile_stripe)
        for duty in duties:
            try:
                duty()
            except db.UNAVAILABLE_ERRORS:
                raise
            except Exception:
                log.exception("%s: a tick duty failed", self.me.kind)

    def goodbye(self) -> None:
        """A graceful exit: forget this process rather than report it gone later."""
        if not (self.conn.closed or self.conn.broken):
            processes.gone(self.conn, self.me)

    def _beat(self) -> None:
        processes.beat(self.conn, self.me, self.settings.poll_interval_seconds)

    def _look(self) -> None:
        watch.look(self.conn, self.settings)

    def _forget_old_minutes(self) -> None:
        self.conn.execute(query("minute_counts_forget"))

    def _metrics_line(self) -> None:
        self.metrics.log_if_due(time.monotonic())

    def _reconcile_stripe(self) -> None:
        # A long run beats after each page, so the process is not reported gone meanwhile.
        reconcile_if_due(self.conn, self.settings, progress=lambda _result: self._beat())
