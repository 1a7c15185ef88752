"""Queries of the inbox worker: claim, finish, rescue, release, and the handler's helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inbox import db
from inbox.queries import query

# A claim from here scans the due index from its start.
EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one event, from claim to outcome. The fence of inbox_finish."""

    inbox_id: int
    attempts: int  # including the attempt this lease is for
    backend: int
    locked_at: datetime
    locked_by: str | None = None


@dataclass(frozen=True)
class ClaimedEvent:
    """One row of inbox_claim."""

    lease: Lease
    provider: str
    event_id: str
    event_type: str
    crashes: int
    due_at: datetime  # when it was due (next_attempt_at before the claim)
    account: str | None = None  # the Stripe Connect account, for events of one

    @classmethod
    def from_row(cls, row: Sequence[Any], worker: str) -> ClaimedEvent:
        (inbox_id, provider, event_id, event_type, attempts, crashes, backend, at, due_at,
         account) = row
        return cls(
            lease=Lease(inbox_id, attempts, backend, at, worker),
            provider=provider,
            event_id=event_id,
            event_type=event_type,
            crashes=crashes,
            due_at=due_at,
            account=account,
        )


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: a row for inbox_finish.

    status is the event's new status; outcome is the attempts-history word (see
    inbox_finish in sql/queries/worker.sql).
    """

    lease: Lease
    status: str
    outcome: str
    delay_seconds: float | None = None
    error: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class OutboxMessage:
    """A handler's message, written with its batch's outcomes (outbox_enqueue)."""

    inbox_id: int
    topic: str
    payload_json: str
    idempotency_key: str


def claim(
    conn: db.Connection, worker: str, batch: int, scan_from: datetime = EARLIEST
) -> list[ClaimedEvent]:
    """Lease up to `batch` due events, due at or after `scan_from` (its own transaction:
    the connection is autocommit)."""
    rows = conn.execute(query("inbox_claim"),
                        {"worker": worker, "batch": batch, "scan_from": scan_from}).fetchall()
    events = [ClaimedEvent.from_row(row, worker) for row in rows]
    events.sort(key=lambda e: e.lease.inbox_id)
    return events


def payloads(conn: db.Connection, inbox_ids: Sequence[int]) -> dict[int, str]:
    """The payloads (JSON text) of these events, by inbox id.

    Inside the batch's transaction (an earlier handler began it) the read runs in a
    savepoint of its own: if it fails, it fails the handler that asked, not the batch.
    """
    with conn.transaction() if db.in_transaction(conn) else nullcontext():
        rows = conn.execute(query("inbox_payloads"), {"ids": list(inbox_ids)}).fetchall()
    return dict(rows)


def savepoint(conn: db.Connection) -> None:
    conn.execute(query("inbox_handler_savepoint"))


def release_savepoint(conn: db.Connection) -> None:
    conn.execute(query("inbox_handler_savepoint_release"))


def rollback_savepoint(conn: db.Connection) -> None:
    conn.execute(query("inbox_handler_savepoint_rollback"))


# Called in the outcomes' own transaction, after them, with the ids of the events they made
# dead (the event_dead alert: inbox/alerts/).
OnDead = Callable[[db.Connection, list[int]], object]


def finish(conn: db.Connection, outcomes: Sequence[Outcome], on_dead: OnDead | None = None
           ) -> int:
    """Write the outcomes (status, history, end of lease) in one statement; rows finished.
    With dead outcomes and `on_dead`, both run in one transaction."""
    if not outcomes:
        return 0
    dead = _dead_ids(outcomes)
    with conn.transaction() if dead and on_dead else nullcontext():
        row = conn.execute(query("inbox_finish"), _finish_params(outcomes)).fetchone()
        if dead and on_dead:
            on_dead(conn, dead)
    return int(row[0]) if row else 0


def _dead_ids(outcomes: Sequence[Outcome]) -> list[int]:
    return [outcome.lease.inbox_id for outcome in outcomes if outcome.status == "dead"]


def finish_batch(
    conn: db.Connection,
    outcomes: Sequence[Outcome],
    messages: Sequence[OutboxMessage],
    *,
    own_transaction: bool = False,
    on_dead: OnDead | None = None,
) -> tuple[int, int]:
    """The outbox messages and the outcomes of a batch, in one round trip (pipeline).

    Returns (rows finished, messages inserted). The statements run in the caller's open
    transaction, whose commit they make durable; or, with `own_transaction`, in one of their
    own, BEGIN and COMMIT included in the same round trip. None waits for another's answer.
    A batch that made events dead also calls `on_dead` before that commit (a round trip
    more, only then).
    """
    dead = _dead_ids(outcomes) if on_dead else []
    with (conn.transaction() if own_transaction and dead else nullcontext()):
        with conn.pipeline(), (conn.transaction() if own_transaction and not dead
                               else nullcontext()):
            conn.execute(query("inbox_durable_commit"))
            queued = conn.execute(query("outbox_enqueue"), _enqueue_params(messages)) \
                if messages else None
            finished = conn.execute(query("inbox_finish"), _finish_params(outcomes))
        if dead and on_dead:
            on_dead(conn, dead)
    inserted = len(queued.fetchall()) if queued is not None else 0
    row = finished.fetchone()
    return (int(row[0]) if row else 0), inserted


def _enqueue_params(messages: Sequence[OutboxMessage]) -> dict[str, list[Any]]:
    return {
        "inbox_ids": [m.inbox_id for m in messages],
        "topics": [m.topic for m in messages],
        "payloads": [m.payload_json for m in messages],
        "idempotency_keys": [m.idempotency_key for m in messages],
    }


def _finish_params(outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    return {
        "ids": [o.lease.inbox_id for o in outcomes],
        "backends": [o.lease.backend for o in outcomes],
        "locked_ats": [o.lease.locked_at for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "outcomes": [o.outcome for o in outcomes],
        "delays": [o.delay_seconds for o in outcomes],
        "errors": [o.error for o in outcomes],
        "started_ats": [o.started_at for o in outcomes],
        "workers": [o.lease.locked_by for o in outcomes],
    }


@dataclass(frozen=True)
class DeadLease:
    """A lease whose worker died, and how many leases that worker held with it then."""

    lease: Lease
    held: int  # 1: the event was alone in the dead worker's hands; more: a batch crash

    @property
    def alone(self) -> bool:
        return self.held <= 1


def dead_leases(conn: db.Connection, limit: int = 1000) -> list[DeadLease]:
    """Leases held by backends that are gone: their workers died mid-attempt."""
    rows = conn.execute(query("inbox_dead_leases"), {"limit": limit}).fetchall()
    return [
        DeadLease(Lease(inbox_id, attempts, backend, locked_at, locked_by), held)
        for inbox_id, attempts, locked_by, backend, locked_at, held in rows
    ]


def release(conn: db.Connection) -> int:
    """Give back this connection's leases without charging their attempts."""
    return len(conn.execute(query("inbox_release")).fetchall())


def start_session(conn: db.Connection, handler_timeout_seconds: float) -> None:
    """A fresh worker connection: asynchronous commits outside processing, and the
    handlers' time budget (statement and idle-in-transaction timeouts)."""
    timeout_ms = str(max(int(handler_timeout_seconds * 1000), 0))
    conn.execute(query("inbox_worker_session"), {"timeout_ms": timeout_ms})


def wake_relay(conn: db.Connection) -> None:
    """Wake idle relays: messages were committed (call after the commit)."""
    conn.execute(query("outbox_wake_relay"))


def apply_if_newer(conn: db.Connection, object_key: str, created: float, inbox_id: int) -> bool:
    """True (and recorded) unless a strictly newer version of the object was applied."""
    row = conn.execute(
        query("inbox_object_apply_if_newer"),
        {"object_key": object_key, "created": created, "inbox_id": inbox_id},
    ).fetchone()
    return row is not None


def lock_object(conn: db.Connection, object_key: str) -> None:
    """Wait for, then hold until the transaction ends, the advisory lock of one object."""
    conn.execute(query("inbox_object_lock"), {"object_key": object_key})
