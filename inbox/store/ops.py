"""Queries of the operator commands: `inbox status` and `inbox replay` (events, and outbox
messages with `--outbox`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inbox import db
from inbox.queries import query
from inbox.store import system_state

REPLAYABLE_STATUSES = ("dead", "ignored", "processed")
REPLAYABLE_OUTBOX_STATUSES = ("dead", "sent")


@dataclass(frozen=True)
class ReplayedMessage:
    """An outbox message `inbox replay --outbox` put back (or would, with --dry-run)."""

    id: int
    topic: str
    idempotency_key: str


def status_counts(conn: db.Connection) -> dict[str, Any]:
    """The contract's `inbox status --json` document: every status, zero when empty
    (exact, from the trigger-kept counts: no table is counted)."""
    inbox, outbox = system_state.status_counts(conn)
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


def replay_outbox_ids(conn: db.Connection, ids: Sequence[int]) -> list[ReplayedMessage]:
    """Put these outbox messages back to pending, due now, with a fresh attempt budget
    (last_error kept); messages a relay holds now are left alone. The ones replayed."""
    rows = conn.execute(query("outbox_replay_ids"), {"ids": list(ids)}).fetchall()
    return [ReplayedMessage(*row[:3]) for row in rows]


def replay_outbox_status(
    conn: db.Connection,
    status: str,
    topic_pattern: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ReplayedMessage]:
    """The same for every message in `status` whose topic matches `topic_pattern` (a glob,
    as in INBOX_ROUTES), created in [since, until)."""
    params = _outbox_status_params(conn, status, topic_pattern, since, until)
    if params is None:
        return []
    rows = conn.execute(query("outbox_replay_status"), params).fetchall()
    return [ReplayedMessage(*row[:3]) for row in rows]


def replay_outbox_preview(
    conn: db.Connection,
    *,
    ids: Sequence[int] = (),
    status: str | None = None,
    topic_pattern: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ReplayedMessage]:
    """The messages `inbox replay --outbox` would put back, changing nothing."""
    if ids:
        rows = conn.execute(query("outbox_replay_preview_ids"), {"ids": list(ids)}).fetchall()
    else:
        params = _outbox_status_params(conn, status or "", topic_pattern, since, until)
        if params is None:
            return []
        rows = conn.execute(query("outbox_replay_preview_status"), params).fetchall()
    return [ReplayedMessage(*row[:3]) for row in rows]


def _outbox_status_params(
    conn: db.Connection,
    status: str,
    topic_pattern: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any] | None:
    """The parameters of outbox_replay_status and its preview; None when no topic matches.

    A pattern is matched in Python with fnmatch, as INBOX_ROUTES matches topics (`*`, `?`,
    `[abc]`, case-sensitive), against the few distinct topics of the status, and the
    statement gets the topics it matched."""
    if status not in REPLAYABLE_OUTBOX_STATUSES:
        raise ValueError(f"cannot replay outbox messages in status {status!r}")
    topics: list[str] | None = None
    if topic_pattern is not None:
        found = conn.execute(query("outbox_topics_in_status"), {"status": status})
        topics = sorted(t for (t,) in found if fnmatch.fnmatchcase(t, topic_pattern))
        if not topics:
            return None
    return {"status": status, "topics": topics, "since": since, "until": until}
