"""Queries of Stripe's reconciliation: one function per named query of sql/queries/stripe.sql,
and the page insert, which is the receiver's own (`inbox_insert` via inbox.web.store)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inbox import db
from inbox.providers import ReceivedEvent
from inbox.queries import query
from inbox.web.store import insert_rows

PLATFORM_SCOPE = "stripe"
THIN_SCOPE = "stripe-thin"


def scope_of(account: str | None, *, thin: bool = False) -> str:
    """The inbox_stripe_reconcile row of a listing: the platform's, or one per account;
    thin events' (`GET /v2/core/events`) apart from snapshot events' (`GET /v1/events`),
    as each listing has its own watermark: 'stripe', 'stripe:acct_...', 'stripe-thin',
    'stripe-thin:acct_...'."""
    base = THIN_SCOPE if thin else PLATFORM_SCOPE
    return f"{base}:{account}" if account else base


@dataclass(frozen=True)
class ReconcileState:
    watermark: int | None  # Stripe `created` (Unix seconds) covered up to
    due: bool  # no automatic run completed within the interval
    now_unix: int  # the database's clock


def store_page(conn: db.Connection, events: Sequence[ReceivedEvent]) -> set[str]:
    """Store the events the inbox lacks, in one autocommit `inbox_insert`; the ids stored.
    Then, after that commit, wake the workers (the receiver's `inbox_wake_workers`).

    jsonb refuses a few valid JSON documents (a \\u0000 escape): one of them fails the
    page's statement, and then each event of the page is stored alone, so only the refused
    one is left out (DataError is raised for it from `store_one`).
    """
    if not events:
        return set()
    if db.in_transaction(conn):
        raise RuntimeError("store_page commits its own statement: call it outside a transaction")
    stored = {event_id for _, event_id in insert_rows(conn, events)}
    if stored:
        wake_workers(conn)
    return stored


def store_one(conn: db.Connection, event: ReceivedEvent) -> bool:
    """Store one event (after its page was refused); DataError if jsonb refuses it."""
    stored = bool(insert_rows(conn, [event]))
    if stored:
        wake_workers(conn)
    return stored


def wake_workers(conn: db.Connection) -> None:
    """The receiver's NOTIFY, after the insert committed (never inside its transaction)."""
    conn.execute(query("inbox_wake_workers"))


def stored_ids(conn: db.Connection, event_ids: Sequence[str]) -> set[str]:
    """Which of these Stripe event ids the inbox has already."""
    rows = conn.execute(query("stripe_events_stored"), {"event_ids": list(event_ids)})
    return {event_id for (event_id,) in rows}


def try_lock(conn: db.Connection) -> bool:
    """The automatic reconciliation's lock (session level), if no one else holds it."""
    row = conn.execute(query("stripe_reconcile_try_lock")).fetchone()
    return bool(row and row[0])


def unlock(conn: db.Connection) -> None:
    conn.execute(query("stripe_reconcile_unlock"))


def state(conn: db.Connection, scope: str, interval_seconds: float) -> ReconcileState:
    row = conn.execute(query("stripe_reconcile_state"),
                       {"scope": scope, "interval_seconds": interval_seconds}).fetchone()
    assert row is not None
    return ReconcileState(*row)


def record_run(conn: db.Connection, scope: str, *, trigger: str, since_unix: int, found: int,
               added: int, watermark: int | None) -> None:
    conn.execute(query("stripe_reconcile_record"), {
        "scope": scope, "trigger": trigger, "since_unix": since_unix, "found": found,
        "added": added, "watermark": watermark,
    })


def record_failure(conn: db.Connection, scope: str, *, trigger: str, error: str) -> None:
    conn.execute(query("stripe_reconcile_failed"),
                 {"scope": scope, "trigger": trigger, "error": error})
