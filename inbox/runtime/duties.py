"""What every worker and relay process does on its poll tick, besides rescuing the leases
of dead processes: the reporting every process does (inbox/metrics/duties.py: heartbeat,
alerts' turn, old minute counters, metrics line), and for a worker, Stripe's
reconciliation when that is due (INBOX_STRIPE_RECONCILE_SECONDS, inbox/stripe/
reconcile.py: one worker at a time, beating between the pages it stores).

Everything runs on the claimer's own connection, from the loop's own thread, between two
turns: a process whose loop hangs stops beating, even while its connection stays open,
and its heartbeat's `holding` counts the leases of exactly that connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

from inbox import db
from inbox.config import Settings
from inbox.metrics.duties import ReportingDuties
from inbox.stripe.reconcile import reconcile_if_due


class TickDuties(ReportingDuties):
    """A worker's or relay's tick duties, on its claimer's connection `conn`. `on_beat`
    hears of each recorded beat (monotonic times before and after it): the relay measures
    how long its leases are surely its own from them (inbox/relay/lease.py)."""

    def __init__(self, kind: str, settings: Settings, conn: db.Connection,
                 on_beat: Callable[[float, float], None] | None = None) -> None:
        extra = [self._reconcile_stripe] if kind == "worker" else []
        super().__init__(kind, settings, lambda: nullcontext(conn), extra)
        self.conn = conn
        self.on_beat = on_beat

    def beat(self, conn: db.Connection) -> None:
        started = time.monotonic()
        super().beat(conn)
        if self.on_beat is not None:
            self.on_beat(started, time.monotonic())

    def goodbye(self) -> None:
        if not (self.conn.closed or self.conn.broken):
            super().goodbye()

    def _reconcile_stripe(self, conn: db.Connection) -> None:
        # A long run beats after each page, so the process is not reported gone meanwhile.
        reconcile_if_due(conn, self.settings, progress=lambda _result: self.beat(conn))
