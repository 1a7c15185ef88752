"""The worker in-process against real PostgreSQL: outcomes, retries, savepoints, leases.

These drive `Worker.run_once()` and `rescue()` directly (no runner, no timing); the tests
with real worker processes and signals are in test_worker_processes.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from inbox.config import Settings
from inbox.errors import DatabaseUnavailable, Permanent
from inbox.queries import query
from inbox.store import ops
from inbox.worker import store
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry
from inbox.worker.store import Outcome
from tests.support import wait_for
from tests.worker_support import (
    drain,
    event_row,
    insert_events,
    statuses,
)

MakeWorker = Callable[..., Worker]


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def worker_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        max_attempts=3,
        retry_base_seconds=0.0,  # every retry is due at once: no waiting in these tests
        retry_cap_seconds=0.0,
        handler_timeout_seconds=5.0,
    )


@pytest.fixture
def make_worker(worker_settings: Settings, registry: Registry) -> Iterator[MakeWorker]:
    made: list[Worker] = []

    def make(settings: Settings | None = None, **kwargs) -> Worker:
        kwargs.setdefault("name", f"test-worker-{len(made)}")
        worker = Worker(settings or worker_settings, registry, **kwargs)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()


def effect_count(db: psycopg.Connection, event_id: str | None = None) -> int:
    if event_id is None:
        return db.execute("SELECT count(*) FROM effects").fetchone()[0]
    return db.execute("SELECT count(*) FROM effects WHERE event_id = %s", [event_id]).fetchone()[0]


def history(db: psycopg.Connection, event_id: str) -> list[tuple[int, str]]:
    return db.execute(
        "SELECT a.attempt, a.outcome FROM inbox_attempts a JOIN inbox i ON i.id = a.inbox_id"
        " WHERE i.event_id = %s ORDER BY a.id", [event_id],
    ).fetchall()


def record_effect(event, tx) -> None:
    tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)", [event.id, event.attempt])


# -- outcomes ------------------------------------------------------------------------------


def test_a_handler_runs_once_and_its_writes_commit_with_the_status(effects, registry, make_worker):
    seen = []

    @registry.handler("test", "effect")
    def handle(event, tx):
        seen.append((event.provider, event.id, event.type, event.payload, event.attempt))
        record_effect(event, tx)
        tx.outbox("test.effect", {"event": event.id})

    [event_id] = insert_events(effects, "effect", 1, payload={"n": 1})
    assert drain(make_worker().run_once) == 1

    assert seen == [("test", event_id, "effect", {"n": 1}, 1)]
    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"], row["locked_backend"]) == ("processed", 1, None)
    assert row["processed_at"] is not None
    assert effect_count(effects, event_id) == 1
    assert history(effects, event_id) == [(1, "processed")]
    inbox_id, key, topic = effects.execute(
        "SELECT inbox_id, idempotency_key, topic FROM outbox").fetchone()
    assert key == f"test:{event_id}:test.effect:0" and topic == "test.effect"
    assert inbox_id == effects.execute(
        "SELECT id FROM inbox WHERE event_id = %s", [event_id]).fetchone()[0]


def test_fail_twice_then_succeed_is_processed_after_three_attempts(effects, registry, make_worker):
    @registry.handler("test", "flaky")
    def flaky(event, tx):
        record_effect(event, tx)  # rolled back with the failing attempts
        if event.attempt < 3:
            raise ConnectionError(f"provider API down (attempt {event.attempt})")

    [event_id] = insert_events(effects, "flaky", 1)
    worker = make_worker()
    assert drain(worker.run_once) == 3

    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"]) == ("processed", 3)
    assert row["last_error"] == "ConnectionError: provider API down (attempt 2)"
    assert history(effects, event_id) == [(1, "retry"), (2, "retry"), (3, "processed")]
    assert effects.execute("SELECT attempt FROM effects").fetchall() == [(3,)]


def test_always_failing_is_dead_after_the_limit_with_last_error(effects, registry, make_worker):
    @registry.handler("test", "broken")
    def broken(event, tx):
        record_effect(event, tx)
        raise ValueError("amount must be positive")

    [event_id] = insert_events(effects, "broken", 1)
    assert drain(make_worker().run_once) == 3  # max_attempts

    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"]) == ("dead", 3)
    assert row["last_error"] == "ValueError: amount must be positive"
    assert row["processed_at"] is None
    assert history(effects, event_id) == [(1, "retry"), (2, "retry"), (3, "dead")]
    assert effect_count(effects) == 0


def test_permanent_is_dead_after_one_attempt(effects, registry, make_worker):
    @registry.handler("test", "rejected")
    def rejected(event, tx):
        record_effect(event, tx)
        raise Permanent("refund larger than the charge")

    [event_id] = insert_events(effects, "rejected", 1)
    assert drain(make_worker().run_once) == 1

    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert row["last_error"] == "Permanent: refund larger than the charge"
    assert history(effects, event_id) == [(1, "dead")]
    assert effect_count(effects) == 0


def test_an_event_without_handler_is_ignored(db, make_worker):
    [event_id] = insert_events(db, "nobody.cares", 1)
    assert drain(make_worker().run_once) == 1
    row = event_row(db, event_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("ignored", 1, None)
    assert row["processed_at"] is not None
    assert history(db, event_id) == [(1, "ignored")]


def test_retries_wait_for_their_backoff(effects, registry, make_worker, worker_settings):
    @registry.handler("test", "flaky")
    def flaky(event, tx):
        raise ConnectionError("down")

    slow = Settings(**{**worker_settings.__dict__, "retry_base_seconds": 3600.0,
                       "retry_cap_seconds": 3600.0})
    [event_id] = insert_events(effects, "flaky", 1)
    worker = make_worker(slow)
    assert worker.run_once() == 1
    assert worker.run_once() == 0  # not due yet
    delay = effects.execute(
        "SELECT extract(epoch FROM next_attempt_at - now()) FROM inbox").fetchone()[0]
    assert 0 <= delay <= 3600
    assert event_row(effects, event_id)["status"] == "pending"


def test_replay_of_a_dead_event_after_the_fix_is_processed(effects, registry, make_worker):
    fixed = False

    @registry.handler("test", "needs-fix")
    def needs_fix(event, tx):
        if not fixed:
            raise LookupError("unknown customer cus_123")
        record_effect(event, tx)

    [event_id] = insert_events(effects, "needs-fix", 1)
    worker = make_worker()
    drain(worker.run_once)
    assert event_row(effects, event_id)["status"] == "dead"

    fixed = True
    assert ops.replay_status(effects, "dead", "needs-fix") == [("test", event_id)]
    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert drain(worker.run_once) == 1

    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"]) == ("processed", 1)
    assert row["last_error"] == "LookupError: unknown customer cus_123"  # history kept
    assert history(effects, event_id) == [(1, "retry"), (2, "retry"), (3, "dead"),
                                          (1, "processed")]
    assert effect_count(effects, event_id) == 1


# -- one transaction per batch, one savepoint per event -------------------------------------


def test_a_failing_handler_rolls_back_only_its_own_event(effects, registry, make_worker):
    @registry.handler("test", "maybe")
    def maybe(event, tx):
        record_effect(event, tx)
        tx.outbox("test.maybe", {"event": event.id})
        if event.payload.get("fail"):
            raise RuntimeError("this one fails")

    good = insert_events(effects, "maybe", 3, prefix="good")
    [bad] = insert_events(effects, "maybe", 1, prefix="bad", payload={"fail": True})
    more = insert_events(effects, "maybe", 3, prefix="more")
    worker = make_worker(batch_size=10)
    assert worker.run_once() == 7  # one batch, one transaction

    for event_id in good + more:
        assert event_row(effects, event_id)["status"] == "processed"
        assert effect_count(effects, event_id) == 1
    assert event_row(effects, bad)["status"] == "pending"
    assert effect_count(effects, bad) == 0
    assert effects.execute("SELECT count(*) FROM outbox").fetchone()[0] == 6


@pytest.mark.parametrize("odd_payload, error", [
    ({"when": object()}, "TypeError"),            # not JSON at all
    ({"ratio": float("nan")}, "ValueError"),      # JSON's NaN: jsonb refuses it
    ({"name": "nul\x00byte"}, "ValueError"),       # jsonb refuses \u0000
    ({"name": "half \ud800 pair"}, "ValueError"),  # and an unpaired surrogate
])
def test_a_message_jsonb_cannot_store_fails_only_its_own_handler(
        effects, registry, make_worker, odd_payload, error):
    @registry.handler("test", "odd")
    def odd(event, tx):
        record_effect(event, tx)
        tx.outbox("test.first", {"event": event.id, "text": "\\u0000 \U0001f600"})
        if event.payload.get("odd"):
            tx.outbox("test.odd", odd_payload)

    [fine] = insert_events(effects, "odd", 1, prefix="fine")
    [bad] = insert_events(effects, "odd", 1, prefix="bad", payload={"odd": True})
    assert make_worker(batch_size=10).run_once() == 2

    assert event_row(effects, fine)["status"] == "processed"
    row = event_row(effects, bad)
    assert row["status"] == "pending" and row["last_error"].startswith(error)
    assert effect_count(effects, bad) == 0
    # Only the handler that returned queued anything; its message went out whole.
    assert effects.execute("SELECT topic, inbox_id IS NOT NULL FROM outbox").fetchall() == [
        ("test.first", True)]


def test_an_event_due_before_the_last_claim_is_found_within_a_poll_interval(
        effects, registry, make_worker, worker_settings):
    """A claim scans the due index from just before the previous claim's events (the dead
    entries in front of them cost every claim otherwise); anything due earlier, such as an
    insert that committed late, is found by the scan from the start once per poll interval."""
    registry.handler("test", "tick")(lambda event, tx: None)
    worker = make_worker(dataclasses.replace(worker_settings, poll_interval_seconds=0.5))
    insert_events(effects, "tick", 3, prefix="first")
    assert worker.run_once() == 3  # the first claim scans from the start
    [late] = insert_events(effects, "tick", 1, prefix="late")
    effects.execute("UPDATE inbox SET next_attempt_at = now() - interval '1 hour'"
                    " WHERE event_id = %s", [late])
    [fresh] = insert_events(effects, "tick", 1, prefix="fresh")

    assert worker.run_once() == 1  # from the previous claim on: only `fresh`
    assert event_row(effects, fresh)["status"] == "processed"
    assert event_row(effects, late)["status"] == "pending"
    started = time.monotonic()
    wait_for(lambda: worker.run_once() == 1, timeout=5)
    assert event_row(effects, late)["status"] == "processed"
    assert time.monotonic() - started < 1.5


def test_messages_keep_the_order_handlers_queued_them(effects, registry, make_worker):
    @registry.handler("test", "many")
    def many(event, tx):
        for n in range(3):
            tx.outbox("test.many", {"event": event.id, "n": n})
        tx.outbox("test.shared", {"event": event.id}, key="one-per-batch")

    event_ids = insert_events(effects, "many", 4)
    assert make_worker(batch_size=10).run_once() == 4

    rows = effects.execute(
        "SELECT payload->>'event', (payload->>'n')::int FROM outbox WHERE topic = 'test.many'"
        " ORDER BY id").fetchall()
    assert rows == [(event_id, n) for event_id in sorted(event_ids) for n in range(3)]
    # Two events of one batch queued the same key: the first one's message is kept.
    shared = effects.execute("SELECT payload->>'event' FROM outbox WHERE topic = 'test.shared'"
                             ).fetchall()
    assert shared == [(sorted(event_ids)[0],)]


def test_a_handler_that_swallows_a_database_error_fails(effects, registry, make_worker):
    @registry.handler("test", "sloppy")
    def sloppy(event, tx):
        record_effect(event, tx)
        with contextlib.suppress(psycopg.Error):
            tx.execute("SELECT * FROM no_such_table")

    [event_id] = insert_events(effects, "sloppy", 1)
    make_worker().run_once()
    row = event_row(effects, event_id)
    assert row["status"] == "pending" and "caught a database error" in row["last_error"]
    assert effect_count(effects) == 0


def test_outbox_keys_make_reruns_harmless_and_wake_the_relay(database_url, effects, registry,
                                                              make_worker):
    @registry.handler("test", "mail")
    def mail(event, tx):
        tx.outbox("email.a", {"n": 1})
        tx.outbox("email.a", {"n": 2})
        tx.outbox("email.b", {"n": 3}, key="my-own-key")

    [event_id] = insert_events(effects, "mail", 1)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN outbox_messages")
        worker = make_worker()
        drain(worker.run_once)
        assert list(listener.notifies(timeout=5, stop_after=1))

    keys = [r[0] for r in effects.execute("SELECT idempotency_key FROM outbox ORDER BY id")]
    assert keys == [f"test:{event_id}:email.a:0", f"test:{event_id}:email.a:1", "my-own-key"]
    first_ids = [r[0] for r in effects.execute("SELECT id FROM outbox ORDER BY id")]
    ops.replay_events(effects, [event_id])
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN outbox_messages")
        drain(worker.run_once)
        assert not list(listener.notifies(timeout=1, stop_after=1))  # nothing new: no wake-up
    assert event_row(effects, event_id)["status"] == "processed"
    # The replay queued nothing new: the same three rows.
    assert [r[0] for r in effects.execute("SELECT id FROM outbox ORDER BY id")] == first_ids


def test_a_statement_over_the_handler_budget_is_cancelled(effects, registry, make_worker,
                                                         worker_settings):
    @registry.handler("test", "slow-sql")
    def slow_sql(event, tx):
        tx.execute("SELECT pg_sleep(30)")

    tight = Settings(**{**worker_settings.__dict__, "handler_timeout_seconds": 0.3})
    [event_id] = insert_events(effects, "slow-sql", 1)
    started = time.monotonic()
    make_worker(tight).run_once()
    assert time.monotonic() - started < 20
    row = event_row(effects, event_id)
    assert row["status"] == "pending" and row["last_error"].startswith("QueryCanceled")


def test_a_handler_idle_past_its_budget_loses_its_connection_and_is_rescued(
    effects, registry, make_worker, worker_settings
):
    @registry.handler("test", "stuck")
    def stuck(event, tx):
        record_effect(event, tx)
        time.sleep(1.5)  # stuck in Python with the transaction open
        record_effect(event, tx)

    tight = Settings(**{**worker_settings.__dict__, "handler_timeout_seconds": 0.3})
    [event_id] = insert_events(effects, "stuck", 1)
    with pytest.raises(DatabaseUnavailable):
        make_worker(tight).run_once()  # the server ended the idle transaction's session

    assert effect_count(effects) == 0
    rescuer = make_worker()
    assert wait_rescued(rescuer) == 1
    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"], row["crashes"]) == ("pending", 1, 1)
    assert row["last_error"].startswith("worker died during attempt 1")


def wait_rescued(worker: Worker, timeout: float = 10.0) -> int:
    """The backend of a killed session leaves pg_stat_activity a moment after the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rescued = worker.rescue()
        if rescued:
            return rescued
        time.sleep(0.05)
    return 0


