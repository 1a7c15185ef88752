"""The console's queries (sql/queries/console.sql), one function per named query.

Statements go with prepare=False: their filters are `%(x)s IS NULL OR ...`, which
PostgreSQL folds away when it plans with the values, so each filter gets the index it
needs (inbox_failures_idx for dead and retrying, the type index for a type); a prepared
statement's generic plan could keep one plan for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from inbox import db
from inbox.queries import query
from inbox.store import audit

# A bulk replay changes this many events per statement (its own short transaction).
REPLAY_BATCH_SIZE = 500
# The preview of a bulk replay counts up to this many, then says "at least".
REPLAY_COUNT_CAP = 100_000
# The payload text search's time budget; past it the operator is asked to narrow the range.
TEXT_SEARCH_BUDGET_MS = 2000
# A probe of the binary search from a received time to an id: ~40 probes cover 2**63 ids,
# ~20 cover a million.
MAX_PROBES = 64


class SearchTooSlow(Exception):
    """The payload text search used its time budget: narrow the range."""


def _rows(conn: db.Connection, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    return db.dict_cursor(conn).execute(query(name), params, prepare=False).fetchall()


def events(conn: db.Connection, params: Mapping[str, Any], *, text: str | None,
           limit: int) -> list[dict[str, Any]]:
    """One page of the events list. With `text`, under TEXT_SEARCH_BUDGET_MS (raises
    db's QueryCanceled past it), in a transaction of its own so the budget ends with it."""
    values = {**params, "text": None, "limit": limit}
    if text is None:
        return _rows(conn, "console_events", values)
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    try:
        with conn.transaction():
            conn.execute(query("console_statement_timeout"), {"ms": TEXT_SEARCH_BUDGET_MS})
            return _rows(conn, "console_events", {**values, "text": pattern})
    except db.QueryCanceled as exc:
        raise SearchTooSlow() from exc


def id_at(conn: db.Connection, at: datetime) -> int | None:
    """The lowest id received at or after `at` (None when none is): a binary search on
    the primary key, ids growing with received_at. A few events committed out of order
    near the bound are why the filter keeps its received_at condition too."""
    low, high = conn.execute(query("console_id_range"), prepare=False).fetchone() or (None, None)
    if low is None:
        return None
    found: int | None = None
    for _ in range(MAX_PROBES):
        if low > high:
            break
        middle = (low + high) // 2
        row = conn.execute(query("console_received_at_of"), {"id": middle},
                           prepare=False).fetchone()
        if row is None:
            high = middle - 1
            continue
        row_id, received_at = row
        if received_at >= at:
            found = row_id
            high = middle - 1
        else:
            low = row_id + 1
    return found


def replay_count(conn: db.Connection, params: Mapping[str, Any]) -> int:
    row = conn.execute(query("console_replay_count"),
                       {**params, "before": None, "cap": REPLAY_COUNT_CAP},
                       prepare=False).fetchone()
    return int(row[0]) if row else 0


def replay_by_filter(conn: db.Connection, params: Mapping[str, Any],
                     batch_size: int = REPLAY_BATCH_SIZE) -> int:
    """Replay every event the filter matches, a batch per statement; how many."""
    total, before = 0, None
    while True:
        row = conn.execute(query("console_replay_batch"),
                           {**params, "before": before, "batch_size": batch_size},
                           prepare=False).fetchone()
        replayed, lowest = (row[0], row[1]) if row else (0, None)
        total += replayed
        if lowest is None:
            return total
        before = lowest


def failure_groups(conn: db.Connection, limit: int = 100) -> list[dict[str, Any]]:
    return _rows(conn, "console_failure_groups", {"limit": limit})


def newest_failures(conn: db.Connection, limit: int = 8) -> list[dict[str, Any]]:
    return _rows(conn, "console_newest_failures", {"limit": limit})


@dataclass(frozen=True)
class Series:
    """Counts per minute by outcome over a span ending now, oldest minute first."""

    minutes: Sequence[datetime]
    counts: Mapping[str, Sequence[int]]


def per_minute(conn: db.Connection, name: str, span: timedelta,
               outcomes: Sequence[str]) -> Series:
    """`console_attempts_per_minute` or `console_deliveries_per_minute` over `span`: the
    trigger-kept counters of 0012, a few thousand small rows for a day, so every view reads
    the whole span again (docs/decisions.md, "Console: the 24-hour chart")."""
    now = conn.execute(query("console_minute_now"), prepare=False).fetchone()
    end = now[0] if now else datetime.now().astimezone()
    count = int(span / timedelta(minutes=1))
    minutes = [end - timedelta(minutes=count - 1 - n) for n in range(count)]
    index = {minute: n for n, minute in enumerate(minutes)}
    counts = {outcome: [0] * count for outcome in outcomes}
    for minute, outcome, n in conn.execute(query(name), {"since": minutes[0]},
                                           prepare=False):
        if outcome in counts and minute in index:
            counts[outcome][index[minute]] += n
    return Series(minutes, counts)


def last(series: Series, minutes: int) -> Series:
    """The last `minutes` of a series."""
    return Series(series.minutes[-minutes:],
                  {o: list(c[-minutes:]) for o, c in series.counts.items()})


def event_extras(conn: db.Connection, inbox_id: int) -> dict[str, Any]:
    rows = _rows(conn, "console_event_extras", {"id": inbox_id})
    return rows[0] if rows else {}


def object_versions(conn: db.Connection, inbox_id: int) -> list[dict[str, Any]]:
    return _rows(conn, "console_object_versions_of_event", {"id": inbox_id})


def outbox_breakdown(conn: db.Connection) -> list[dict[str, Any]]:
    return _rows(conn, "console_outbox_breakdown", {})


def outbox_messages(conn: db.Connection, *, status: str | None, topic: str | None,
                    before: int | None, limit: int) -> list[dict[str, Any]]:
    return _rows(conn, "console_outbox_messages",
                 {"status": status, "topic": topic, "before": before, "limit": limit})


def outbox_message(conn: db.Connection, message_id: int) -> dict[str, Any] | None:
    rows = _rows(conn, "console_outbox_message", {"id": message_id})
    return rows[0] if rows else None


def outbox_attempts(conn: db.Connection, message_id: int) -> list[dict[str, Any]]:
    """A message's tries; each destination as audit.safe_destination shows it."""
    rows = _rows(conn, "console_outbox_attempts_of_message", {"id": message_id})
    for row in rows:
        row["destination"] = audit.safe_destination(row["destination"] or "")
    return rows


def record_action(conn: db.Connection, action: str, target: str, affected: int,
                  remote_addr: str | None) -> None:
    conn.execute(query("console_action_record"),
                 {"action": action, "target": target[:2000], "affected": affected,
                  "remote_addr": remote_addr})


def recent_actions(conn: db.Connection, limit: int = 10) -> list[dict[str, Any]]:
    return _rows(conn, "console_actions_recent", {"limit": limit})
