"""The drain benchmark's handlers (INBOX_HANDLERS=bench.noop_handlers): no business work,
one outbox message each, like the pgbench ceiling's per-event SQL."""

from __future__ import annotations

from inbox import handler
from inbox.fixtures import stripe_event_types


def noop(event, tx) -> None:
    tx.outbox("bench.noop", {"bench": True})


for _event_type in stripe_event_types():
    handler("stripe", _event_type)(noop)