# -- leases: crashes, poison isolation, shutdown --------------------------------------------


def claim_and_die(database_url: str, batch: int) -> list[int]:
    """A worker that claims a batch and dies before any outcome (its backend exits)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        claimed = store.claim(conn, "doomed-worker", batch)
    return [event.lease.inbox_id for event in claimed]


def test_a_dead_workers_attempt_counts_and_the_event_comes_back(database_url, effects,
                                                                registry, make_worker):
    registry.register("test", "effect", record_effect)
    [event_id] = insert_events(effects, "effect", 1)
    assert len(claim_and_die(database_url, 10)) == 1
    worker = make_worker()
    assert worker.run_once() == 0  # leased, not due
    assert wait_rescued(worker) == 1

    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"], row["crashes"]) == ("pending", 1, 1)
    assert row["last_error"] == "worker died during attempt 1 (doomed-worker)"
    assert history(effects, event_id) == [(1, "crashed")]
    assert drain(worker.run_once) == 1
    assert event_row(effects, event_id)["status"] == "processed"
    assert history(effects, event_id) == [(1, "crashed"), (2, "processed")]


def test_two_rescuers_racing_count_a_crash_once(database_url, db, make_worker):
    [event_id] = insert_events(db, "effect", 1)
    claim_and_die(database_url, 1)
    first, second = make_worker(), make_worker()
    wait_for(lambda: store.dead_leases(first.conn), timeout=10, what="the dead lease")
    seen_by_first, seen_by_second = store.dead_leases(first.conn), store.dead_leases(second.conn)
    assert len(seen_by_first) == len(seen_by_second) == 1
    crash = [first._crash_outcome(dead) for dead in seen_by_first]
    assert store.finish(first.conn, crash) == 1
    assert store.finish(second.conn, [second._crash_outcome(seen_by_second[0])]) == 0
    row = event_row(db, event_id)
    assert (row["attempts"], row["crashes"]) == (1, 1)
    assert history(db, event_id) == [(1, "crashed")]


def test_a_live_workers_leases_are_not_rescued(database_url, db, make_worker):
    insert_events(db, "effect", 3)
    with psycopg.connect(database_url, autocommit=True) as holder:
        assert len(store.claim(holder, "alive", 10)) == 3
        assert make_worker().rescue() == 0
        assert db.execute("SELECT count(*) FROM inbox WHERE locked_backend IS NOT NULL"
                          ).fetchone()[0] == 3


def test_crashing_every_attempt_ends_dead_after_the_limit(database_url, db, make_worker):
    [event_id] = insert_events(db, "poison", 1)
    worker = make_worker()
    for attempt in range(1, 4):
        assert len(claim_and_die(database_url, 1)) == 1
        assert wait_rescued(worker) == 1
        assert event_row(db, event_id)["attempts"] == attempt
    row = event_row(db, event_id)
    assert (row["status"], row["crashes"]) == ("dead", 3)
    assert row["last_error"] == "worker died during attempt 3 (doomed-worker)"
    assert worker.run_once() == 0


def test_events_that_crashed_before_are_claimed_one_at_a_time(database_url, db, registry,
                                                             make_worker):
    batches: list[list[str]] = []
    registry.register("test", "effect", lambda event, tx: batches[-1].append(event.id))
    insert_events(db, "effect", 5, prefix="suspect")
    assert len(claim_and_die(database_url, 5)) == 5  # a crash takes the whole batch down
    worker = make_worker(batch_size=10)
    assert wait_rescued(worker) == 5
    insert_events(db, "effect", 3, prefix="fresh")

    while True:
        batches.append([])
        if not worker.run_once():
            break
    claimed = [b for b in batches if b]
    # The fresh events go together; every suspect is alone in its own transaction.
    assert sorted(e for b in claimed for e in b) == sorted(
        [f"suspect_{n}" for n in range(1, 6)] + [f"fresh_{n}" for n in range(1, 4)]
    )
    for batch in claimed:
        suspects = [e for e in batch if e.startswith("suspect")]
        assert len(suspects) <= 1
    assert statuses(db) == {"processed": 8}


def run_between_poll_ticks(worker: Worker) -> int:
    """What the runner's loop does on a poll tick when no NOTIFY comes: rescue, then claim
    again at once for as long as `more_may_be_due` says; the number of claims made."""
    claims = 0
    while True:
        claimed = worker.run_once()
        claims += 1
        if not (claimed and worker.more_may_be_due(claimed)):
            return claims


def ids_and_history(db: psycopg.Connection, inbox_ids: list[int]) -> set[tuple]:
    """The distinct (status, attempts, crashes, outcomes in order) of these events."""
    return {(status, attempts, crashes, tuple(outcomes)) for status, attempts, crashes, outcomes
            in db.execute(
                "SELECT i.status, i.attempts, i.crashes, array_agg(a.outcome ORDER BY a.id)"
                " FROM inbox i JOIN inbox_attempts a ON a.inbox_id = i.id"
                " WHERE i.id = ANY(%s) GROUP BY i.id", [inbox_ids]).fetchall()}


def test_the_batch_mates_of_a_crash_are_due_at_once_and_claimed_without_poll_ticks(
    database_url, db, registry, make_worker, worker_settings
):
    """Issue 18: a worker killed holding a full batch in a 10,000-event backlog. Its 100
    events all become suspects, one per claim; with the default backoff and a poll interval
    of an hour, they are processed in the same run of claims as the backlog, not one per
    poll tick after a minute's backoff."""
    registry.register("test", "noop", lambda event, tx: None)
    insert_events(db, "noop", 10_100)
    crashed = claim_and_die(database_url, 100)
    assert len(crashed) == 100
    slow = dataclasses.replace(worker_settings, retry_base_seconds=60.0,
                               retry_cap_seconds=3600.0, poll_interval_seconds=3600.0)
    worker = make_worker(slow)  # batch 100
    assert wait_rescued(worker) == 100

    claims = run_between_poll_ticks(worker)

    assert statuses(db) == {"processed": 10_100}
    assert ids_and_history(db, crashed) == {("processed", 2, 1, ("crashed", "processed"))}
    assert db.execute(
        "SELECT DISTINCT last_error FROM inbox WHERE id = ANY(%s)", [crashed]
    ).fetchall() == [("worker died during attempt 1 (doomed-worker) holding 100 events",)]
    # 100 full claims of the backlog, each suspect in a claim of its own, one empty claim.
    assert 200 <= claims <= 202


