"""The periodic look at the alerts, taken by every worker, relay and web process once per
poll interval, one process at a time (an advisory lock; the others skip their turn).

It raises the backlog alert and sends what was held when its interval ends. Every process
type takes it, not only workers, because the backlog alert matters most when no worker
is alive: the web process runs as long as webhooks are received, and that is when a
backlog grows (docs/decisions.md, "Who notices a backlog").
"""

from __future__ import annotations

import logging

from inbox import db
from inbox.alerts import coalesce
from inbox.alerts.kinds import all_kinds
from inbox.config import Settings
from inbox.queries import query

log = logging.getLogger(__name__)


def look(conn: db.Connection, settings: Settings) -> int:
    """Raise the backlog alert if due, and queue every message whose interval has
    ended; the messages queued (0 when another process holds the turn)."""
    kinds = all_kinds(settings)
    with conn.transaction():
        turn = conn.execute(query("alert_watch_lock")).fetchone()
        if not (turn and turn[0]):
            return 0
        backlog = db.dict_cursor(conn).execute(query("alert_backlog")).fetchone()
        if backlog and backlog["oldest_seconds"] > settings.alert_backlog_seconds:
            coalesce.set_state(conn, kinds["backlog"], backlog["due"], backlog["ids"] or [],
                               {"oldest_seconds": round(backlog["oldest_seconds"], 1)})
        queued = coalesce.take_due(conn, kinds.values(), settings.alert_interval_seconds)
    if queued:
        log.warning("queued %d alert message(s)", queued)
    return queued
