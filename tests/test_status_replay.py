"""`inbox status` and `inbox replay` in the contract's forms, through the real command."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg

from inbox.worker import store
from tests.support import REPO
from tests.worker_support import event_row, insert_events


def inbox_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inbox.cli", *args], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "DATABASE_URL": database_url},
    )


def set_status(db: psycopg.Connection, status: str, event_ids: list[str]) -> None:
    db.execute(
        "UPDATE inbox SET status = %s, attempts = 16, last_error = 'boom' WHERE event_id = ANY(%s)",
        [status, event_ids],
    )


def test_status_json_has_the_contract_form(database_url, db):
    insert_events(db, "a", 3, prefix="pending")
    set_status(db, "processed", insert_events(db, "a", 2, prefix="processed"))
    set_status(db, "dead", insert_events(db, "a", 1, prefix="dead"))
    db.execute("INSERT INTO outbox (topic, payload, idempotency_key, status)"
               " VALUES ('t', '{}', 'k1', 'sent'), ('t', '{}', 'k2', 'pending')")

    result = inbox_cli(database_url, "status", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {k: document["inbox"][k] for k in ("pending", "processed", "ignored", "dead")} == {
        "pending": 3, "processed": 2, "ignored": 0, "dead": 1
    }
    assert document["outbox"] == {"pending": 1, "sent": 1, "dead": 0}


def test_status_for_people(database_url, db):
    insert_events(db, "a", 2)
    result = inbox_cli(database_url, "status")
    assert result.returncode == 0, result.stderr
    assert "pending 2" in result.stdout and "sent 0" in result.stdout


def test_replay_event_ids_gives_a_fresh_budget_and_keeps_history(database_url, db):
    dead = insert_events(db, "a", 3, prefix="dead")
    set_status(db, "dead", dead)
    db.execute("INSERT INTO inbox_attempts (inbox_id, attempt, started_at, outcome, error)"
               " SELECT id, 16, now(), 'dead', 'boom' FROM inbox WHERE event_id = 'dead_1'")
    db.execute("LISTEN inbox_events")

    result = inbox_cli(database_url, "replay", "dead_1", "dead_2")
    assert result.returncode == 0, result.stderr
    assert "2 event(s) back to pending" in result.stdout
    for event_id in ("dead_1", "dead_2"):
        row = event_row(db, event_id)
        assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, "boom")
    assert event_row(db, "dead_3")["status"] == "dead"
    assert db.execute("SELECT count(*) FROM inbox_attempts").fetchone()[0] == 1
    assert list(db.notifies(timeout=5, stop_after=1))  # workers are woken


def test_replay_by_status_and_type(database_url, db):
    set_status(db, "dead", insert_events(db, "invoice.paid", 2, prefix="paid"))
    set_status(db, "dead", insert_events(db, "invoice.voided", 2, prefix="voided"))
    set_status(db, "ignored", insert_events(db, "invoice.paid", 1, prefix="ignored"))

    result = inbox_cli(database_url, "replay", "--status", "dead", "--type", "invoice.paid")
    assert result.returncode == 0, result.stderr
    assert dict(db.execute(
        "SELECT event_id, status FROM inbox ORDER BY event_id").fetchall()) == {
        "ignored_1": "ignored", "paid_1": "pending", "paid_2": "pending",
        "voided_1": "dead", "voided_2": "dead",
    }
    result = inbox_cli(database_url, "replay", "--status", "dead")
    assert result.returncode == 0 and "2 event(s) back to pending" in result.stdout
    assert db.execute("SELECT count(*) FROM inbox WHERE status = 'dead'").fetchone()[0] == 0


def test_replay_leaves_an_event_a_worker_holds_and_reports_unknown_ids(database_url, db):
    [held] = insert_events(db, "a", 1, prefix="held")
    with psycopg.connect(database_url, autocommit=True) as worker_conn:
        store.claim(worker_conn, "w", 1)
        result = inbox_cli(database_url, "replay", held, "evt_nope")
        assert result.returncode == 1
        assert "evt_nope" in result.stderr and held in result.stderr
        row = event_row(db, held)
        assert (row["attempts"], row["locked_backend"] is not None) == (1, True)


def test_replay_needs_ids_or_a_status(database_url):
    assert inbox_cli(database_url, "replay").returncode == 2
    assert inbox_cli(database_url, "replay", "--status", "pending").returncode == 2
