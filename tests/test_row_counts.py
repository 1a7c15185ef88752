"""The trigger-kept counts by status (0007_row_counts.sql) equal count(*) after every kind
of statement that changes rows: the receiver's inserts, claims, outcomes, crash rescue,
replays, prunes, deletes and truncation, from several connections at once."""

from __future__ import annotations

import concurrent.futures

import psycopg
import pytest

from inbox.store import system_state

SEED = """
INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, status, last_error)
SELECT 'stripe', %(prefix)s || n, 't', '{}', '', (ARRAY['pending', 'processed', 'ignored',
       'dead'])[1 + n %% 4], CASE WHEN n %% 4 = 3 THEN 'x' END
FROM generate_series(1, %(count)s) n
"""


def counted(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    """What psql counts, in the shape system_state.read() returns."""
    found: dict[str, dict[str, int]] = {}
    for table, statuses in (("inbox", system_state.INBOX_STATUSES),
                            ("outbox", system_state.OUTBOX_STATUSES)):
        counts = dict.fromkeys(statuses, 0)
        counts.update(dict(conn.execute(
            f"SELECT status, count(*) FROM {table} GROUP BY status").fetchall()))
        found[table] = counts
    return found


def kept(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    state = system_state.read(conn)
    return {"inbox": dict(state.inbox), "outbox": dict(state.outbox)}


def test_counts_follow_every_kind_of_change(db):
    db.execute(SEED, {"prefix": "evt_", "count": 1000})
    db.execute("INSERT INTO outbox (inbox_id, topic, payload, idempotency_key, status)"
               " SELECT id, 't', '{}', 'k' || id, (ARRAY['pending', 'sent', 'dead'])[1 + id % 3]"
               " FROM inbox WHERE id <= 300")
    assert kept(db) == counted(db)
    # A lease changes no status; an outcome does; so does a replay.
    db.execute("UPDATE inbox SET next_attempt_at = 'infinity', locked_backend = 1"
               " WHERE status = 'pending' AND id < 100")
    assert kept(db) == counted(db)
    db.execute("UPDATE inbox SET status = 'processed', locked_backend = NULL"
               " WHERE locked_backend = 1")
    db.execute("UPDATE inbox SET status = 'pending', attempts = 0 WHERE status = 'dead'"
               " AND id % 2 = 0")
    db.execute("UPDATE outbox SET status = 'sent' WHERE status = 'pending'")
    assert kept(db) == counted(db)
    # Deletes (prune), a rolled-back transaction, then TRUNCATE ... CASCADE.
    db.execute("DELETE FROM outbox WHERE status = 'sent' AND id % 5 = 0")
    db.execute("DELETE FROM inbox WHERE status = 'ignored' AND id > 900")
    with pytest.raises(psycopg.errors.RaiseException), db.transaction():
        db.execute("UPDATE inbox SET status = 'dead' WHERE status = 'processed'")
        db.execute("DO $$ BEGIN RAISE EXCEPTION 'roll back'; END $$")
    assert kept(db) == counted(db)
    db.execute("TRUNCATE inbox CASCADE")
    assert kept(db) == counted(db) == {"inbox": dict.fromkeys(system_state.INBOX_STATUSES, 0),
                                       "outbox": dict.fromkeys(system_state.OUTBOX_STATUSES, 0)}


def test_concurrent_writers_keep_exact_counts(database_url, db):
    """Eight connections insert, flip statuses and delete at once; the counts still add up
    (and no writer deadlocks on the counter rows)."""
    db.execute(SEED, {"prefix": "evt_base_", "count": 2000})

    def writer(n: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for round_ in range(30):
                conn.execute(SEED, {"prefix": f"evt_w{n}_{round_}_", "count": 20})
                with conn.transaction():
                    conn.execute("UPDATE inbox SET status = 'processed' WHERE id IN ("
                                 " SELECT id FROM inbox WHERE status = 'pending'"
                                 " ORDER BY random() LIMIT 10 FOR UPDATE SKIP LOCKED)")
                    conn.execute("UPDATE inbox SET status = 'dead' WHERE id IN ("
                                 " SELECT id FROM inbox WHERE status = 'ignored'"
                                 " ORDER BY random() LIMIT 5 FOR UPDATE SKIP LOCKED)")
                conn.execute("DELETE FROM inbox WHERE id IN (SELECT id FROM inbox"
                             " WHERE status = 'processed' ORDER BY random() LIMIT 3"
                             " FOR UPDATE SKIP LOCKED)")

    with concurrent.futures.ThreadPoolExecutor(8) as threads:
        list(threads.map(writer, range(8)))
    assert kept(db) == counted(db)


def test_the_first_fill_counts_rows_stored_before_the_migration(pg_cluster):
    """A database with events already stored when 0007 is applied (an upgrade)."""
    from inbox.migrations import migrate
    from inbox.queries import migration_files, query

    admin = pg_cluster.url(database="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS upgrade_counts")
        conn.execute("CREATE DATABASE upgrade_counts")
    url = pg_cluster.url(database="upgrade_counts")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for version, _, sql in migration_files():
                if version < 7:
                    conn.execute(sql)
            conn.execute(query("migrations_create_table"))
            for version, name, _ in migration_files():
                if version < 7:
                    conn.execute(query("migrations_record"), {"version": version, "name": name})
            conn.execute(SEED, {"prefix": "evt_old_", "count": 101})
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert kept(conn) == counted(conn)
            assert kept(conn)["inbox"]["pending"] == 25
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE upgrade_counts WITH (FORCE)")
