"""Stripe's Events API, through the stripe SDK: list the events created since a moment.

`GET /v1/events` answers newest first, at most 100 a page, `has_more` telling whether an
older page follows (`starting_after` the last id of this one). The SDK makes each request
and retries what it retries on its own (`max_network_retries`: connection errors,
timeouts, 409, 5xx, and whatever carries `Stripe-Should-Retry: true`). It does not retry a
rate limit: a 429 without `Stripe-Should-Retry` raises RateLimitError at once, so each page
is asked again here, after the answer's `Retry-After` (or a backoff when it has none).

Pages are fetched one request at a time with the SDK's `raw_request` (the same requestor,
key, retries and errors as `client.v1.events.list`) rather than through
`auto_paging_iter()`: the iterator is a generator, finished for good once a 429 escaped
from it, and it hides where a page ends, which is where the caller commits what the page
brought. The next page's parameters are what auto_paging_iter itself sends (the same
filters, `starting_after` the last event's id). And `raw_request` gives the page's JSON
without the SDK turning every nested field of every event into a StripeObject, which we
would not use (we store the JSON): that conversion was 75 % of a run, ~190 ms a page of
100 (docs/decisions.md, "Reconcile pages through the SDK's raw_request").

Thin events (Stripe event destinations, API v2) are not in `/v1/events`: `GET
/v2/core/events` lists them, newest first, `created[gte]` an ISO time, at most 20 `types`,
each page `{"data": [...], "next_page_url": ..., "previous_page_url": ...}` and the next page
asked at `next_page_url` as it is (its query carries the filters and the page token: what
the SDK's own v2 `auto_paging_iter` sends), until it is null. The same `_page` asks each
page of both listings, so rate limits, retries and errors are handled once.

The API key never appears in a message of ours; the SDK's own error texts are passed on
with it blanked, should they ever quote it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe

from inbox.backoff import next_attempt_delay_seconds, parse_retry_after
from inbox.config import Settings
from inbox.errors import InboxError

log = logging.getLogger(__name__)

PAGE_LIMIT = 100  # the API's largest page
MAX_TYPES_PER_REQUEST = 20  # `types[]` takes at most 20 event types
# Stripe keeps events for 30 days; `created[gte]` further back lists nothing more.
MAX_HISTORY_SECONDS = 30 * 86400
# The SDK's own retries of one request (connection errors, 409, 5xx), with its backoff.
MAX_NETWORK_RETRIES = 3
# A page refused by the rate limiter is asked again up to this many times, each after the
# answer's Retry-After (capped) or else a backoff from 1 s doubling to 30 s, full jitter.
MAX_RATE_LIMIT_RETRIES = 8
RATE_LIMIT_BASE_SECONDS = 1.0
RATE_LIMIT_CAP_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 30
EVENTS_PATH = "/v1/events"
THIN_EVENTS_PATH = "/v2/core/events"
# A v2 page's size: 20 is the v2 lists' default; Stripe's reference does not give the
# largest `limit` /v2/core/events takes, and a refused one would fail every run.
THIN_PAGE_LIMIT = 20


class StripeAPIError(InboxError):
    """Stripe's API could not list the events."""


@dataclass(frozen=True)
class Listing:
    """What to list: events created at or after `since` (Unix seconds), of `types` (all
    when empty), of a Connect `account` (the platform's own when None)."""

    since: int
    types: tuple[str, ...] = ()
    account: str | None = None


def make_client(settings: Settings, *, max_network_retries: int = MAX_NETWORK_RETRIES,
                timeout_seconds: float = REQUEST_TIMEOUT_SECONDS) -> stripe.StripeClient:
    """A client for STRIPE_API_BASE with STRIPE_API_KEY, or StripeAPIError without a key.

    Reconcile lets the SDK retry; thin events' fetches (inbox/stripe/thin.py) do not."""
    if not settings.stripe_api_key:
        raise StripeAPIError("STRIPE_API_KEY is not set: a restricted key with read access "
                             "to Events is needed to read Stripe's events")
    http_client = stripe.RequestsClient(timeout=timeout_seconds)
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=max_network_retries,
        http_client=http_client,
    )


def event_pages(
    client: stripe.StripeClient,
    listing: Listing,
    *,
    secret: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[dict[str, Any]]]:
    """Each page of the listing of `GET /v1/events`, newest first, as the API's JSON
    objects (dicts).

    With more than 20 types, one listing per 20 (the API's limit); the pages of one
    follow those of the previous. `secret` is blanked out of error messages.
    """
    options: dict[str, Any] = {"stripe_account": listing.account} if listing.account else {}
    for chunk in _type_chunks(listing.types):
        params: dict[str, Any] = {"limit": PAGE_LIMIT, "created": {"gte": listing.since}}
        if chunk:
            params["types"] = list(chunk)
        while True:
            page = _page(client, EVENTS_PATH, params, options, secret, sleep)
            events = _events_of(page, EVENTS_PATH)
            if events:
                yield events
            if not page.get("has_more") or not events:
                break
            params = {**params, "starting_after": events[-1]["id"]}


