"""Queries of the inspect and prune commands (`inbox events`, `inbox prune`).

One function per named query of sql/queries/audit.sql; rows come back as frozen
dataclasses whose fields are the query's columns.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from inbox import db
from inbox.queries import query

# What a destination may look like in a report: the relay's Route.destination, i.e.
# scheme://host:port or log:. Nothing that can hold userinfo, a path or a query (no '@',
# '/', '?', '#' after the scheme), whatever ended up in the column.
SAFE_DESTINATION = re.compile(r"(?:(?:https?|smtps?)://[A-Za-z0-9._\-\[\]:]{1,262}|log:)")
NO_DESTINATION = "none"  # a try that went nowhere: no route, a crash, an older relay
OTHER_DESTINATION = "other"  # a value not of the safe form (never shown as written)


def safe_destination(value: str) -> str:
    """A destination as a report may show it: the relay's scheme://host:port or log:
    as written, 'none' for a try that went nowhere, 'other' for anything else (a value
    that could hold a credential is never shown)."""
    if not value:
        return NO_DESTINATION
    return value if SAFE_DESTINATION.fullmatch(value) else OTHER_DESTINATION


# The tables `inbox prune` deletes from, in the order it deletes: messages first, so an
# event goes only once none of its messages is left.
PRUNE_TABLES = ("outbox", "inbox")
# The outcomes of inbox_attempts (see 0001_inbox_outbox.sql).
ATTEMPT_OUTCOMES = ("processed", "ignored", "retry", "dead", "crashed")


@dataclass(frozen=True)
class EventRow:
    """An inbox event as `inbox events list` shows it."""

    id: int
    provider: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    received_at: datetime
    processed_at: datetime | None
    next_attempt_at: datetime
    last_error: str | None
    account: str | None  # the Stripe Connect account, for events of one
    source: str  # webhook | api (stored by `inbox reconcile stripe`)


@dataclass(frozen=True)
class EventDetail(EventRow):
    """An inbox event with its signature header and payload (`inbox events show`)."""

    signature: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Attempt:
    """One row of inbox_attempts."""

    attempt: int
    worker: str | None
    started_at: datetime
    finished_at: datetime
    outcome: str
    error: str | None


@dataclass(frozen=True)
class OutboxMessage:
    """An outbox message caused by an event."""

    id: int
    topic: str
    status: str
    attempts: int
    idempotency_key: str
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime
    last_error: str | None
    payload: Any


@dataclass(frozen=True)
class DeliveryAttempt:
    """One row of outbox_attempts: a delivery try of a message."""

    outbox_id: int
    attempt: int
    relay: str | None
    destination: str  # scheme://host:port, log:, none (no route) or other (safe_destination)
    started_at: datetime
    finished_at: datetime
    outcome: str
    http_status: int | None
    smtp_reply: str | None
    error: str | None

    @property
    def answer(self) -> str:
        """What the destination said: "HTTP 503", an SMTP reply, or nothing."""
        if self.http_status is not None:
            return f"HTTP {self.http_status}"
        return self.smtp_reply or ""


def as_dict(row: Any) -> dict[str, Any]:
    """A row dataclass as a plain dict (for JSON output)."""
    return dataclasses.asdict(row)


def list_events(
    conn: db.Connection,
    *,
    status: str | None = None,
    event_type: str | None = None,
    provider: str | None = None,
    account: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[EventRow]:
    params = {"status": status, "event_type": event_type, "provider": provider,
              "account": account, "since": since, "until": until, "limit": limit}
    rows = db.dict_cursor(conn).execute(query("inbox_list"), params).fetchall()
    return [EventRow(**row) for row in rows]


def find_events(conn: db.Connection, ref: str) -> list[EventDetail]:
    """Events whose provider event id is `ref`, or whose inbox id it is (if a number)."""
    inbox_id = int(ref) if ref.isdigit() and len(ref) < 19 else None
    rows = db.dict_cursor(conn).execute(
        query("inbox_find"), {"ref": ref, "inbox_id": inbox_id}
    ).fetchall()
    return [EventDetail(**row) for row in rows]


def attempts_of(conn: db.Connection, inbox_id: int) -> list[Attempt]:
    rows = db.dict_cursor(conn).execute(
        query("inbox_attempts_of_event"), {"inbox_id": inbox_id}
    ).fetchall()
    return [Attempt(**row) for row in rows]


def outbox_of(conn: db.Connection, inbox_id: int) -> list[OutboxMessage]:
    rows = db.dict_cursor(conn).execute(
        query("outbox_of_event"), {"inbox_id": inbox_id}
    ).fetchall()
    return [OutboxMessage(**row) for row in rows]


def delivery_attempts_of(conn: db.Connection, inbox_id: int) -> list[DeliveryAttempt]:
    """The delivery tries of the messages an event caused (outbox_attempts)."""
    rows = db.dict_cursor(conn).execute(
        query("outbox_attempts_of_event"), {"inbox_id": inbox_id}
    ).fetchall()
    for row in rows:  # shown as /metrics and the console show it: never a route's URL
        row["destination"] = safe_destination(row["destination"] or "")
    return [DeliveryAttempt(**row) for row in rows]


def prune_cutoff(conn: db.Connection, older_than: timedelta) -> datetime:
    """now() minus `older_than`, on the database's clock."""
    row = conn.execute(query("prune_cutoff"), {"older_than": older_than}).fetchone()
    assert row is not None
    return row[0]


