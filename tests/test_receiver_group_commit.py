"""Group commit: requests that arrive while an insert commits share the next one, and each
still gets its own answer, only after its row committed."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator, Sequence

import pytest
from psycopg_pool import ConnectionPool

from inbox import db as inbox_db
from inbox.errors import DatabaseUnavailable, InvalidEvent
from inbox.providers import ReceivedEvent
from inbox.web import group_commit
from inbox.web import store as receiver
from inbox.web.group_commit import GroupCommit
from tests.support import wait_for


def event(event_id: str, payload: str = '{"object": "event"}') -> ReceivedEvent:
    return ReceivedEvent("stripe", event_id, "invoice.paid", payload, payload.encode(), "t=1")


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = inbox_db.create_pool(database_url, max_size=2, open_wait=True, check=False)
    yield pool
    pool.close()


class GatedInserts:
    """receiver.insert_events on a real pool, recording each batch; the first insert waits
    for `gate`, so the requests that arrive meanwhile queue up behind it."""

    def __init__(self, pool, fail: Exception | None = None) -> None:
        self.pool = pool
        self.fail = fail
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, events: Sequence[ReceivedEvent]) -> list[bool | InvalidEvent]:
        self.batches.append([e.event_id for e in events])
        if len(self.batches) == 1:
            self.started.set()
            assert self.gate.wait(30)
        if self.fail is not None and len(self.batches) > 1:
            raise self.fail
        return receiver.insert_events(self.pool, events)


def queued(group: GroupCommit) -> int:
    with group._lock:
        return len(group._queue)


def run_concurrently(group: GroupCommit, inserts: GatedInserts, events: list[ReceivedEvent]):
    """Insert events[0] (held at the gate), queue the rest behind it, open the gate; the
    answers (a bool or the exception raised), in order."""

    def answer(item: ReceivedEvent):
        try:
            return group.insert(item)
        except Exception as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(len(events)) as pool:
        first = pool.submit(answer, events[0])
        assert inserts.started.wait(30)
        rest = [pool.submit(answer, item) for item in events[1:]]
        wait_for(lambda: queued(group) == len(events) - 1, "the requests to queue")
        inserts.gate.set()
        return [first.result(30)] + [future.result(30) for future in rest]


def stored_ids(db) -> set[str]:
    return {row[0] for row in db.execute("SELECT event_id FROM inbox")}


def test_requests_queued_behind_an_insert_share_the_next_one(pool, db):
    inserts = GatedInserts(pool)
    wakes = []
    group = GroupCommit(inserts, lambda: wakes.append(1))
    events = [event(f"evt_{n}") for n in range(12)]

    answers = run_concurrently(group, inserts, events)

    assert answers == [True] * 12
    assert inserts.batches == [["evt_0"], [f"evt_{n}" for n in range(1, 12)]]
    assert group.inserts == 2 and len(wakes) == 2
    assert stored_ids(db) == {f"evt_{n}" for n in range(12)}
    assert group.insert(event("evt_alone")) is True  # and it leads again afterwards
    assert inserts.batches[-1] == ["evt_alone"]


def test_twins_in_one_insert_are_stored_once(pool, db):
    inserts = GatedInserts(pool)
    group = GroupCommit(inserts, lambda: None)
    events = [event("evt_first"), *[event("evt_twin") for _ in range(5)], event("evt_first")]

    answers = run_concurrently(group, inserts, events)

    assert answers[0] is True and answers[-1] is False  # already stored by the first insert
    assert sorted(answers[1:-1]) == [False] * 4 + [True]
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2


def test_a_payload_jsonb_refuses_fails_only_its_own_request(pool, db):
    inserts = GatedInserts(pool)
    group = GroupCommit(inserts, lambda: None)
    events = [event("evt_0"), event("evt_1"), event("evt_nul", '{"s": "\\u0000"}'),
              event("evt_3")]

    answers = run_concurrently(group, inserts, events)

    assert answers[:2] == [True, True] and answers[3] is True
    assert isinstance(answers[2], InvalidEvent)
    assert stored_ids(db) == {"evt_0", "evt_1", "evt_3"}


@pytest.mark.parametrize("failure", [DatabaseUnavailable("down"), RuntimeError("a bug")])
def test_a_failed_insert_answers_each_of_its_requests_and_leading_goes_on(pool, db, failure):
    inserts = GatedInserts(pool, fail=failure)
    group = GroupCommit(inserts, lambda: None)
    events = [event(f"evt_{n}") for n in range(4)]

    answers = run_concurrently(group, inserts, events)

    assert answers[0] is True
    expected = DatabaseUnavailable if isinstance(failure, DatabaseUnavailable) else RuntimeError
    assert all(isinstance(answer, expected) for answer in answers[1:])
    assert stored_ids(db) == {"evt_0"}
    inserts.fail = None
    assert group.insert(event("evt_after")) is True


def test_a_request_queued_too_long_answers_unavailable_and_is_not_stored(
    pool, db, monkeypatch
):
    monkeypatch.setattr(group_commit, "WAIT_SECONDS", 0.2)
    inserts = GatedInserts(pool)
    group = GroupCommit(inserts, lambda: None)
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        first = threads.submit(group.insert, event("evt_slow"))
        assert inserts.started.wait(30)
        with pytest.raises(DatabaseUnavailable, match="in time"):
            group.insert(event("evt_gave_up"))
        inserts.gate.set()
        assert first.result(30) is True
    assert queued(group) == 0
    assert stored_ids(db) == {"evt_slow"}
    assert group.insert(event("evt_next")) is True


def test_insert_events_answers_each_event_in_order(pool, db):
    assert receiver.insert_events(pool, [event("evt_a")]) == [True]
    answers = receiver.insert_events(pool, [
        event("evt_b"), event("evt_a"), event("evt_b"), event("evt_bad", '"\\ud800"'),
    ])
    assert answers[:3] == [True, False, False]
    assert isinstance(answers[3], InvalidEvent)
    rows = db.execute("SELECT event_id, raw_body, signature FROM inbox ORDER BY id").fetchall()
    assert rows == [("evt_a", b'{"object": "event"}', "t=1"),
                    ("evt_b", b'{"object": "event"}', "t=1")]


def test_an_interrupted_leader_hands_on_the_queue(pool, db, monkeypatch):
    """A leader stopped by something no request can answer (gunicorn ending the process)
    still hands the queue on: the requests queued behind it are stored."""
    monkeypatch.setattr(group_commit, "WAIT_SECONDS", 1.0)
    inserts = GatedInserts(pool)
    real = inserts.__call__

    def interrupted_first(events):
        if not inserts.batches:
            inserts.batches.append([e.event_id for e in events])
            inserts.started.set()
            assert inserts.gate.wait(30)
            raise KeyboardInterrupt
        return real(events)

    group = GroupCommit(interrupted_first, lambda: None)
    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        leader = threads.submit(group.insert, event("evt_leader"))
        assert inserts.started.wait(30)
        queued_events = [threads.submit(group.insert, event(f"evt_{n}")) for n in range(3)]
        wait_for(lambda: queued(group) == 3, "the requests to queue")
        inserts.gate.set()
        with pytest.raises(KeyboardInterrupt):
            leader.result(30)
        assert [future.result(30) for future in queued_events] == [True] * 3
    assert stored_ids(db) == {"evt_0", "evt_1", "evt_2"}
    assert group.insert(event("evt_next")) is True
