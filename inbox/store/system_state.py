"""The state of the whole deployment, read from the database in a few cheap statements.

Any process can report it and every one reports the same figures, because they all come
from PostgreSQL: `/metrics` on each web process today, the console's overview and
`inbox status` when they share it. Counts by status are exact at any table size: the
triggers of sql/migrations/0007_row_counts.sql keep them as rows change, so reading them
never scans the tables (docs/decisions.md, "Counts kept by triggers").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from inbox import db
from inbox.queries import query
from inbox.store import processes
from inbox.store.audit import ATTEMPT_OUTCOMES, safe_destination

INBOX_STATUSES = ("pending", "processed", "ignored", "dead")
OUTBOX_STATUSES = ("pending", "sent", "dead")
# The outcomes of outbox_attempts (0006_outbox_attempts.sql).
DELIVERY_OUTCOMES = ("sent", "retry", "dead", "crashed")
END_TO_END_QUANTILES = ("0.5", "0.9", "0.99")


@dataclass(frozen=True)
class Backlog:
    """Rows due now, the oldest one's wait since it became due, and rows leased now."""

    due: int
    oldest_due_seconds: float
    leased: int


@dataclass(frozen=True)
class SystemState:
    """Both tables' rows by status, their backlogs, and the last minute's attempts."""

    inbox: Mapping[str, int]
    outbox: Mapping[str, int]
    inbox_backlog: Backlog
    outbox_backlog: Backlog
    attempts_last_minute: Mapping[str, int]
    processes: Sequence[processes.ProcessRow]  # workers, relays, web: alive first
    dead_by_type: Mapping[str, int]
    deliveries_last_minute: Mapping[str, int]  # the last complete minute, by outcome
    # The same minute by (destination, outcome), for each destination tried in 15 minutes.
    deliveries_by_destination: Mapping[tuple[str, str], int]
    dead_messages_by_topic: Mapping[str, int]
    end_to_end_seconds: Mapping[str, float]  # received -> processed: p50, p90, p99
    reconcile_runs: Sequence[ReconcileRun]  # Stripe's reconciliation, one per scope


@dataclass(frozen=True)
class ReconcileRun:
    """A scope's last reconciliation of Stripe's events (inbox_stripe_reconcile): when it
    ran, how (automatic or command), what it found and added, and its last error."""

    scope: str  # stripe, stripe:acct_..., stripe-thin, stripe-thin:acct_...
    watermark: int | None
    last_run_at: datetime | None
    last_trigger: str | None
    last_since: datetime | None
    last_found: int | None
    last_added: int | None
    last_error: str | None
    last_error_at: datetime | None


def reconcile_runs(conn: db.Connection) -> list[ReconcileRun]:
    """Every scope's last run (a row per scope: a handful)."""
    rows = db.dict_cursor(conn).execute(query("stripe_reconcile_runs")).fetchall()
    return [ReconcileRun(**row) for row in rows]


def status_counts(conn: db.Connection) -> tuple[dict[str, int], dict[str, int]]:
    """Inbox and outbox rows by status, exact (every status present, zero when none)."""
    inbox = dict.fromkeys(INBOX_STATUSES, 0)
    outbox = dict.fromkeys(OUTBOX_STATUSES, 0)
    for table, status, count in conn.execute(query("system_status_counts")):
        (inbox if table == "inbox" else outbox)[status] = count
    return inbox, outbox


def read(conn: db.Connection) -> SystemState:
    """Read the deployment's state (every status and outcome present, zero when none)."""
    inbox, outbox = status_counts(conn)
    row = db.dict_cursor(conn).execute(query("system_backlog")).fetchone()
    assert row is not None
    attempts = dict.fromkeys(ATTEMPT_OUTCOMES, 0)
    attempts.update(dict(conn.execute(query("system_attempts_last_minute")).fetchall()))
    by_destination = _deliveries_by_destination(conn)
    return SystemState(
        inbox=inbox, outbox=outbox,
        inbox_backlog=Backlog(row["inbox_due"], row["inbox_oldest_due_seconds"],
                              row["inbox_leased"]),
        outbox_backlog=Backlog(row["outbox_due"], row["outbox_oldest_due_seconds"],
                               row["outbox_leased"]),
        attempts_last_minute=attempts,
        processes=processes.list_processes(conn),
        dead_by_type=dict(conn.execute(query("system_dead_by_type")).fetchall()),
        deliveries_last_minute=_by_outcome(by_destination),
        deliveries_by_destination=by_destination,
        dead_messages_by_topic=dict(
            conn.execute(query("system_dead_messages_by_topic")).fetchall()),
        end_to_end_seconds=_end_to_end(conn),
        reconcile_runs=reconcile_runs(conn),
    )


def _deliveries_by_destination(conn: db.Connection) -> dict[tuple[str, str], int]:
    """(destination, outcome) -> tries in the last complete minute; every outcome present
    for each destination tried in the last 15 minutes."""
    counts: dict[tuple[str, str], int] = {}
    for destination, outcome, n in conn.execute(query("system_deliveries_by_destination")):
        label = safe_destination(destination)
        for each in DELIVERY_OUTCOMES:
            counts.setdefault((label, each), 0)
        counts[(label, outcome)] = counts.get((label, outcome), 0) + n
    return counts


def _by_outcome(by_destination: Mapping[tuple[str, str], int]) -> dict[str, int]:
    deliveries = dict.fromkeys(DELIVERY_OUTCOMES, 0)
    for (_, outcome), n in by_destination.items():
        deliveries[outcome] = deliveries.get(outcome, 0) + n
    return deliveries


def _end_to_end(conn: db.Connection) -> dict[str, float]:
    """Quantile label ("0.5", "0.9", "0.99") -> seconds; empty when nothing was processed
    in the last five minutes."""
    row = conn.execute(query("system_end_to_end")).fetchone()
    if row is None or row[0] is None:
        return {}
    return dict(zip(END_TO_END_QUANTILES, row[0], strict=True))
