"""The process loop shared by the inbox worker and the outbox relay.

A *claimer* leases due rows and processes them (`run_once`), and turns the leases of dead
processes back into work (`rescue`). The runner and its supervisor do everything else
(what both need, `LoopSpec` and the exit codes among it, is in inbox/runtime/spec.py):

- **processes**: a supervisor (inbox/runtime/supervisor.py) forks `concurrency` children per loop
  (after fork each makes its own connections), restarts a child that dies (a poison event
  calling os._exit, the OOM killer) and kills a child stuck on one item past its time
  budget (watchdog);
- **wake-ups**: each child LISTENs on its own autocommit connection and also polls every
  `poll_interval_seconds`, so a lost notification delays work by at most one interval; the
  rescue runs on that same tick. A NOTIFY wakes every child, but only the first child of
  the loop that was waiting claims for it (the others see it waiting in shared memory): at
  a low rate each event then costs one claim, not one per child. A sibling that wakes
  only after the first child's handler began (and cleared its waiting flag) claims too
  (one empty claim), and a NOTIFY a sibling reads together with the one its elder is
  claiming for is left to the elder (at worst until the next poll tick): the accepted
  prices of a check that needs no lock;
- **signals**: the first SIGTERM stops claiming; each child finishes the item in hand (the
  claimer gives back the rest of its batch) and exits 0. A second SIGTERM, or SIGINT, exits
  at once: the open transaction rolls back and the leases are given back. A child whose
  parent dies stops the same graceful way (its end of the stop pipe reads EOF).

```python
spec = LoopSpec(name="relay", database_url=url, listen_query="outbox_listen",
                make_claimer=lambda control: Relay(settings, control=control),
                poll_interval_seconds=settings.poll_interval_seconds, concurrency=2)
sys.exit(supervisor.run([spec]))
```
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import time
from collections.abc import Sequence

from inbox import db
from inbox.errors import DatabaseUnavailable
from inbox.queries import query
from inbox.runtime.spec import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Claimer,
    Heartbeat,
    LoopSpec,
    ignore_stop_signals,
)

log = logging.getLogger(__name__)

DATABASE_RETRY_SECONDS = 1.0

_DB_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *db.UNAVAILABLE_ERRORS)


class ProcessControl:
    """A child's control: stop on SIGTERM or when the parent closes (or loses) the stop pipe."""

    def __init__(self, stop_fd: int | None, heartbeat: Heartbeat | None, slot: int,
                 elders: Sequence[int] = ()) -> None:
        self._stop_fd = stop_fd
        self._heartbeat = heartbeat
        self._slot = slot
        self._elders = elders  # the slots of this loop's children before this one
        self._stopping = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def request_stop(self) -> None:
        self._stopping = True

    def stop_requested(self) -> bool:
        if not self._stopping and self._stop_fd is not None and _readable([self._stop_fd], 0):
            self._stopping = True
        return self._stopping

    def busy(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set(self._slot, time.monotonic())
            self._heartbeat.set_waiting(self._slot, False)  # wake-ups are for the others

    def idle(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set(self._slot, 0.0)

    def waiting(self, waiting: bool) -> None:
        """Tell the siblings whether this child is waiting for a wake-up (or claiming
        after one): while it is, they leave the NOTIFY to it."""
        if self._heartbeat is not None:
            self._heartbeat.set_waiting(self._slot, waiting)

    def an_elder_is_waiting(self) -> bool:
        """True when a child of this loop before this one waits too: it got the same
        NOTIFY and claims for it."""
        heartbeat = self._heartbeat
        return heartbeat is not None and any(heartbeat.waiting(s) for s in self._elders)

    def wait(self, timeout: float, listen_fd: int | None = None) -> bool:
        """Sleep until a notification, a signal, a stop or the timeout; True if notified."""
        fds = [self.wake_r] + ([self._stop_fd] if self._stop_fd is not None else [])
        if listen_fd is not None:
            fds.append(listen_fd)
        ready = _readable(fds, max(timeout, 0.0))
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_r, 512)
        if self._stop_fd is not None and self._stop_fd in ready:
            self._stopping = True
        return listen_fd is not None and listen_fd in ready


class Listener:
    """An autocommit connection that LISTENs, outside any pool; NOTIFY is only a wake-up."""

    def __init__(self, database_url: str, listen_query: str) -> None:
        self.conn = db.connect(database_url, application_name="inbox-listener")
        self.conn.execute(query(listen_query))

    def fileno(self) -> int:
        return self.conn.fileno()

    def drain(self) -> int:
        """Read the notifications that arrived; how many."""
        self.conn.pgconn.consume_input()
        count = 0
        while self.conn.pgconn.notifies() is not None:
            count += 1
        return count

    def close(self) -> None:
        self.conn.close()


def run_loop(spec: LoopSpec, control: ProcessControl) -> int:
    """One child's life: claim while there is work, else wait; rescue on every poll tick."""
    claimer: Claimer | None = None
    listener: Listener | None = None
    next_rescue = 0.0
    claim = True
    try:
        while not control.stop_requested():
            try:
                if listener is None:
                    listener = Listener(spec.database_url, spec.listen_query)
                if claimer is None:
                    claimer = spec.make_claimer(control)
                if time.monotonic() >= next_rescue:
                    claimer.tick()
                    next_rescue = time.monotonic() + spec.poll_interval_seconds
                    claim = True
                if claim:
                    claimed = claimer.run_once()
                    if claimed and claimer.more_may_be_due(claimed):
                        control.waiting(False)  # a backlog: wake-ups are for the others
                        listener.drain()  # the claim loop needs no wake-up: keep it read
                        continue
                control.waiting(True)
                notified = control.wait(next_rescue - time.monotonic(), listener.fileno())
                if notified:
                    listener.drain()
                # Every child LISTENs, and one NOTIFY wakes them all: only the first one
                # waiting claims, or each event would cost a claim per child.
                claim = not (notified and control.an_elder_is_waiting())
            except _DB_ERRORS as exc:
                log.warning("%s: database unavailable (%s); reconnecting", spec.name, exc)
                control.waiting(False)
                _close(claimer, listener)
                claimer, listener = None, None
                claim = True
                control.wait(min(spec.poll_interval_seconds, DATABASE_RETRY_SECONDS) or 0.1)
        return EXIT_OK
    except KeyboardInterrupt:
        ignore_stop_signals()
        if claimer is not None:
            try:
                released = claimer.release()
                if released:
                    log.info("%s: gave back %d lease(s) on the way out", spec.name, released)
            except Exception as exc:  # the leases will be rescued as crashed attempts
                log.warning("%s: could not give back leases: %s", spec.name, exc)
        return EXIT_INTERRUPTED
    finally:
        _close(claimer, listener)


def _readable(fds: list[int], timeout: float) -> list[int]:
    try:
        ready, _, _ = select.select(fds, [], [], timeout)
    except OSError as exc:  # a closed fd: treat it as readable (EOF)
        if exc.errno == errno.EBADF:
            return fds
        raise
    return ready


def _close(*resources: object) -> None:
    for resource in resources:
        if resource is not None:
            with contextlib.suppress(Exception):
                resource.close()  # type: ignore[attr-defined]