def test_a_crash_with_one_event_in_hand_keeps_the_backoff(database_url, db, make_worker,
                                                          worker_settings):
    [event_id] = insert_events(db, "effect", 1)
    assert len(claim_and_die(database_url, 1)) == 1
    slow = dataclasses.replace(worker_settings, retry_base_seconds=60.0,
                               retry_cap_seconds=3600.0)
    worker = make_worker(slow, rng=random.Random(18))  # first delay: ~42 s
    assert wait_rescued(worker) == 1

    row = event_row(db, event_id)
    assert (row["status"], row["attempts"], row["crashes"]) == ("pending", 1, 1)
    assert row["last_error"] == "worker died during attempt 1 (doomed-worker)"
    assert db.execute("SELECT next_attempt_at > now() + interval '10 seconds' FROM inbox"
                      ).fetchone()[0]
    assert worker.run_once() == 0


def test_a_batch_crash_never_makes_an_event_dead(database_url, db, registry, make_worker):
    """An innocent event on its last attempt, in a batch a poison batch-mate crashed: the
    crash is not its own, so it runs once more, alone."""
    registry.register("test", "effect", lambda event, tx: None)
    insert_events(db, "effect", 3)
    db.execute("UPDATE inbox SET attempts = 2")  # max_attempts is 3: the claim makes it 3
    assert len(claim_and_die(database_url, 3)) == 3
    worker = make_worker()
    assert wait_rescued(worker) == 3
    assert statuses(db) == {"pending": 3}
    assert run_between_poll_ticks(worker) == 4
    assert db.execute("SELECT DISTINCT status, attempts, crashes FROM inbox").fetchall() == [
        ("processed", 4, 1)]


