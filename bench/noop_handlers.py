"""The drain benchmark's handlers (INBOX_HANDLERS=bench.noop_handlers): no business work,
one outbox message each, like the pgbench ceiling's per-event SQL."""

from __future__ import annotations

try:
    from inbox import handler
except ImportError:  # before the worker exports it from the package
    from inbox.registry import handler

FIXTURE_EVENT_TYPES = (
    "charge.refunded", "checkout.session.completed", "customer.subscription.created",
    "customer.subscription.deleted", "customer.subscription.updated", "invoice.paid",
    "invoice.payment_failed", "payment_intent.payment_failed", "payment_intent.succeeded",
)


def noop(event, tx) -> None:
    tx.outbox("bench.noop", {"bench": True})


for _event_type in FIXTURE_EVENT_TYPES:
    handler("stripe", _event_type)(noop)
