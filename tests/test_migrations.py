"""Migrations: the schema the code expects, applied once, safe to run concurrently."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from inbox.migrations import migrate, pending
from inbox.queries import all_queries, migration_files, parse_queries, query

INBOX_COLUMNS = {
    "id", "provider", "event_id", "event_type", "payload", "status", "attempts",
    "next_attempt_at", "last_error", "received_at", "processed_at", "raw_body",
}
OUTBOX_COLUMNS = {
    "id", "inbox_id", "topic", "payload", "idempotency_key", "status", "attempts",
    "next_attempt_at", "last_error", "created_at", "sent_at",
}


@pytest.fixture
def empty_url(pg_cluster):
    name = "empty_for_migrations"
    admin = pg_cluster.url(database="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.url(database=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def columns(conn, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
        [table],
    ).fetchall()
    return dict(rows)


def test_contract_tables_and_columns(db):
    inbox = columns(db, "inbox")
    assert inbox.keys() >= INBOX_COLUMNS
    assert inbox["id"] == "bigint" and inbox["payload"] == "jsonb"
    assert inbox["raw_body"] == "bytea"
    assert columns(db, "outbox").keys() >= OUTBOX_COLUMNS


def test_unique_keys_and_due_indexes(db):
    indexes = dict(db.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('inbox', 'outbox')"
    ).fetchall())
    assert "UNIQUE" in indexes["inbox_provider_event_id_key"]
    assert "(provider, event_id)" in indexes["inbox_provider_event_id_key"]
    assert "UNIQUE" in indexes["outbox_idempotency_key_key"]
    for table in ("inbox", "outbox"):
        due = indexes[f"{table}_due_idx"]
        assert "(next_attempt_at, id)" in due and "WHERE (status = 'pending'::text)" in due


def test_statuses_are_constrained(db):
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, status)"
            " VALUES ('p', 'e', 't', '{}', '', 'weird')"
        )


def test_migrate_applies_each_file_once_in_order(empty_url):
    applied = migrate(empty_url)
    assert applied == [name for _, name, _ in migration_files()]
    assert migrate(empty_url) == []
    with psycopg.connect(empty_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM inbox_migrations")]
        assert versions == sorted(versions) and len(versions) == len(applied)
        assert pending(conn) == []


def test_two_migrates_started_together_are_safe(empty_url):
    errors: list[BaseException] = []
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(empty_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(len(r) for r in results)[-1] == len(migration_files())
    assert sum(len(r) for r in results) == len(migration_files())


def test_a_failing_migration_rolls_back_alone(empty_url, tmp_path, monkeypatch):
    """Each file runs in its own transaction: a broken one leaves no half-applied state."""
    import inbox.migrations as migrations

    broken = [*migration_files(), (9999, "9999_broken.sql", "CREATE TABLE half (id int); SELEC")]
    monkeypatch.setattr(migrations, "migration_files", lambda: broken)
    with pytest.raises(psycopg.errors.SyntaxError):
        migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('inbox')").fetchone()[0] == "inbox"


def test_cli_migrate_release_phase(empty_url):
    env_python = sys.executable
    result = subprocess.run(
        [env_python, "-m", "inbox.cli", "migrate"], capture_output=True, text=True,
        env={"DATABASE_URL": empty_url, "PATH": "/usr/bin:/bin"}, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "applied" in result.stdout


def test_query_files_parse_and_names_are_unique():
    assert parse_queries("-- name: a\nSELECT 1;\n-- name: b\nSELECT 2;") == {
        "a": "SELECT 1;", "b": "SELECT 2;"
    }
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    assert "ON CONFLICT (provider, event_id) DO NOTHING" in query("inbox_insert")


def test_an_include_line_stands_for_the_named_fragment():
    queries = all_queries()
    assert "-- include:" not in "".join(queries.values())
    events = queries["console_events"]
    assert queries["console_events_filter"].rstrip(";") in events
    assert events.index("status") < events.index("event_type = %(event_type)s")
