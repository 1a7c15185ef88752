"""inbox.db loads PostgreSQL's ±infinity (a leased row's next_attempt_at) as the largest and
smallest Python values, in text and binary format; every other value as psycopg does."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from inbox import db

SQL = ("SELECT 'infinity'::timestamptz, '-infinity'::timestamptz, "
       "'2024-07-25 10:00:00.5+02'::timestamptz, "
       "'infinity'::timestamp, '-infinity'::timestamp, '2024-07-25 10:00'::timestamp, "
       "'infinity'::date, '-infinity'::date, '2024-07-25'::date, NULL::timestamptz")
EXPECTED = (
    datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC),
    datetime(2024, 7, 25, 8, 0, 0, 500000, tzinfo=UTC),
    datetime.max, datetime.min, datetime(2024, 7, 25, 10, 0),
    date.max, date.min, date(2024, 7, 25), None,
)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_infinity_loads_everywhere_after_importing_inbox_db(database_url, binary):
    with db.connect(database_url) as conn, conn.cursor(binary=binary) as cur:
        row = cur.execute(SQL).fetchone()
    assert row == EXPECTED


def test_plain_psycopg_connections_and_the_session_time_zone(database_url):
    """Registered on psycopg.adapters: connections made without inbox.db get it too, and a
    finite timestamp still arrives in the session's time zone."""
    with psycopg.connect(database_url, autocommit=True, options="-c TimeZone=Asia/Tokyo") as c:
        infinity, finite = c.execute(
            "SELECT 'infinity'::timestamptz, '2024-07-25 10:00+00'::timestamptz").fetchone()
    assert infinity == datetime.max.replace(tzinfo=UTC)
    assert finite == datetime(2024, 7, 25, 10, tzinfo=UTC)
    assert finite.utcoffset() == timedelta(hours=9)
    assert finite.tzinfo != UTC


def test_a_leased_row_reads_back(db):
    db.execute("INSERT INTO outbox (topic, payload, idempotency_key, next_attempt_at)"
               " VALUES ('t', '{}', 'k', 'infinity')")
    assert db.execute("SELECT next_attempt_at FROM outbox").fetchone()[0] == (
        datetime.max.replace(tzinfo=UTC))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_json_and_jsonb_load_exactly_even_beyond_64_bit_integers(database_url, binary):
    """jsonb is parsed with orjson, which refuses integers past 64 bits: those still load,
    exactly, through the standard library."""
    document = ('{"amount": 123456789012345678901234567890, "currency": "eur", '
                '"lines": [1.5, null, true, "\\u00e9"]}')
    with db.connect(database_url) as conn, conn.cursor(binary=binary) as cur:
        as_jsonb, as_json, small = cur.execute(
            "SELECT %s::jsonb, %s::json, '{\"id\": 9007199254740993}'::jsonb",
            [document, document]).fetchone()
    expected = {"amount": 123456789012345678901234567890, "currency": "eur",
                "lines": [1.5, None, True, "é"]}
    assert as_jsonb == expected and as_json == expected
    assert small == {"id": 9007199254740993}  # past a double's precision, still exact
