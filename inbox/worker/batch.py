"""A batch's pieces, for the worker's loop: its transaction (begun by the first handler
statement, ended early before a thin event's request to Stripe), and its payloads (read in
one statement when a handler first asks)."""

from __future__ import annotations

import contextlib

from inbox import db
from inbox.worker import store
from inbox.worker.store import OutboxMessage


def no_transaction_yet() -> None:
    """A prefetch's requests run before the batch begins: nothing to end first."""


class EndTransactionFirst(BaseException):
    """A handler is about to wait for Stripe's API while other handlers' writes (and row
    locks) are in the batch's open transaction: the worker rolls back this handler's own
    work, commits the others' with their outcomes, and runs it again, first in a new
    transaction, where the request waits with no transaction open (or only its own).
    A BaseException, so a handler's `except Exception` lets it through."""


class BatchTransaction:
    """The batch's transaction, begun by the first handler statement, and the outbox
    messages of its handlers that succeeded, written with the outcomes.

    A batch whose handlers only queue messages (or whose events have no handler) never
    begins it here: `store.finish_batch` then sends BEGIN, the outcomes and COMMIT in one
    round trip, where an eager BEGIN would cost two more. Leaving the block commits a
    begun transaction, or rolls it back on an exception.
    """

    def __init__(self, conn: db.Connection) -> None:
        self._conn = conn
        self._stack = contextlib.ExitStack()
        self.begun = False
        self.messages: list[OutboxMessage] = []
        self.handlers_with_sql = 0  # handlers that opened a savepoint

    def before_stripe_call(self) -> None:
        """Before a thin event's request to Stripe (inbox/stripe/thin.py): see
        EndTransactionFirst, and docs/decisions.md, "Thin events: no transaction waits
        for Stripe"."""
        if self.handlers_with_sql > 0:
            raise EndTransactionFirst()

    def begin(self) -> None:
        if not self.begun:
            self._stack.enter_context(self._conn.transaction())
            self.begun = True

    def __enter__(self) -> BatchTransaction:
        return self

    def __exit__(self, *exc_info: object) -> bool:
        return bool(self._stack.__exit__(*exc_info))


class BatchPayloads:
    """The payloads of a batch's handled events, read in one statement when a handler
    first reads `event.payload`; a batch whose handlers never do reads none.

    Only inside the batch: the read uses the worker's connection, so a payload first read
    after the batch ended (an event kept for later) is an error, not a stray statement.
    """

    def __init__(self, conn: db.Connection, inbox_ids: list[int]) -> None:
        self._conn = conn
        self._inbox_ids = inbox_ids
        self._texts: dict[int, str] | None = None
        self._closed = False

    def text(self, inbox_id: int) -> str:
        if self._texts is None:
            if self._closed:
                raise RuntimeError("event.payload was first read after its batch ended: "
                                   "read it in the handler")
            self._texts = store.payloads(self._conn, self._inbox_ids)
        try:
            return self._texts[inbox_id]
        except KeyError:
            raise LookupError(f"inbox row {inbox_id} has no payload to read") from None

    def close(self) -> None:
        self._closed = True
