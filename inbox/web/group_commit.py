"""Group commit for the receiver: the events that reach one web process together share
one INSERT, one transaction and one WAL flush.

No thread of its own: the request (a gevent greenlet under gunicorn, a thread elsewhere)
that finds no insert under way stores its event at once (it leads), as the receiver
always did. Requests that arrive meanwhile queue up.
Once its insert committed, the leader hands the queue to the first request in it, which
stores the whole queue with one `inbox_insert`, answers every request in it and hands on
in turn. Each request is answered only after the statement that stored its event
committed, with its own result: stored, duplicate, refused (InvalidEvent) or database
trouble (DatabaseUnavailable). Batches grow with the load by themselves: one event when
requests come one at a time, several under a burst.

Why (docs/decisions.md, "Group commit"): per event, an insert of several events costs
PostgreSQL and the web process less CPU than as many inserts of one, and on 2 shared cores
both come out of the same budget as gunicorn's. Leading from a request thread rather than
handing every event to an inserter thread saves two thread switches per request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from inbox.errors import DatabaseUnavailable, InvalidEvent
from inbox.providers import ReceivedEvent

log = logging.getLogger(__name__)
# The most events one statement stores: a gevent process holds up to worker_connections
# (256) requests, and a burst beyond this cap waits for the next insert, which keeps a
# statement's arrays a sane size.
MAX_EVENTS = 64
# A queued request gives up after this long and answers 503, unless its event is already in
# an insert under way (whose answer then comes within the statement timeout). Above the
# pool's wait plus the statement timeout, below gunicorn's 30 s worker timeout.
WAIT_SECONDS = 20.0

InsertMany = Callable[[Sequence[ReceivedEvent]], list["bool | InvalidEvent"]]


class _Request:
    """One request's event and its answer. `done` is taken at creation and released when
    the request may go on: answered, or handed the queue to lead."""

    __slots__ = ("done", "event", "lead", "result")

    def __init__(self, event: ReceivedEvent) -> None:
        self.event = event
        self.result: bool | Exception | None = None
        self.lead = False
        self.done = threading.Lock()
        self.done.acquire()

    def answer(self) -> bool:
        result = self.result
        if isinstance(result, bool):
            return result
        if isinstance(result, InvalidEvent):
            raise result
        if isinstance(result, DatabaseUnavailable):
            raise DatabaseUnavailable(str(result)) from result
        raise RuntimeError("storing the event failed") from result


class GroupCommit:
    """Stores the events of a process's request threads, several per statement.

    `insert_many` is `receiver.insert_events` bound to the process's pool; `committed` is
    called after an insert that stored at least one new event (the workers' wake-up).
    """

    def __init__(self, insert_many: InsertMany, committed: Callable[[], None]) -> None:
        self._insert_many = insert_many
        self._committed = committed
        self._lock = threading.Lock()  # guards _queue and _leading
        self._queue: list[_Request] = []
        self._leading = False  # an insert is under way, and its leader will hand on
        self.inserts = 0  # statements sent, for tests and curiosity

    def insert(self, event: ReceivedEvent) -> bool:
        """Store `event`; True when stored now, False for a duplicate. Returns after the
        commit; raises InvalidEvent (jsonb refused the payload) or DatabaseUnavailable."""
        request = _Request(event)
        with self._lock:
            self._queue.append(request)
            leads = not self._leading
            self._leading = True
        if not leads:
            self._wait(request)
            if not request.lead:
                return request.answer()
        self._lead()
        return request.answer()

    def _wait(self, request: _Request) -> None:
        """Until `request` is answered or handed the queue; DatabaseUnavailable if it is
        still queued after WAIT_SECONDS."""
        if request.done.acquire(timeout=WAIT_SECONDS):
            return
        with self._lock:
            if request.lead:  # handed the queue as the wait ended
                request.done.acquire()
                return
            if request in self._queue:
                self._queue.remove(request)
                raise DatabaseUnavailable("the database did not take the event in time")
        # In an insert under way: its answer comes within the statement timeout, unless its
        # leader was interrupted (gunicorn stopping the process).
        if not request.done.acquire(timeout=WAIT_SECONDS):
            raise DatabaseUnavailable("the insert of the event did not finish in time")

    def _lead(self) -> None:
        """Store the queue (this thread's own request first), then hand on what queued
        meanwhile, or stop leading."""
        with self._lock:
            batch, self._queue = self._queue[:MAX_EVENTS], self._queue[MAX_EVENTS:]
        try:
            stored = self._store(batch)
        finally:  # even if interrupted: a queue nobody leads would wait for ever
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.release()
                else:
                    self._leading = False
        if stored:
            self._committed()

    def _store(self, batch: list[_Request]) -> bool:
        """Insert the batch and answer each request; True when any event was new."""
        results: Sequence[bool | Exception]
        try:
            results = self._insert_many([request.event for request in batch])
        except Exception as exc:  # every request must get an answer, even to a bug
            if not isinstance(exc, DatabaseUnavailable):
                log.exception("storing %d events failed", len(batch))
            results = [exc] * len(batch)
        self.inserts += 1
        leader, *others = batch
        leader.result = results[0]
        for request, result in zip(others, results[1:], strict=True):
            request.result = result
            request.done.release()
        return any(result is True for result in results)