def prune_count(
    conn: db.Connection,
    table: str,
    statuses: Sequence[str],
    cutoff: datetime,
    *,
    outbox_statuses: Sequence[str] = (),
) -> int:
    """How many rows of `table` (inbox or outbox) a prune with these settings deletes.

    For the inbox, `outbox_statuses` are the message statuses pruned in the same run.
    """
    params = {"statuses": list(statuses), "cutoff": cutoff,
              "outbox_statuses": list(outbox_statuses)}
    row = conn.execute(query(f"{table}_prune_count"), params).fetchone()
    assert row is not None
    return int(row[0])


def prune_batch(
    conn: db.Connection,
    table: str,
    statuses: Sequence[str],
    cutoff: datetime,
    *,
    after_id: int,
    batch_size: int,
) -> tuple[int, int | None]:
    """Delete one batch: (rows deleted, last id deleted).

    One statement on an autocommit connection: its own short transaction, so the locks
    of a batch are held for milliseconds and released before the next batch.
    """
    params = {"statuses": list(statuses), "cutoff": cutoff, "after_id": after_id,
              "batch_size": batch_size}
    row = conn.execute(query(f"{table}_prune_batch"), params).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def status_extras(conn: db.Connection) -> dict[str, dict[str, Any]]:
    """Backlog and last hour's throughput, the keys `inbox status` adds to the contract's.

    `backlog`: rows due now and how long the oldest has waited (seconds, 0 when none);
    `last_hour`: attempts finished in the last hour by outcome (zero when none).
    """
    row = db.dict_cursor(conn).execute(query("status_backlog")).fetchone()
    assert row is not None
    backlog = {key: (round(value, 3) if isinstance(value, float) else value)
               for key, value in row.items()}
    last_hour = dict.fromkeys(ATTEMPT_OUTCOMES, 0)
    last_hour.update({outcome: n for outcome, n in conn.execute(query("status_last_hour"))})
    return {"backlog": backlog, "last_hour": last_hour}


def replay_preview(
    conn: db.Connection,
    *,
    event_ids: Sequence[str] = (),
    status: str | None = None,
    event_type: str | None = None,
    provider: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[tuple[str, str]]:
    """(provider, event_id) of the events `inbox replay` would put back, changing nothing."""
    if event_ids:
        rows = conn.execute(query("inbox_replay_preview_ids"),
                            {"event_ids": list(event_ids), "provider": provider})
    else:
        rows = conn.execute(query("inbox_replay_preview_status"),
                            {"status": status, "event_type": event_type, "provider": provider,
                             "since": since, "until": until})
    return [(row[1], row[2]) for row in rows]