def test_a_poison_event_in_a_full_batch_ends_dead_alone(database_url, db, registry,
                                                       make_worker):
    """A handler that kills its worker's backend, among 99 innocents: the batch crash
    costs each of them one attempt and makes them due at once; each then runs alone, and
    only the poison event crashes again, alone, until it is dead after the limit (3)."""
    registry.register("test", "effect", lambda event, tx: tx.outbox("test.ok", {}))

    @registry.handler("test", "poison")
    def poison(event, tx):
        tx.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    innocents = insert_events(db, "effect", 60, prefix="before")
    [poison_id] = insert_events(db, "poison", 1)
    innocents += insert_events(db, "effect", 39, prefix="after")
    crashes = 0
    for _ in range(10):
        try:
            run_between_poll_ticks(make_worker())  # a fresh child, as the supervisor makes
        except DatabaseUnavailable:  # the poison event took its worker's backend down
            crashes += 1
            assert wait_rescued(make_worker()) >= 1  # a sibling's poll tick
            continue
        if not statuses(db).get("pending"):
            break

    assert crashes == 3
    row = event_row(db, poison_id)
    assert (row["status"], row["attempts"], row["crashes"]) == ("dead", 3, 3)
    assert history(db, poison_id) == [(1, "crashed"), (2, "crashed"), (3, "crashed")]
    assert row["last_error"].startswith("worker died during attempt 3 (test-worker-")
    assert not row["last_error"].endswith("events")  # its last two crashes were alone
    ids = [r[0] for r in db.execute("SELECT id FROM inbox WHERE event_id = ANY(%s)",
                                    [innocents]).fetchall()]
    assert ids_and_history(db, ids) == {("processed", 2, 1, ("crashed", "processed"))}
    assert db.execute("SELECT count(*) FROM outbox WHERE topic = 'test.ok'").fetchone()[0] == 99
    # Its death raised one alert, in the rescue's transaction, naming it.
    [alert] = db.execute("SELECT payload FROM outbox WHERE topic = 'inbox.alert.event_dead'"
                         ).fetchall()
    assert alert[0]["count"] == 1 and alert[0]["ids"] == [poison_id]


