"""Holding alert occurrences and turning them into messages, at most one per kind per
interval (sql/queries/alerts.sql; the table is sql/migrations/0008_alerts.sql).

Every function runs in the caller's transaction: an event's dead outcome holds its alert
and, when the interval has passed, queues the message in the very transaction that makes
the event dead, so the alert exists exactly when the death does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from inbox import db
from inbox.alerts.kinds import MAX_IDS, AlertKind, payload
from inbox.queries import query

# The kinds raised by outcomes, and the query that holds them from the rows' ids.
DEAD_QUERIES = {"event_dead": ("alert_hold_dead_events", "inbox_ids"),
                "message_dead": ("alert_hold_dead_messages", "outbox_ids")}


def hold(conn: db.Connection, kind: AlertKind, count: int, ids: Sequence[str] = (),
         detail: Mapping[str, Any] | None = None) -> None:
    """Add `count` occurrences (a few `ids` of them) to what `kind` holds."""
    conn.execute(query("alert_hold"), {
        "kind": kind.name, "count": count, "ids": [str(i) for i in ids], "max_ids": MAX_IDS,
        "detail": Jsonb(dict(detail or {})), "window_seconds": kind.window_seconds,
        "threshold": kind.threshold,
    })


def set_state(conn: db.Connection, kind: AlertKind, count: int, ids: Sequence[str],
              detail: Mapping[str, Any]) -> None:
    """Replace what `kind` holds with the state as it is now (the backlog)."""
    conn.execute(query("alert_set"), {"kind": kind.name, "count": count,
                                      "ids": [str(i) for i in ids], "max_ids": MAX_IDS,
                                      "detail": Jsonb(dict(detail))})


def raise_dead(conn: db.Connection, kind: AlertKind, ids: Sequence[int],
               interval_seconds: float) -> int:
    """After an outcome statement in this transaction: hold those of `ids` that it made
    dead (event_dead: inbox ids; message_dead: outbox ids, alert messages left out), and
    queue the kind's message if its interval has passed; messages queued."""
    name, param = DEAD_QUERIES[kind.name]
    conn.execute(query(name), {param: list(ids), "max_ids": MAX_IDS})
    return take_due(conn, [kind], interval_seconds)


def take_due(conn: db.Connection, kinds: Iterable[AlertKind], interval_seconds: float) -> int:
    """Queue one message for each of `kinds` whose held occurrences are due; how many."""
    by_name = {kind.name: kind for kind in kinds}
    rows = db.dict_cursor(conn).execute(query("alert_take_due"), {
        "kinds": list(by_name), "thresholds": [k.threshold for k in by_name.values()],
        "interval_seconds": interval_seconds,
    }).fetchall()
    for row in rows:
        kind = by_name[row["kind"]]
        since = row["held_since"].isoformat() if row["held_since"] else None
        message = payload(kind, row["held_count"], row["held_ids"], row["held_detail"], since)
        conn.execute(query("alert_enqueue"), {"kind": kind.name, "payload": Jsonb(message),
                                              "message_number": row["message_number"]})
    return len(rows)
