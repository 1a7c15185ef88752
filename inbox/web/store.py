"""Queries of the web process: store a verified event, answer readiness."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg_pool import ConnectionPool

from inbox import db, migrations
from inbox.errors import InvalidEvent
from inbox.providers import ReceivedEvent
from inbox.queries import query


def insert_events(
    pool: ConnectionPool, events: Sequence[ReceivedEvent]
) -> list[bool | InvalidEvent]:
    """Store each event once, all in one statement; for each, True when it was stored now,
    False when it was already there (or came earlier in `events`), or the InvalidEvent
    that kept it out. Returns only after the insert has committed.

    jsonb refuses some valid JSON (a \\u0000 escape, a lone surrogate), and one refused
    payload fails the whole statement: then each event is stored alone, so only the
    refused one is refused. Database trouble raises DatabaseUnavailable for all of them.
    """
    try:
        stored = db.run_idempotent(pool, lambda conn: insert_rows(conn, events))
    except db.DataError as exc:
        if len(events) == 1:
            return [InvalidEvent(f"payload cannot be stored: {exc}")]
        return [insert_events(pool, [event])[0] for event in events]
    results: list[bool | InvalidEvent] = []
    for event in events:
        key = (event.provider, event.event_id)
        results.append(key in stored)
        stored.discard(key)  # a twin later in the batch is a duplicate
    return results


def insert_rows(conn: db.Connection, events: Sequence[ReceivedEvent]
                ) -> set[tuple[str, str]]:
    """Run `inbox_insert` for `events` on `conn`: the (provider, event_id) of the events
    stored by this insert. Also how `inbox reconcile stripe` stores a page of events."""
    rows = conn.execute(query("inbox_insert"), {
        "providers": [event.provider for event in events],
        "event_ids": [event.event_id for event in events],
        "event_types": [event.event_type for event in events],
        "payloads": [event.payload_text for event in events],
        "raw_bodies": [event.raw_body for event in events],
        "signatures": [event.signature for event in events],
        "sources": [event.source for event in events],
        "accounts": [event.account for event in events],
    }).fetchall()
    return set(rows)


def readiness(pool: ConnectionPool) -> list[str]:
    """Problems that keep the receiver from taking events; empty when ready."""
    with db.connection(pool) as conn:
        missing = migrations.pending(conn)
    return [f"migration not applied: {name}" for name in missing]
