"""What a handler receives: the `event` and the `tx` it works in.

```python
@handler("stripe", "invoice.paid")
def invoice_paid(event, tx):
    tx.execute("UPDATE app_users SET plan_status = 'active' WHERE ...", [...])
    tx.outbox("email.receipt", {"to": ..., "pdf": ...})
```
Everything a handler does through `tx` happens in the worker's transaction: its statements
in the event's own savepoint, its outbox messages written with the batch's outcomes. It
commits together with the event's new status, or not at all.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from inbox import db
from inbox.stripe.thin import StripeFetch
from inbox.worker import store
from inbox.worker.store import OutboxMessage


@dataclass(frozen=True)
class Event:
    """An inbox event as a handler sees it.

    `payload` is read and parsed on first use: `read_payload` returns its JSON text (the
    worker reads those of the whole batch in one statement, the first time a handler asks
    for one). A handler that needs only the type and id, and an event without a handler,
    cost neither the read nor the parse. To build one by hand (a handler's unit test):
    `Event("stripe", "evt_1", "invoice.paid", 1, 1, read_payload=lambda: body)`.
    """

    provider: str
    id: str  # the provider's event id (Stripe's evt_...)
    type: str
    attempt: int  # 1 for the first attempt
    inbox_id: int  # the inbox row's id
    read_payload: Callable[[], str] = field(repr=False, compare=False)
    # The Stripe Connect account (acct_...) the event happened on; None for the platform's
    # own events and for other providers. Read from the inbox row: no payload parse needed.
    account: str | None = None
    # A Stripe event's fetcher of a thin event's data (the worker gives one to each).
    stripe_fetch: StripeFetch | None = field(default=None, repr=False, compare=False)

    def stripe_event(self) -> Any:
        """A Stripe thin event's full event (`stripe.v2.core.Event`, with `data`), fetched
        through the SDK on first call (GET /v2/core/events/<id>), then kept for the attempt.

        Call it before the handler's first `tx` statement: the worker then ends the
        batch's transaction before the request, so no transaction waits for Stripe.
        A 404 raises Permanent; any other API failure an exception that is retried.
        """
        return self._stripe().event()

    def related_object(self) -> Any:
        """A Stripe thin event's related object, as it is now (a StripeObject), fetched from
        its `related_object.url` on first call; None when the event names none. As
        `stripe_event()`: before the first `tx` statement, 404 is Permanent."""
        return self._stripe().related_object()

    def _stripe(self) -> StripeFetch:
        if self.stripe_fetch is None:
            raise TypeError(f"{self.provider} event {self.id} is not a Stripe event")
        return self.stripe_fetch

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The event's JSON document (a dict for every provider we receive from)."""
        return db.load_json(self.read_payload())

    @property
    def created(self) -> Any:
        """The provider's creation time of the event, when the payload has one (Stripe)."""
        return self.payload.get("created") if isinstance(self.payload, dict) else None


def message_json(payload: Any) -> str:
    """`payload` as JSON text that jsonb accepts, or TypeError/ValueError.

    Checked while the handler runs, so a payload that cannot be stored fails that handler
    alone: the batch's one INSERT of messages would otherwise fail, and with it the batch.
    jsonb refuses NaN and Infinity, the NUL character and unpaired surrogates; the last
    two show in the JSON text as escapes, so only a payload whose text holds one is
    looked at closely.
    """
    text = json.dumps(payload, allow_nan=False)
    if ("\\u0000" in text or "\\ud" in text) and _holds_text_jsonb_refuses(payload):
        raise ValueError("an outbox payload cannot hold a NUL character or an unpaired "
                         "surrogate: PostgreSQL's jsonb refuses them")
    return text


def _holds_text_jsonb_refuses(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value or (not value.isascii() and _unencodable(value))
    if isinstance(value, dict):
        return any(_holds_text_jsonb_refuses(k) or _holds_text_jsonb_refuses(v)
                   for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_text_jsonb_refuses(item) for item in value)
    return False


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate on its own
        return True
    return False


class HandlerTx:
    """The handler's window on the event's transaction.

    The savepoint is opened lazily, by the first statement: a handler that touches no table
    (or an event without handler) costs no round trip for it. Outbox messages are kept here
    until the handler returns; the worker writes those of every handler that succeeded in
    one statement, with the batch's outcomes (a failed handler's messages are dropped, as
    its savepoint is rolled back).
    """

    def __init__(self, conn: db.Connection, event: Event,
                 begin_transaction: Callable[[], None]) -> None:
        self._conn = conn
        self._event = event
        self._begin_transaction = begin_transaction
        self._outbox_counts: Counter[str] = Counter()
        self.in_savepoint = False
        self.messages: list[OutboxMessage] = []

    def execute(self, sql: str, params: Any = None) -> Any:
        """Run `sql` in the event's transaction; returns the psycopg cursor."""
        self._begin()
        return self._conn.execute(sql, params)

    def outbox(self, topic: str, payload: Any, key: str | None = None) -> None:
        """Queue a message for the relay, committed with the event's outcome.

        The idempotency key defaults to `provider:event_id:topic:n` (n counts this run's
        messages of that topic), so a retry or a replay of the event never queues a second
        copy (a key already in the outbox is skipped), and receivers can drop duplicates the
        relay delivers. The row is written when the batch finishes, after the handler
        returns: a SELECT on `outbox` inside the handler does not see it yet.
        """
        n = self._outbox_counts[topic]
        self._outbox_counts[topic] += 1
        if key is None:
            key = f"{self._event.provider}:{self._event.id}:{topic}:{n}"
        self.messages.append(OutboxMessage(self._event.inbox_id, topic, message_json(payload),
                                           key))

    def lock_object(self, object_key: str) -> None:
        """Serialise handlers working on one object: waits for the lock, held until commit."""
        self._begin()
        store.lock_object(self._conn, object_key)

    def apply_if_newer(self, object_key: str, created: Any = None) -> bool:
        """True if this event is not older than the last one applied for `object_key`.

        Providers do not keep order: a handler calls this before changing an object and
        skips the change when it returns False (a newer event of the object came first).
        `created` defaults to the event's own `created` (Stripe's seconds, or a thin event's
        ISO time); a datetime, an ISO string or a number works. Recording it is part of the
        event's transaction, and the row lock it takes serialises concurrent events of the
        same object until commit.
        """
        self._begin()
        if created is None:
            created = self._event.created
        if isinstance(created, str):  # a thin event's ISO time ("2024-09-26T17:46:22.134Z")
            created = datetime.fromisoformat(created)
        if isinstance(created, datetime):
            created = created.timestamp()
        if not isinstance(created, int | float):
            raise TypeError(f"apply_if_newer needs a number or datetime, got {created!r}")
        return store.apply_if_newer(self._conn, object_key, created, self._event.inbox_id)

    def _begin(self) -> None:
        if not self.in_savepoint:
            self._begin_transaction()  # the batch's, at its first statement
            store.savepoint(self._conn)
            self.in_savepoint = True
