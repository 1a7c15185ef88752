"""Queries of the web process: store a verified event, answer readiness."""

from __future__ import annotations

from collections.abc import Callable

from psycopg_pool import ConnectionPool

from inbox import db, migrations
from inbox.errors import InvalidEvent
from inbox.providers import ReceivedEvent
from inbox.queries import query


def insert_event(pool: ConnectionPool, event: ReceivedEvent, wake: Callable[[], None]) -> bool:
    """Store the event once and wake workers; False when it was already stored.

    Returns only after the insert has committed. `wake` (WakeNotifier.wake) is called
    after the commit, and only for a new event: it asks the process's notifier thread for
    a NOTIFY rather than sending one, so the request makes one round trip, not two.
    """
    params = {
        "provider": event.provider,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "payload": event.payload_text,
        "raw_body": event.raw_body,
        "signature": event.signature,
    }

    def insert(conn: db.Connection) -> bool:
        try:
            row = conn.execute(query("inbox_insert"), params).fetchone()
        except db.DataError as exc:
            # Valid JSON that jsonb refuses (a \u0000 escape, a lone surrogate): the
            # sender's problem, not an outage.
            raise InvalidEvent(f"payload cannot be stored: {exc}") from None
        return row is not None

    stored = db.run_idempotent(pool, insert)
    if stored:
        wake()
    return stored


def readiness(pool: ConnectionPool) -> list[str]:
    """Problems that keep the receiver from taking events; empty when ready."""
    with db.connection(pool) as conn:
        missing = migrations.pending(conn)
    return [f"migration not applied: {name}" for name in missing]