def thin_event_pages(
    client: stripe.StripeClient,
    listing: Listing,
    *,
    secret: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[dict[str, Any]]]:
    """Each page of the listing of `GET /v2/core/events` (thin events), as the API's JSON
    objects. A Connect `account` is sent as the `Stripe-Context` header (the v2 API's way
    to act for a connected account), the SDK's `stripe_context` option."""
    options: dict[str, Any] = {"stripe_context": listing.account} if listing.account else {}
    since = datetime.fromtimestamp(listing.since, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for chunk in _type_chunks(listing.types):
        path = THIN_EVENTS_PATH
        params: dict[str, Any] = {"limit": THIN_PAGE_LIMIT, "created": {"gte": since}}
        if chunk:
            params["types"] = list(chunk)
        asked: set[str] = set()
        while True:
            page = _page(client, path, params, options, secret, sleep)
            events = _events_of(page, THIN_EVENTS_PATH)
            if events:
                yield events
            next_url = page.get("next_page_url")
            if not isinstance(next_url, str) or not next_url or next_url in asked:
                break
            asked.add(next_url)  # a page token that comes back would loop forever
            path, params = next_url, {}


def _type_chunks(types: Sequence[str]) -> Sequence[tuple[str, ...]]:
    """The types in listings of at most MAX_TYPES_PER_REQUEST; one listing of all types
    when none are given."""
    if not types:
        return [()]
    ordered = sorted(set(types))
    return [tuple(ordered[i:i + MAX_TYPES_PER_REQUEST])
            for i in range(0, len(ordered), MAX_TYPES_PER_REQUEST)]


def _page(client: stripe.StripeClient, path: str, params: Mapping[str, Any],
          options: Mapping[str, Any], secret: str | None,
          sleep: Callable[[float], None]) -> Mapping[str, Any]:
    """One page (the list object's JSON), asked again after a rate limit; StripeAPIError
    for anything else."""
    for refusal in range(MAX_RATE_LIMIT_RETRIES + 1):
        try:
            response = client.raw_request("get", path, **params, **options)
            if not isinstance(response.data, Mapping):
                raise StripeAPIError(f"GET {_path_of(path)} did not answer a JSON object")
            return response.data
        except stripe.RateLimitError as exc:
            if refusal == MAX_RATE_LIMIT_RETRIES:
                raise StripeAPIError(
                    f"Stripe's rate limit refused a page {refusal + 1} times in a row; "
                    "run again later") from exc
            delay = rate_limit_delay_seconds(exc.headers, refusal + 1)
            log.info("Stripe's rate limit: page asked again in %.1f s", delay)
            sleep(delay)
        except stripe.AuthenticationError as exc:
            raise StripeAPIError("Stripe refused STRIPE_API_KEY (401): "
                                 + error_text(exc, secret)) from exc
        except stripe.PermissionError as exc:
            raise StripeAPIError(f"STRIPE_API_KEY may not list events (403, GET "
                                 f"{_path_of(path)}): give the restricted key read access "
                                 f"to {_permission(path)}. " + error_text(exc, secret)) from exc
        except stripe.StripeError as exc:
            status = f" ({exc.http_status})" if exc.http_status else ""
            raise StripeAPIError(f"listing Stripe's events failed{status}, GET "
                                 f"{_path_of(path)}: " + error_text(exc, secret)) from exc
    raise AssertionError("unreachable")


def rate_limit_delay_seconds(headers: Mapping[str, str] | None, refusal: int,
                             rng: random.Random | None = None) -> float:
    """How long to wait after the `refusal`-th 429 in a row: the answer's Retry-After
    (capped at RATE_LIMIT_CAP_SECONDS), else full-jitter backoff from 1 s."""
    value = None
    for key, header in (headers or {}).items():
        if key.lower() == "retry-after":
            value = header
    retry_after = parse_retry_after(value, now=time.time())
    if retry_after is not None:
        return min(retry_after, RATE_LIMIT_CAP_SECONDS)
    return next_attempt_delay_seconds(refusal, RATE_LIMIT_BASE_SECONDS,
                                      RATE_LIMIT_CAP_SECONDS, rng)


def _events_of(page: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    """The page's events, as the API's JSON objects. A v1 list says `"object": "list"`; a
    v2 list has no `object`, only `data` and the page urls."""
    data = page.get("data")
    if not isinstance(data, list) or (path == EVENTS_PATH and page.get("object") != "list"):
        raise StripeAPIError(f"GET {path} did not answer a list object")
    return [dict(event) for event in data if isinstance(event, Mapping)]


def _path_of(url: str) -> str:
    """A request's path without its query (a v2 next page's token is no one's business)."""
    return url.split("?", 1)[0]


def _permission(path: str) -> str:
    """The restricted key's permission a listing needs."""
    if _path_of(path) == THIN_EVENTS_PATH:
        return "v2 Events (thin events; or pass --only snapshot)"
    return "Events"


def error_text(exc: stripe.StripeError, secret: str | None) -> str:
    """The SDK's message for an error, on one line, `secret` (the API key) blanked should
    it ever quote it: for reconcile's errors and thin events' last_error alike."""
    text = exc.user_message or str(exc) or type(exc).__name__
    if secret:
        text = text.replace(secret, "<STRIPE_API_KEY>")
    return " ".join(text.split())
