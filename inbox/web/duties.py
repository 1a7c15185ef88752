"""The web process's periodic duties, on a daemon thread (a greenlet under gunicorn's
gevent workers), once per poll interval: it beats (inbox_processes), holds the signature
failures it answered since its previous tick for their alert, takes its turn at the alerts
(inbox/alerts/watch.py), and logs its l2met metrics line when one is due: the reporting
every process does (inbox/metrics/duties.py), with the signature failures as its own duty,
and, with STRIPE_WEBHOOK_IP_ALLOWLIST on, a fresh look at Stripe's addresses as `inbox
stripe-ips --update` stored them (inbox/web/allowlist.py), first as the thread starts.

The web process takes the alerts' turn too because it is the one process that runs for
as long as webhooks arrive: with every worker dead, a backlog grows and only the web is
there to notice it (docs/decisions.md, "Who notices a backlog").
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from inbox import db
from inbox.alerts import coalesce
from inbox.alerts.kinds import all_kinds
from inbox.config import Settings
from inbox.metrics.duties import ConnectionSource, ReportingDuties
from inbox.store import processes
from inbox.web.allowlist import StripeAllowlist

log = logging.getLogger(__name__)


class WebDuties:
    """Started by gunicorn's post_worker_init in each web process, stopped as it exits."""

    def __init__(self, settings: Settings, connection: ConnectionSource,
                 allowlist: StripeAllowlist | None = None) -> None:
        self.settings = settings
        self.connection = connection
        self.allowlist = allowlist
        own = [self._hold_signature_failures] + ([allowlist.refresh] if allowlist else [])
        self.reporting = ReportingDuties("web", settings, connection, own)
        self._signature_failures: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def answered(self, provider: str, outcome: str) -> None:
        """Called for every webhook answer (cheap: a counter under a lock)."""
        self.reporting.counts.add(f"webhook.{outcome}")
        if outcome == "invalid_signature":
            with self._lock:
                self._signature_failures[provider] += 1

    def start(self) -> WebDuties:
        if self._thread is None:
            self.reporting.me = processes.Identity.of_this_process("web")  # after the fork
            self._thread = threading.Thread(target=self._run, name="inbox-web-duties",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and say goodbye (this process is not reported gone)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                self.reporting.goodbye()
            except Exception as exc:  # the database may be gone first
                log.info("web: could not say goodbye: %s", exc)

    def run_once(self) -> None:
        """One tick's duties on one pooled connection."""
        self.reporting.run()

    def _hold_signature_failures(self, conn: db.Connection) -> None:
        """The signature failures answered since the previous tick, held for their alert
        (the alerts' turn of this same tick then looks at them)."""
        with self._lock:
            failures, self._signature_failures = self._signature_failures, Counter()
        if failures:
            kind = all_kinds(self.settings)["signature_failures"]
            coalesce.hold(conn, kind, sum(failures.values()), sorted(failures))

    def _run(self) -> None:
        interval = max(self.settings.poll_interval_seconds, 0.1)
        if self.allowlist is not None:  # the stored list at once, not after a tick
            try:
                with self.connection() as conn:
                    self.allowlist.refresh(conn)
            except Exception as exc:  # the shipped list serves until the next tick
                log.warning("web: could not read Stripe's webhook addresses: %s", exc)
        while not self._stopped.wait(interval):
            try:
                self.run_once()
            except Exception as exc:  # a database outage: try again next tick
                log.warning("web: periodic duties failed: %s", exc)
