"""The per-minute counters of attempts and delivery tries (0012_minute_counts.sql, by
destination since 0013_delivery_destinations.sql) agree with grouping the history tables,
and old minutes are forgotten."""

from __future__ import annotations

import concurrent.futures

import psycopg

from inbox.queries import query

ATTEMPTS = """
INSERT INTO inbox_attempts (inbox_id, attempt, worker, started_at, finished_at, outcome)
SELECT %(inbox_id)s, 1, 'w', t, t, (ARRAY['processed', 'retry', 'dead'])[1 + n %% 3]
FROM generate_series(1, %(count)s) n,
     LATERAL (SELECT now() - (n %% 120) * interval '1 minute' AS t) at
"""


DELIVERIES = """
INSERT INTO outbox_attempts (outbox_id, attempt, relay, started_at, finished_at, outcome,
                             destination)
SELECT 1, 1, 'r', now(), now(), (ARRAY['sent', 'retry'])[1 + mod(n, 2)],
       (ARRAY['https://crm.example:443', 'log:', NULL])[1 + mod(n, 3)]
FROM generate_series(1, 7) n
"""


def grouped(conn: psycopg.Connection, table: str) -> dict[tuple, int]:
    """(minute, outcome, destination) -> rows of the history table ('' when none)."""
    destination = "coalesce(destination, '')" if table == "outbox_attempts" else "''"
    rows = conn.execute(f"SELECT date_trunc('minute', finished_at), outcome, {destination},"
                        f" count(*) FROM {table} GROUP BY 1, 2, 3").fetchall()
    return {(minute, outcome, dest): n for minute, outcome, dest, n in rows}


def kept(conn: psycopg.Connection, source: str) -> dict[tuple, int]:
    rows = conn.execute("SELECT minute, outcome, destination, sum(n) FROM inbox_minute_counts"
                        " WHERE source = %s GROUP BY 1, 2, 3", [source]).fetchall()
    return {(minute, outcome, dest): n for minute, outcome, dest, n in rows}


def test_counters_agree_with_the_history_written_from_several_connections(database_url, db):
    db.execute("INSERT INTO inbox (provider, event_id, event_type, payload, raw_body)"
               " VALUES ('t', 'e', 't', '{}', '')")
    db.execute("INSERT INTO outbox (topic, payload, idempotency_key) VALUES ('t', '{}', 'k')")

    def write(_: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for _ in range(20):
                conn.execute(ATTEMPTS, {"inbox_id": 1, "count": 50})
                conn.execute(DELIVERIES)

    with concurrent.futures.ThreadPoolExecutor(6) as threads:
        list(threads.map(write, range(6)))
    assert kept(db, "attempts") == grouped(db, "inbox_attempts")
    assert kept(db, "deliveries") == grouped(db, "outbox_attempts")
    assert sum(kept(db, "attempts").values()) == 6 * 20 * 50
    assert {dest for _, _, dest in kept(db, "deliveries")} == {"https://crm.example:443",
                                                               "log:", ""}


def test_minutes_older_than_two_days_are_forgotten(db):
    db.execute("INSERT INTO inbox_minute_counts (minute, source, outcome, shard, n) VALUES"
               " (date_trunc('minute', now() - interval '3 days'), 'attempts', 'processed',"
               " 0, 5), (date_trunc('minute', now()), 'attempts', 'processed', 0, 7)")
    db.execute(query("minute_counts_forget"))
    assert db.execute("SELECT sum(n) FROM inbox_minute_counts").fetchone()[0] == 7
