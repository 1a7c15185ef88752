"""Queries of the relay: claim due outbox messages, record outcomes, release, rescue.

Each function is one statement on an autocommit connection: its own short transaction.
The SQL is in sql/queries/relay.sql.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from inbox.db import Connection
from inbox.queries import query

Status = Literal["sent", "dead", "pending"]


@dataclass(frozen=True)
class OutboxMessage:
    """A claimed message: what the transports need to deliver it."""

    id: int
    topic: str
    # The payload as JSON text, exactly as the database renders the jsonb: HTTP sends these
    # bytes without a parse and re-serialisation.
    payload_json: str
    idempotency_key: str
    attempts: int  # including the one in progress

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> OutboxMessage:
        return cls(*row)

    def payload(self) -> Any:
        """The payload as Python values."""
        return json.loads(self.payload_json)


@dataclass(frozen=True)
class Outcome:
    """What to write for one message after its attempt, and for its outbox_attempts row:
    when the delivery ran (None: no delivery, e.g. no route), where it went and what the
    other side answered."""

    id: int
    status: Status
    error: str | None = None
    delay_seconds: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    http_status: int | None = None
    smtp_reply: str | None = None
    # Route.destination (scheme://host:port or log:), never the URL; None: no route.
    destination: str | None = None


def claim(
    conn: Connection, locked_by: str, limit: int, skip_topics: Iterable[str] = ()
) -> list[OutboxMessage]:
    """Lease up to `limit` due messages, counting the attempt; see `outbox_claim`. Never
    prepared: planned for the table as it is now (see outbox_claim)."""
    params = {"limit": limit, "locked_by": locked_by, "skip_topics": list(skip_topics)}
    rows = conn.execute(query("outbox_claim"), params, prepare=False).fetchall()
    return sorted((OutboxMessage.from_row(row) for row in rows), key=lambda m: m.id)


def record_outcomes(conn: Connection, locked_by: str, outcomes: Sequence[Outcome]) -> int:
    """Write a batch of outcomes and their attempts history in one statement; returns how
    many rows changed."""
    if not outcomes:
        return 0
    params = {
        "locked_by": locked_by,
        "ids": [o.id for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "errors": [o.error for o in outcomes],
        "delays": [float(o.delay_seconds) for o in outcomes],
        "started_ats": [o.started_at for o in outcomes],
        "finished_ats": [o.finished_at for o in outcomes],
        "http_statuses": [o.http_status for o in outcomes],
        "smtp_replies": [o.smtp_reply for o in outcomes],
        "destinations": [o.destination for o in outcomes],
    }
    return len(conn.execute(query("outbox_record_outcomes"), params).fetchall())


def release(conn: Connection, locked_by: str, ids: Sequence[int]) -> int:
    """Give back messages claimed but not started, uncounting their attempt."""
    if not ids:
        return 0
    cur = conn.execute(query("outbox_release"), {"locked_by": locked_by, "ids": list(ids)})
    return cur.rowcount


@dataclass(frozen=True)
class Rescued:
    """A lease taken back by the rescue: the message, its new status, and for a relay that
    hung (its backend still connected) that backend and when it leased the message."""

    id: int
    status: Status
    hung_backend: int | None
    leased_at: datetime


def rescue(conn: Connection, max_attempts: int, takeover_seconds: float) -> list[Rescued]:
    """Take back messages held by relays that died or stopped making progress (not seen for
    `takeover_seconds`); see `outbox_rescue`."""
    params = {"max_attempts": max_attempts, "takeover_seconds": takeover_seconds}
    return [Rescued(*row) for row in conn.execute(query("outbox_rescue"), params).fetchall()]


def end_hung_relays(conn: Connection, rescued: Sequence[Rescued]) -> int:
    """End the connections of the hung relays whose leases `rescued` took; how many.
    Raises db.InsufficientPrivilege when our role may not (see outbox_end_hung_relays)."""
    since: dict[int, datetime] = {}
    for r in rescued:
        if r.hung_backend is not None:
            since[r.hung_backend] = min(r.leased_at, since.get(r.hung_backend, r.leased_at))
    if not since:
        return 0
    params = {"pids": list(since), "leased_since": list(since.values())}
    return len(conn.execute(query("outbox_end_hung_relays"), params).fetchall())
