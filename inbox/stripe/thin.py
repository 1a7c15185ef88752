"""Thin events (Stripe event destinations, API v2): the full event and its related object,
fetched through the SDK when a handler asks, once per attempt.

An event destination with the "thin" payload POSTs an *event notification*: `"object":
"v2.core.event"`, the event's `type`, `created` (an ISO time), `context` (the account, for
a connected account's event) and a `related_object` reference (`id`, `type`, `url`)
instead of a snapshot. The receiver stores it like any delivery. The data lives at Stripe:
`GET /v2/core/events/<id>` (the event with its `data`) and the related object's `url`
(its current state). `StripeFetch` asks for them with the SDK's own
`parse_event_notification_without_verification` (the receiver verified the signature),
`fetch_event` and `fetch_related_object`, so the SDK's `Stripe-Context` header and types
apply.

- Lazy: no request unless the handler asks; each answer kept for the rest of the attempt.
  A handler registered with `prefetch=("event", "related_object")` has them fetched
  before its batch's transaction begins instead, PREFETCH_THREADS at a time (a failure
  is kept and raised at the handler's call).
- Before each request the worker's `before_call` runs: it ends the batch's transaction
  first when other handlers' writes are in it (docs/decisions.md, "Thin events: no
  transaction waits for Stripe"), so a 100 ms call never holds their row locks.
- Errors: a 404 is `Permanent` (the event or object is gone, or the key is for another
  account; no retry brings it back); anything else (connection errors, timeouts, 429, 5xx,
  401/403) is `StripeFetchError`, an ordinary exception the worker retries with backoff.
  The SDK retries nothing itself here (`max_network_retries=0`): the worker's backoff
  does, and a handler never sleeps while its batch waits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from inbox.config import Settings
from inbox.errors import InboxError, Permanent
from inbox.stripe import api

THIN_OBJECT = "v2.core.event"
# One request of a handler: well inside the handler budget (30 s by default).
FETCH_TIMEOUT_SECONDS = 10
# Requests of a batch's prefetch in flight at once, per worker process.
PREFETCH_THREADS = 8
T = TypeVar("T")


class StripeFetchError(InboxError):
    """Stripe's API could not give a thin event's data now; the attempt is retried."""


class NotAThinEvent(TypeError):
    """stripe_event() or related_object() was called for an event that is not a Stripe
    thin event: a handler's mistake, retried like any other."""


def is_thin(payload: Any) -> bool:
    """True for a Stripe event notification (a thin event's body)."""
    return isinstance(payload, dict) and payload.get("object") == THIN_OBJECT


class StripeClients:
    """One StripeClient per process (STRIPE_API_KEY, STRIPE_API_BASE), made on first use:
    a worker whose handlers never ask Stripe needs no key. And the threads of prefetches,
    started on first use (after the fork)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: stripe.StripeClient | None = None
        self._pool: ThreadPoolExecutor | None = None

    def prefetch(self, fetches: Sequence[tuple[StripeFetch, Collection[str]]]) -> None:
        """Make these requests now, PREFETCH_THREADS at a time, before the batch begins;
        each answer or failure is kept for the handler's call (a failure is raised there,
        so it is the handler's attempt that fails, as without prefetch)."""
        ready = [(fetch, whats) for fetch, whats in fetches if fetch.parse_for_prefetch()]
        if not ready:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PREFETCH_THREADS, "stripe-prefetch")
        list(self._pool.map(lambda item: item[0].prefetch(item[1]), ready))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def api_key(self) -> str | None:
        """STRIPE_API_KEY, blanked out of the error texts."""
        return self._settings.stripe_api_key

    def get(self) -> stripe.StripeClient:
        if self._client is None:
            try:
                self._client = api.make_client(self._settings, max_network_retries=0,
                                               timeout_seconds=FETCH_TIMEOUT_SECONDS)
            except api.StripeAPIError as exc:  # no key: fix the config, then it retries
                raise StripeFetchError(str(exc)) from exc
        return self._client


class StripeFetch:
    """One thin event's full event and related object, for one attempt of its handler."""

    def __init__(self, clients: StripeClients, read_payload: Callable[[], str],
                 before_call: Callable[[], None]) -> None:
        self._clients = clients
        self._read_payload = read_payload  # the stored body's JSON text
        # Runs before each request the handler's call makes (not for a kept answer).
        self.before_call = before_call
        self._notification: Any = None
        self._answers: dict[str, Any] = {}

    def event(self) -> Any:
        """The full event (`stripe.v2.core.Event`, with `data`): GET /v2/core/events/<id>."""
        return self._fetch("event", lambda n: n.fetch_event())

    def related_object(self) -> Any:
        """The related object's current state (a StripeObject: a `billing.Meter`, ...) from
        its `url`, or None for an event that names none."""
        notification = self._parsed()
        if getattr(notification, "related_object", None) is None:
            return None
        return self._fetch("related_object", lambda n: n.fetch_related_object())

    def _parsed(self) -> Any:
        if self._notification is None:
            text = self._read_payload()
            payload = json.loads(text)
            if not is_thin(payload):
                kind = payload.get("object") if isinstance(payload, dict) else None
                raise NotAThinEvent(f"the event is not a Stripe thin event (object {kind!r}):"
                                    " a snapshot event's data is in event.payload")
            client = self._clients.get()
            self._notification = client.parse_event_notification_without_verification(text)
        return self._notification

    def parse_for_prefetch(self) -> bool:
        """Parse the notification (reads the payload: on the caller's thread, which owns
        the connection); False when it cannot be, the handler's own call then says why."""
        try:
            self._parsed()
        except Exception:  # raised again at the handler's call
            return False
        return True

    def prefetch(self, whats: Collection[str]) -> None:
        """Make these requests now (on a prefetch thread), keeping answers and failures."""
        for what in sorted(whats):
            try:
                (self.event if what == "event" else self.related_object)()
            except Exception as exc:  # kept, raised at the handler's call
                self._answers[what] = _Failed(exc)

    def _fetch(self, what: str, call: Callable[[Any], T]) -> T:
        if what not in self._answers:
            notification = self._parsed()
            self.before_call()
            self._answers[what] = _mapped(what, notification.id, lambda: call(notification),
                                          self._clients.api_key)
        answer = self._answers[what]
        if isinstance(answer, _Failed):
            raise answer.exc
        return answer


@dataclass(frozen=True)
class _Failed:
    """A prefetch's failure, raised when the handler asks."""

    exc: Exception


def _mapped(what: str, event_id: str, call: Callable[[], T], secret: str | None) -> T:
    """`call()`, its stripe errors turned into Permanent (404) or StripeFetchError."""
    try:
        return call()
    except stripe.StripeError as exc:
        message = api.error_text(exc, secret)
        if isinstance(exc, stripe.InvalidRequestError) and exc.http_status == 404:
            raise Permanent(f"Stripe answered 404 for the {what} of {event_id}: "
                            f"{message}") from exc
        status = f" ({exc.http_status})" if exc.http_status else ""
        raise StripeFetchError(f"fetching the {what} of {event_id} failed{status}: "
                               f"{message}") from exc
