"""The receiver's wake-up for idle workers: one NOTIFY for every burst of committed inserts.

Sending `inbox_wake_workers` after each insert would cost every request a second round
trip and a second transaction. Instead, a request thread only calls `wake()` after its
insert committed, and one daemon thread per process, on a connection of its own, sends one
NOTIFY covering every insert that committed since its previous one. The NOTIFY is still
sent only after the commit (never inside the insert's transaction: see the comment of
`inbox_wake_workers`), and a wake-up lost to a database outage only costs the workers a
poll interval, since the event itself is already durable.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from inbox import db
from inbox.queries import query

log = logging.getLogger(__name__)
# After a NOTIFY failed twice in a row (the database is down, not just a connection broken
# by a restart long ago), wait this long before each further try.
RETRY_SECONDS = 1.0
STOP_SECONDS = 5.0
# After each NOTIFY the thread rests this long, so that inserts committed meanwhile share
# the next one. Without the rest a process sends a NOTIFY for almost every insert (each
# ~140 us of CPU between the web process and PostgreSQL, and a wake-up of every listening
# worker) whenever inserts arrive slower than a NOTIFY round trip. With it a process sends
# at most ~100 a second; a wake-up waits at most this long, and only when another was sent
# just before (busy workers claim again before they sleep, so they need none). 10 ms
# rather than 5 or 1, measured at 500 events/s (`python -m bench latency --seconds 30
# --receiver-variant wake_gap_5ms|wake_gap_1ms`, runs alternated): the CPU the NOTIFYs
# save shortens the queues more than the rest lengthens the wait. POST -> handler commit
# p50 14.6 and 16.2 ms, p99 35 and 45, against 15.0 and 16.6, p99 44 and 70 at 5 ms
# (worker + PostgreSQL 0.81-0.89 cores against 0.93-0.95); 1 ms: p50 19-24 ms.
COALESCE_SECONDS = 0.010


class WakeNotifier:
    """Coalesces wake-ups of one process into as few NOTIFYs as the database can take.

    The thread starts on the first `wake()` (so after gunicorn forks) and is restarted in
    a child process that inherited a started notifier. Every error is logged and retried:
    the thread never ends before `close()`, and it is a daemon, so it never keeps a
    process from exiting.
    """

    def __init__(self, connect: Callable[[], db.Connection]) -> None:
        self._connect = connect
        self._owed = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.sent = 0  # NOTIFYs sent, for tests and curiosity

    def wake(self) -> None:
        """Ask for a NOTIFY; call only after the insert it announces has committed."""
        if self._pid != os.getpid():
            self._start()
        if not self._owed.is_set():  # owed already: skip the Event's lock
            self._owed.set()

    def close(self) -> None:
        """Stop the thread (after a NOTIFY it is sending) and close its connection."""
        self._closed.set()
        self._owed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_SECONDS)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid() or self._closed.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="inbox-wakeup", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def _run(self) -> None:
        """Wait for a wake-up owed, clear it, then send one NOTIFY for all owed so far.

        Clearing before sending is what makes it safe: an insert that committed before
        the clear is covered by the NOTIFY that follows, and one that commits after it
        sets the flag again for the next round.
        """
        conn: db.Connection | None = None
        failures = 0
        try:
            while True:
                self._owed.wait()
                if self._closed.is_set():
                    return
                self._owed.clear()
                conn = self._notify(conn)
                if conn is not None:
                    failures = 0
                    if self._closed.wait(COALESCE_SECONDS):
                        return
                    continue
                self._owed.set()  # still owed: try again on a fresh connection
                failures += 1
                if failures > 1 and self._closed.wait(RETRY_SECONDS):
                    return
        finally:
            if conn is not None:
                conn.close()

    def _notify(self, conn: db.Connection | None) -> db.Connection | None:
        """Send the NOTIFY; the connection to reuse, or None after any error."""
        try:
            conn = conn or self._connect()
            conn.execute(query("inbox_wake_workers"))
        except Exception as exc:  # never let the thread die: the next wake-up retries
            log.info("wake-up NOTIFY not sent (workers will poll): %s", exc)
            if conn is not None:
                conn.close()
            return None
        self.sent += 1
        return conn
