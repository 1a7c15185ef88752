"""The drain benchmark's second handler set (INBOX_HANDLERS=bench.reading_handlers): like
bench/noop_handlers.py, one outbox message per event, but it reads `event.payload` first,
so the worker reads and parses every payload (the cost the no-op handler skips)."""

from __future__ import annotations

from inbox import handler
from inbox.fixtures import stripe_event_types


def reads_payload(event, tx) -> None:
    tx.outbox("bench.noop", {"object": event.payload["data"]["object"]["id"]})


for _event_type in stripe_event_types():
    handler("stripe", _event_type)(reads_payload)
