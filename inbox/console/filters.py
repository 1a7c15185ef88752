"""What the events list's URL means: its filters, parsed and checked, and back to a URL.

A filter is a URL an operator can paste into a ticket:
`/console/events?status=dead&type=invoice.paid&since=2h` (times as `inbox events` takes
them: 2h, 2024-07-25, 2024-07-25T10:00, in UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from inbox import db
from inbox.console import store
from inbox.timespec import BadTimeSpec, parse_time

EVENT_STATUSES = ("pending", "retrying", "processed", "ignored", "dead")
REPLAYABLE = ("dead", "retrying", "ignored", "processed")
# Events committed a little out of id order near a time bound still match: the id bounds
# are this much wider, the received_at condition exact.
ID_SLACK = 1000


class BadFilter(ValueError):
    """A filter value the list cannot use (the message says which)."""


@dataclass(frozen=True)
class EventFilter:
    status: str = ""
    provider: str = ""
    type: str = ""
    since: str = ""
    until: str = ""
    event: str = ""
    q: str = ""
    error: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> EventFilter:
        values = {f.name: (args.get(f.name) or "").strip() for f in fields(cls)}
        found = cls(**values)
        if found.status and found.status not in EVENT_STATUSES:
            raise BadFilter(f"unknown status {found.status!r}")
        found.times()
        if found.q and not found.since:
            raise BadFilter("searching the payload text needs a received-since time "
                            "(the search reads only that range)")
        return found

    def times(self) -> tuple[datetime | None, datetime | None]:
        try:
            return (parse_time(self.since) if self.since else None,
                    parse_time(self.until) if self.until else None)
        except BadTimeSpec as exc:
            raise BadFilter(str(exc)) from None

    def args(self, **changes: str) -> dict[str, str]:
        """The URL query of this filter (empty values left out), with `changes`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return {key: value for key, value in values.items() if value}

    @property
    def active(self) -> bool:
        return bool(self.args())

    def sql_params(self, conn: db.Connection) -> dict[str, Any]:
        """The parameters of console_events and the bulk replay's statements; the received
        range also as id bounds, so the statements read only that range of the inbox."""
        since, until = self.times()
        low_id = high_id = None
        if since is not None:
            found = store.id_at(conn, since)
            low_id = -1 if found is None else found - ID_SLACK  # -1: nothing received since
            if found is None:
                high_id = -1
        if until is not None and high_id is None:
            found = store.id_at(conn, until)
            high_id = None if found is None else found + ID_SLACK
        return {"status": self.status or None, "provider": self.provider or None,
                "event_type": self.type or None, "error": self.error or None,
                "since": since, "until": until, "low_id": low_id, "high_id": high_id}
