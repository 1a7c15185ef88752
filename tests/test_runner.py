"""The runner's turns: a claim that got less than a full batch waits for the next NOTIFY
rather than claiming again at once; a full batch claims again at once."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import psycopg

from inbox.config import Settings
from inbox.queries import query
from inbox.registry import Registry
from inbox.runner import LoopSpec, ProcessControl, run_loop
from inbox.worker import LISTEN_QUERY, Worker
from tests.support import wait_for
from tests.worker_support import insert_events

POLL_SECONDS = 60.0  # far away: every turn in these tests comes from a NOTIFY


class CountingWorker(Worker):
    """A real Worker that records what each of its turns claimed."""

    turns: list[int]

    def run_once(self) -> int:
        claimed = super().run_once()
        self.turns.append(claimed)
        return claimed


@contextlib.contextmanager
def worker_loop(database_url: str, batch_size: int) -> Iterator[list[int]]:
    """The worker's loop in a thread of this process; the claims of its turns."""
    turns: list[int] = []
    settings = Settings(database_url=database_url, poll_interval_seconds=POLL_SECONDS)

    def make_claimer(control) -> Worker:
        worker = CountingWorker(settings, Registry(), name="test-runner",
                                batch_size=batch_size, control=control)
        worker.turns = turns
        return worker

    spec = LoopSpec(name="worker", database_url=database_url, listen_query=LISTEN_QUERY,
                    make_claimer=make_claimer, poll_interval_seconds=POLL_SECONDS)
    control = ProcessControl(None, None, 0)
    thread = threading.Thread(target=run_loop, args=(spec, control), daemon=True)
    thread.start()
    try:
        wait_for(lambda: turns == [0], "the first, empty turn")
        yield turns
    finally:
        control.request_stop()
        os.write(control.wake_w, b"x")
        thread.join(timeout=30)
        os.close(control.wake_r)
        os.close(control.wake_w)
        assert not thread.is_alive(), "the loop did not stop"


def insert_and_notify(db: psycopg.Connection, count: int, prefix: str) -> None:
    insert_events(db, "unhandled", count, prefix=prefix)
    db.execute(query("inbox_wake_workers"))


def settled(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM inbox WHERE status <> 'pending'").fetchone()[0]


def test_a_batch_not_full_waits_for_the_next_notify(database_url, db):
    with worker_loop(database_url, batch_size=10) as turns:
        insert_and_notify(db, 3, "first")
        wait_for(lambda: settled(db) == 3, "the first events")
        # The next turn starts only with the next NOTIFY: no empty claim in between.
        insert_and_notify(db, 1, "second")
        wait_for(lambda: sum(turns) == 4, "the second event")
        assert turns == [0, 3, 1]
        assert settled(db) == 4


def test_a_full_batch_claims_again_at_once(database_url, db):
    with worker_loop(database_url, batch_size=2) as turns:
        insert_and_notify(db, 5, "burst")
        wait_for(lambda: settled(db) == 5, "the burst")
        insert_and_notify(db, 1, "after")
        wait_for(lambda: sum(turns) == 6, "the event after")
        assert turns == [0, 2, 2, 1, 1]
        assert settled(db) == 6
