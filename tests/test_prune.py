"""`inbox prune`: what it deletes, what it never deletes, batches, and no waiting on locks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from inbox.timespec import BadTimeSpec, parse_duration
from tests import audit_sample
from tests.cli_support import cli_env, inbox


@pytest.fixture
def env(database_url, tmp_path):
    return cli_env(tmp_path, DATABASE_URL=database_url)


def event_ids(db) -> set[str]:
    return {row[0] for row in db.execute("SELECT event_id FROM inbox")}


def message_keys(db) -> set[str]:
    return {row[0] for row in db.execute("SELECT idempotency_key FROM outbox")}


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)),
    ("45s", timedelta(seconds=45)), ("2w", timedelta(days=14)),
    ("1d12h", timedelta(days=1, hours=12)), (" 7D ", timedelta(days=7)),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d30", "30 days", "-1d", "1.5h", "30x"])
def test_bad_durations(text):
    with pytest.raises(BadTimeSpec):
        parse_duration(text)


def test_dry_run_counts_and_deletes_nothing(env, db):
    audit_sample.build(db)
    before = (event_ids(db), message_keys(db))
    result = inbox("prune", "--older-than", "30d", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "would delete 1 outbox message(s) (sent)" in result.stdout
    # evt_sample_old: processed 41 days ago, its only message about to go as well.
    assert "would delete 1 event(s) (processed, ignored)" in result.stdout
    assert (event_ids(db), message_keys(db)) == before

    result = inbox("prune", "--older-than", "30d", "--dry-run", "--include-dead", env=env)
    assert "would delete 2 event(s) (processed, ignored, dead)" in result.stdout


def test_prune_keeps_dead_pending_and_recent(env, db):
    audit_sample.build(db)
    # Old but pending (a retry due far in the future): never pruned.
    audit_sample.add_event(db, "invoice.paid", "evt_old_pending", attempts=3,
                           last_error="boom", received_ago=timedelta(days=90))
    result = inbox("prune", "--older-than", "30d", env=env)
    assert result.returncode == 0, result.stderr
    assert "outbox: deleted 1 outbox message(s)" in result.stdout
    assert "inbox: deleted 1 event(s)" in result.stdout
    assert "evt_sample_old" not in event_ids(db)
    assert "evt_sample_old:email" not in message_keys(db)
    assert {"evt_sample_old_dead", "evt_old_pending", "evt_sample_paid",
            "evt_sample_dead"} <= event_ids(db)
    # Its attempts history went with it, and its message's delivery attempts with that.
    assert db.execute("SELECT count(*) FROM inbox_attempts a WHERE NOT EXISTS "
                      "(SELECT 1 FROM inbox i WHERE i.id = a.inbox_id)").fetchone()[0] == 0
    assert db.execute("SELECT o.idempotency_key FROM outbox_attempts a"
                      " JOIN outbox o ON o.id = a.outbox_id ORDER BY a.id").fetchall() == [
        ("evt_sample_paid:email",), ("evt_sample_paid:partner",)]

    result = inbox("prune", "--older-than", "30d", "--include-dead", env=env)
    assert result.returncode == 0, result.stderr
    assert "evt_sample_old_dead" not in event_ids(db)
    assert "evt_old_pending" in event_ids(db)

    # A shorter age reaches the recent history, still never pending or dead rows.
    result = inbox("prune", "--older-than", "1m", env=env)
    assert result.returncode == 0, result.stderr
    assert event_ids(db) == {"evt_sample_paid", "evt_sample_dead", "evt_sample_retrying",
                             "evt_sample_fresh", "evt_old_pending"}
    # evt_sample_paid stays: its pending and dead messages are still there.
    assert message_keys(db) == {"evt_sample_paid:crm", "evt_sample_paid:partner"}


def test_an_event_goes_only_after_its_messages(env, db):
    old = timedelta(days=60)
    event = audit_sample.add_event(db, "invoice.paid", "evt_with_dead_message",
                                   status="processed", received_ago=old, processed_ago=old)
    audit_sample.add_message(db, event, "crm.update", "k-dead", status="dead",
                             created_ago=old)
    result = inbox("prune", "--older-than", "30d", env=env)
    assert result.returncode == 0, result.stderr
    assert event_ids(db) == {"evt_with_dead_message"} and message_keys(db) == {"k-dead"}

    result = inbox("prune", "--older-than", "30d", "--include-dead", env=env)
    assert result.returncode == 0, result.stderr
    assert event_ids(db) == set() and message_keys(db) == set()


def bulk_history(db, events: int, age: timedelta) -> None:
    """`events` processed events, each with one sent message, all `age` old."""
    db.execute(
        """
        WITH e AS (
            INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, status,
                               attempts, received_at, processed_at)
            SELECT 'stripe', 'evt_bulk_' || n, 'invoice.paid', '{}', '', 'processed', 1,
                   now() - %(age)s::interval, now() - %(age)s::interval
            FROM generate_series(1, %(n)s) n
            RETURNING id, event_id
        )
        INSERT INTO outbox (inbox_id, topic, payload, idempotency_key, status, created_at,
                            sent_at)
        SELECT id, 'email.send', '{}', event_id, 'sent', now() - %(age)s::interval,
               now() - %(age)s::interval
        FROM e
        """,
        {"n": events, "age": age},
    )


def test_batches_until_everything_old_is_gone(env, db):
    bulk_history(db, 2500, timedelta(days=31))
    audit_sample.add_event(db, "invoice.paid", "evt_recent", status="processed",
                           received_ago=timedelta(days=1), processed_ago=timedelta(days=1))
    result = inbox("prune", "--older-than", "30d", "--batch-size", "1000", env=env)
    assert result.returncode == 0, result.stderr
    assert "deleting 2500 outbox message(s)" in result.stdout
    assert "outbox: deleted 2500" in result.stdout and "inbox: deleted 2500" in result.stdout
    assert event_ids(db) == {"evt_recent"} and message_keys(db) == set()


def test_rows_held_by_others_are_skipped_not_waited_for(env, db, database_url):
    bulk_history(db, 10, timedelta(days=40))
    first, second = [row[0] for row in db.execute("SELECT id FROM inbox ORDER BY id LIMIT 2")]
    with psycopg.connect(database_url) as other:  # a transaction holding two rows
        other.execute("SELECT 1 FROM outbox WHERE inbox_id = %s FOR UPDATE", [first])
        other.execute("SELECT 1 FROM inbox WHERE id = %s FOR UPDATE", [second])
        started = time.monotonic()
        result = inbox("prune", "--older-than", "30d", "--batch-size", "3", env=env)
        elapsed = time.monotonic() - started
        other.rollback()
    assert result.returncode == 0, result.stderr
    assert elapsed < 20
    # The held message stays, so does its event; the held event stays, its message went.
    assert "outbox: deleted 9" in result.stdout and "inbox: deleted 8" in result.stdout
    assert sorted(row[0] for row in db.execute("SELECT id FROM inbox")) == [first, second]
    assert [row[0] for row in db.execute("SELECT inbox_id FROM outbox")] == [first]


def test_batches_are_short_transactions(env, db, database_url):
    """While prune runs, no transaction of it stays open for long: sample pg_stat_activity."""
    bulk_history(db, 6000, timedelta(days=40))
    longest = [0.0]
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) "
                    "FROM pg_stat_activity WHERE application_name = 'inbox-prune'"
                ).fetchone()
                longest[0] = max(longest[0], float(row[0]))
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = inbox("prune", "--older-than", "30d", "--batch-size", "500", env=env)
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    assert "inbox: deleted 6000" in result.stdout
    assert longest[0] < 2.0


def test_usage_errors(env):
    result = inbox("prune", "--older-than", "thirty days", env=env)
    assert result.returncode == 2 and "not a duration" in result.stderr
    result = inbox("prune", env=env)
    assert result.returncode == 2 and "--older-than" in result.stderr
    result = inbox("prune", "--older-than", "1d", "--batch-size", "0", env=env)
    assert result.returncode == 2 and "--batch-size" in result.stderr
