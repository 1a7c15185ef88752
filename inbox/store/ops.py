"""Queries of the operator commands: `inbox status` and `inbox replay`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from inbox import db
from inbox.queries import query

INBOX_STATUSES = ("pending", "processed", "ignored", "dead")
OUTBOX_STATUSES = ("pending", "sent", "dead")
REPLAYABLE_STATUSES = ("dead", "ignored", "processed")


def status_counts(conn: db.Connection) -> dict[str, Any]:
    """The contract's `inbox status --json` document: every status, zero when empty."""
    inbox = dict.fromkeys(INBOX_STATUSES, 0)
    inbox.update({status: count for status, count in conn.execute(query("inbox_status_counts"))})
    outbox = dict.fromkeys(OUTBOX_STATUSES, 0)
    outbox.update({status: n for status, n in conn.execute(query("outbox_status_counts"))})
    leased = conn.execute(query("inbox_leased_count")).fetchone()
    inbox["leased"] = leased[0] if leased else 0
    return {"inbox": inbox, "outbox": outbox}


def replay_events(
    conn: db.Connection, event_ids: Sequence[str], provider: str | None = None
) -> list[tuple[str, str]]:
    """Put these events back to pending with a fresh budget; (provider, event_id) replayed."""
    rows = conn.execute(
        query("inbox_replay_ids"), {"event_ids": list(event_ids), "provider": provider}
    ).fetchall()
    return [(row[1], row[2]) for row in rows]


def replay_status(
    conn: db.Connection,
    status: str,
    event_type: str | None = None,
    provider: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[tuple[str, str]]:
    """Put every event in `status` (of `event_type`, received in [since, until)) back to
    pending with a fresh budget."""
    if status not in REPLAYABLE_STATUSES:
        raise ValueError(f"cannot replay events in status {status!r}")
    rows = conn.execute(
        query("inbox_replay_status"),
        {"status": status, "event_type": event_type, "provider": provider,
         "since": since, "until": until},
    ).fetchall()
    return [(row[1], row[2]) for row in rows]
