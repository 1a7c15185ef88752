"""The runner's turns, counted on real Workers: a claim that got less than a full batch
waits for the next NOTIFY rather than claiming again at once; a full batch claims again at
once; and of the children woken by one NOTIFY only the first one waiting claims, unless
it is busy in a handler."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import psycopg
import pytest

from inbox.config import Settings
from inbox.queries import query
from inbox.runtime.runner import ProcessControl, run_loop
from inbox.runtime.spec import Heartbeat, LoopSpec
from inbox.worker.loop import LISTEN_QUERY, Worker
from inbox.worker.registry import Registry
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


class SteppedControl(ProcessControl):
    """A control whose first `busy()` waits until a younger sibling has decided whether
    to answer the NOTIFY its elder answered.

    The rule "only the first child waiting claims" reads the elder's waiting flag, which
    the elder clears when its handler starts. A sibling that wakes later than that (the
    scheduler's choice, likely for threads sharing the GIL under a loaded machine) makes
    one empty claim; one that drains a second NOTIFY with the first leaves both to the
    elder (the poll tick bounds that wait): costs the runner accepts
    (inbox/runtime/runner.py). These threads step in the order of processes on an idle
    machine, so the turns are exact.
    """

    def __init__(self, *args, sibling_decided: threading.Event, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sibling_decided = sibling_decided

    def busy(self) -> None:
        if self._slot == 0:
            self.sibling_decided.wait(10)
        super().busy()

    def an_elder_is_waiting(self) -> bool:
        answer = super().an_elder_is_waiting()
        if self._slot > 0:
            self.sibling_decided.set()
        return answer


@contextlib.contextmanager
def worker_loops(
    database_url: str, batch_size: int, children: int = 1, registry: Registry | None = None,
    sibling_decided: threading.Event | None = None,
) -> Iterator[list[list[int]]]:
    """`children` worker loops in threads of this process, sharing a Heartbeat as a
    supervisor's children do; the claims of each one's turns. The first child's handlers
    start only after a sibling has looked at the NOTIFY (SteppedControl)."""
    settings = Settings(database_url=database_url, poll_interval_seconds=POLL_SECONDS,
                        handler_timeout_seconds=30.0)
    heartbeat = Heartbeat(children)
    turns: list[list[int]] = [[] for _ in range(children)]
    controls, threads = [], []
    sibling_decided = sibling_decided or threading.Event()
    if children == 1:
        sibling_decided.set()
    for slot in range(children):
        def make_claimer(control, slot=slot) -> Worker:
            worker = CountingWorker(settings, registry or Registry(), name=f"test-{slot}",
                                    batch_size=batch_size, control=control)
            worker.turns = turns[slot]
            return worker

        spec = LoopSpec(name="worker", database_url=database_url, listen_query=LISTEN_QUERY,
                        make_claimer=make_claimer, poll_interval_seconds=POLL_SECONDS)
        control = SteppedControl(None, heartbeat, slot, elders=range(slot),
                                 sibling_decided=sibling_decided)
        thread = threading.Thread(target=run_loop, args=(spec, control), daemon=True)
        thread.start()
        controls.append(control)
        threads.append(thread)
    try:
        for slot in range(children):
            wait_for(lambda slot=slot: heartbeat.waiting(slot), "every loop to wait")
        assert turns == [[0]] * children
        yield turns
    finally:
        for control in controls:
            control.request_stop()
            os.write(control.wake_w, b"x")
        for control, thread in zip(controls, threads, strict=True):
            thread.join(timeout=30)
            os.close(control.wake_r)
            os.close(control.wake_w)
            assert not thread.is_alive(), "a loop did not stop"


def insert_and_notify(db: psycopg.Connection, count: int, prefix: str,
                      event_type: str = "unhandled") -> None:
    insert_events(db, event_type, count, prefix=prefix)
    db.execute(query("inbox_wake_workers"))


def settled(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM inbox WHERE status <> 'pending'").fetchone()[0]


@pytest.mark.parametrize(("batch_size", "burst", "expected_turns"), [
    # Not full: the next turn comes only with the next NOTIFY, no empty claim in between.
    (10, 3, [0, 3, 1]),
    # Full batches: claim again at once, until one is not full.
    (2, 5, [0, 2, 2, 1, 1]),
])
def test_a_turn_follows_at_once_only_a_full_batch(database_url, db, batch_size, burst,
                                                  expected_turns):
    with worker_loops(database_url, batch_size=batch_size) as [turns]:
        insert_and_notify(db, burst, "burst")
        wait_for(lambda: settled(db) == burst, "the burst")
        insert_and_notify(db, 1, "after")
        wait_for(lambda: sum(turns) == burst + 1, "the event after")
        assert turns == expected_turns
        assert settled(db) == burst + 1


def test_one_notify_is_claimed_by_one_child_only(database_url, db):
    with worker_loops(database_url, batch_size=10, children=3) as turns:
        for number in range(1, 4):
            insert_and_notify(db, 1, f"one{number}")
            wait_for(lambda number=number: settled(db) == number, "the event")
        wait_for(lambda: sum(map(sum, turns)) == 3, "the turns to be counted")
        # Every child heard every NOTIFY; the first one waiting claimed, alone.
        assert turns == [[0, 1, 1, 1], [0], [0]]


def test_a_child_busy_in_a_handler_leaves_the_next_notify_to_a_sibling(database_url, db):
    release, sibling_decided = threading.Event(), threading.Event()
    registry = Registry()
    registry.register("test", "slow", lambda event, tx: release.wait(30))
    with worker_loops(database_url, batch_size=10, children=2, registry=registry,
                      sibling_decided=sibling_decided) as turns:
        insert_and_notify(db, 1, "slow", event_type="slow")
        claimed = "SELECT attempts = 1 FROM inbox WHERE event_type = 'slow'"
        wait_for(lambda: db.execute(claimed).fetchone()[0], "the slow event to be claimed")
        # The sibling has left the first NOTIFY to its elder; it hears the next one alone
        # (one it drained with the first would wait for the elder: see SteppedControl).
        wait_for(sibling_decided.is_set, "the sibling to hear the first NOTIFY")
        insert_and_notify(db, 1, "meanwhile")
        wait_for(lambda: settled(db) == 1, "the event sent while the first child is busy")
        release.set()
        wait_for(lambda: settled(db) == 2, "the slow event")
        # The first child claims again when its handler is done: the NOTIFY it slept
        # through is still unread, and it cannot know that its sibling answered it.
        wait_for(lambda: len(turns[0]) == 3, "the first child's turns to be counted")
        assert turns == [[0, 1, 0], [0, 1]]