class StopAfter:
    """A control that asks to stop once `n` handlers have started."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.started = 0

    def stop_requested(self) -> bool:
        return self.started >= self.n

    def busy(self) -> None:
        self.started += 1

    def idle(self) -> None:
        pass


def test_stopping_finishes_the_event_in_hand_and_gives_back_the_rest(effects, registry,
                                                                    make_worker):
    registry.register("test", "effect", record_effect)
    insert_events(effects, "effect", 5)
    worker = make_worker(batch_size=5, control=StopAfter(2))
    assert worker.run_once() == 5

    rows = effects.execute(
        "SELECT status, attempts, locked_backend FROM inbox ORDER BY id").fetchall()
    assert rows == [("processed", 1, None)] * 2 + [("pending", 0, None)] * 3
    assert effect_count(effects) == 2
    assert effects.execute("SELECT count(*) FROM inbox_attempts").fetchone()[0] == 2
    assert effects.execute(
        "SELECT count(*) FROM inbox WHERE next_attempt_at <= now()").fetchone()[0] == 5


def test_release_gives_back_leases_without_charging_an_attempt(db, make_worker):
    insert_events(db, "effect", 4)
    worker = make_worker()
    assert len(store.claim(worker.conn, worker.name, 10)) == 4
    assert worker.release() == 4
    assert db.execute("SELECT DISTINCT status, attempts, locked_backend FROM inbox"
                      ).fetchall() == [("pending", 0, None)]


def test_a_lease_that_changed_hands_is_not_finished(database_url, db):
    insert_events(db, "effect", 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        [claimed] = store.claim(conn, "w", 1)
        stale = store.Lease(claimed.lease.inbox_id, 1, claimed.lease.backend + 1,
                            claimed.lease.locked_at, "w")
        assert store.finish(conn, [store.Outcome(stale, "processed", "processed")]) == 0
        assert store.finish(conn, [store.Outcome(claimed.lease, "processed", "processed")]) == 1
    assert statuses(db) == {"processed": 1}


def test_the_claim_takes_due_events_oldest_first_up_to_the_batch(db, make_worker):
    insert_events(db, "effect", 5, prefix="late")
    db.execute("UPDATE inbox SET next_attempt_at = now() - interval '1 hour'"
               " WHERE event_id IN ('late_4', 'late_5')")
    db.execute("UPDATE inbox SET next_attempt_at = now() + interval '1 hour'"
               " WHERE event_id = 'late_1'")
    worker = make_worker()
    claimed = store.claim(worker.conn, worker.name, 3)
    assert sorted(e.event_id for e in claimed) == ["late_2", "late_4", "late_5"]
    assert all(e.lease.backend == worker.conn.info.backend_pid for e in claimed)
    assert {e.lease.attempts for e in claimed} == {1}



def test_the_session_plans_its_statements_again_every_poll_interval(db, make_worker,
                                                                   worker_settings):
    """psycopg prepares a statement run five times, and PostgreSQL then keeps one generic
    plan until the next ANALYZE: a claim prepared while the inbox was small kept joining
    by a sequential scan of the whole table as it grew. Once per poll interval the worker
    drops its prepared statements, and the next claims are planned for the table as it is."""
    insert_events(db, "effect", 8)
    settings = Settings(**{**worker_settings.__dict__, "poll_interval_seconds": 1.0})
    worker = make_worker(settings, batch_size=1)

    def claim_prepared() -> bool:
        statements = worker.conn.execute("SELECT statement FROM pg_prepared_statements")
        return any("SKIP LOCKED" in statement for (statement,) in statements)

    assert drain(worker.run_once) == 8
    assert claim_prepared()
    time.sleep(1.0)
    assert worker.run_once() == 0
    assert not claim_prepared()


def test_the_outcomes_find_their_rows_by_id_not_among_all_leases(db, make_worker):
    """inbox_finish is fenced on the lease, and its test for a leased row must not become
    an index condition: on inbox_due_idx's 'infinity' end it walked every worker's leases
    (and their dead entries) for each batch, 90 us per event at batch 32 and 170 us at 100,
    instead of looking up its own rows by id."""
    insert_events(db, "effect", 20000)
    db.execute("ANALYZE inbox")
    others = [make_worker(name=f"other-{n}") for n in range(4)]
    for other in others:
        store.claim(other.conn, other.name, 100)
    worker = make_worker()
    claimed = store.claim(worker.conn, worker.name, 32)
    outcomes = [Outcome(event.lease, "processed", "processed") for event in claimed]
    plan = json.dumps(worker.conn.execute(
        "EXPLAIN (FORMAT JSON) " + query("inbox_finish"), store._finish_params(outcomes)
    ).fetchone()[0])
    assert "inbox_pkey" in plan
    assert "inbox_due_idx" not in plan


def transactions_of_processed_events(db: psycopg.Connection) -> list[int]:
    """How many events each transaction finished, by the xmin of their final versions."""
    rows = db.execute("SELECT xmin::text, count(*) FROM inbox WHERE status = 'processed'"
                      " GROUP BY 1 ORDER BY 2 DESC").fetchall()
    return [count for _, count in rows]


def test_a_batch_runs_32_handlers_with_sql_per_transaction(effects, registry, make_worker):
    """A claim of 70 events whose handlers write: three transactions (32, 32, 6), each with
    its handlers' writes and outcomes, so no transaction passes PostgreSQL's 64 cached
    subtransactions."""
    registry.handler("test", "effect")(record_effect)
    insert_events(effects, "effect", 70)
    worker = make_worker(batch_size=100)
    assert worker.run_once() == 70
    assert transactions_of_processed_events(effects) == [32, 32, 6]
    assert effect_count(effects) == 70


def test_handlers_without_sql_share_one_transaction_per_batch(db, registry, make_worker):
    @registry.handler("test", "queue_only")
    def queue_only(event, tx):
        tx.outbox("crm.test", {"event": event.id})

    insert_events(db, "queue_only", 100)
    worker = make_worker(batch_size=100)
    assert worker.run_once() == 100
    assert transactions_of_processed_events(db) == [100]
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 100


@pytest.fixture
def payload_reads(monkeypatch) -> list[list[int]]:
    """The inbox ids of each payload read the worker makes (the real reads, counted)."""
    reads: list[list[int]] = []
    real = store.payloads

    def counted(conn, inbox_ids):
        reads.append(list(inbox_ids))
        return real(conn, inbox_ids)

    monkeypatch.setattr(store, "payloads", counted)
    return reads


def test_payloads_are_read_once_per_batch_and_exactly(db, registry, make_worker, payload_reads):
    amounts = []

    @registry.handler("test", "amount")
    def read_amount(event, tx):
        amounts.append(event.payload["amount"])

    insert_events(db, "amount", 3, payload={"amount": 123456789012345678901234567890})
    insert_events(db, "unhandled", 2, prefix="other")
    assert make_worker().run_once() == 5
    assert amounts == [123456789012345678901234567890] * 3
    assert len(payload_reads) == 1 and len(payload_reads[0]) == 3  # handled events only


def test_handlers_that_never_read_the_payload_cost_no_read(db, registry, make_worker,
                                                          payload_reads):
    registry.handler("test", "effect")(lambda event, tx: tx.outbox("crm.test", {"id": event.id}))
    insert_events(db, "effect", 5)
    assert make_worker().run_once() == 5
    assert payload_reads == []
    assert statuses(db) == {"processed": 5}


def test_a_payload_first_read_after_its_batch_is_a_clear_error(db, registry, make_worker):
    kept = []
    registry.handler("test", "effect")(lambda event, tx: kept.append(event))
    insert_events(db, "effect", 1)
    assert make_worker().run_once() == 1
    with pytest.raises(RuntimeError, match="after its batch ended"):
        _ = kept[0].payload


def test_a_failed_payload_read_fails_only_the_handler_that_asked(
    database_url, effects, registry, make_worker, worker_settings
):
    """The first handler's SQL began the batch's transaction; the second handler's payload
    read then waits on a table lock past the handler budget. It fails that handler alone:
    the read ran in a savepoint of its own, and the batch commits the first event."""
    registry.handler("test", "effect")(record_effect)

    @registry.handler("test", "read")
    def read_while_locked(event, tx):
        with psycopg.connect(database_url) as locker:
            locker.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
            _ = event.payload  # waits for the lock until the budget cancels it

    [first] = insert_events(effects, "effect", 1, prefix="first")
    [second] = insert_events(effects, "read", 1, prefix="second")
    tight = Settings(**{**worker_settings.__dict__, "handler_timeout_seconds": 0.3})
    assert make_worker(tight).run_once() == 2
    assert event_row(effects, first)["status"] == "processed"
    assert effect_count(effects, first) == 1
    row = event_row(effects, second)
    assert row["status"] == "pending" and row["last_error"].startswith("QueryCanceled")

# -- helpers for out-of-order events ---------------------------------------------------------


def test_apply_if_newer_refuses_older_versions_of_an_object(db, registry, make_worker):
    results: dict[str, bool] = {}

    @registry.handler("test", "versioned")
    def versioned(event, tx):
        results[event.id] = tx.apply_if_newer("thing:1", event.payload["created"])

    for name, created in [("v2", 200), ("v1", 100), ("v2again", 200), ("v3", 300)]:
        db.execute(
            "INSERT INTO inbox (provider, event_id, event_type, payload, raw_body)"
            " VALUES ('test', %s, 'versioned', %s::jsonb, '')",
            [name, f'{{"created": {created}}}'],
        )
        drain(make_worker().run_once)
    assert results == {"v2": True, "v1": False, "v2again": True, "v3": True}
    assert db.execute("SELECT last_created FROM inbox_object_versions").fetchone()[0] == 300


def test_apply_if_newer_rolls_back_with_a_failing_handler(db, registry, make_worker):
    @registry.handler("test", "versioned")
    def versioned(event, tx):
        tx.apply_if_newer("thing:1", 500)
        raise RuntimeError("after recording the version")

    insert_events(db, "versioned", 1)
    make_worker().run_once()
    assert db.execute("SELECT count(*) FROM inbox_object_versions").fetchone()[0] == 0


def test_lock_object_serialises_two_workers(database_url, db, registry, make_worker):
    # The first worker holds the object's lock in an open transaction; the second waits.
    registry.register("test", "locked", lambda event, tx: tx.lock_object("thing:1"))
    insert_events(db, "locked", 1)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('thing:1', 0))")
        worker = make_worker()
        done = threading.Event()
        thread = threading.Thread(target=lambda: (worker.run_once(), done.set()))
        thread.start()
        assert not done.wait(0.5)  # blocked on the lock
        holder.rollback()
        assert done.wait(10)
        thread.join()
    assert statuses(db) == {"processed": 1}
