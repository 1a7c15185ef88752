"""Webhook providers: how each one signs its deliveries and names its events.

A provider turns the raw request (bytes and headers) into a `ReceivedEvent` or raises
InvalidSignature / InvalidEvent. It never touches the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from inbox.config import Settings
from inbox.errors import InvalidEvent, InvalidSignature, UnknownProvider

Clock = Callable[[], float]
# Longer ids or types are not events: they would also overflow the unique index.
MAX_IDENTIFIER_CHARS = 255


@dataclass(frozen=True)
class ReceivedEvent:
    """A verified delivery, ready to be stored."""

    provider: str
    event_id: str
    event_type: str
    payload_text: str  # the body as text; stored as jsonb
    raw_body: bytes  # the exact bytes received
    signature: str | None  # the signature header, to verify the bytes again later
    # The Stripe Connect account the event happened on (the body's `account`), or None.
    account: str | None = None
    # Where it came from: "webhook" (a delivery) or "api" (`inbox reconcile stripe`).
    source: str = "webhook"


class Provider(Protocol):
    """What the receiver needs from a provider."""

    name: str

    def receive(self, body: bytes, headers: Mapping[str, str]) -> ReceivedEvent:
        """Verify the delivery and identify the event, or raise a 4xx-worthy error."""
        ...


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> tuple[str, dict[str, Any]]:
    """The body as text and as a dict, or InvalidEvent: UTF-8 JSON object, no NaN.

    orjson parses an ordinary event several times faster than the json module. It is
    stricter (no lone surrogate escapes, no number a double cannot hold), so a body it refuses
    gets the json module's verdict: exactly the bodies accepted before are accepted, and
    the errors read as before. The dict only names the event (ids, types); the text is what
    is stored.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"body is not a JSON document: {exc}") from None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            payload = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise InvalidEvent(f"body is not a JSON document: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidEvent("body is not a JSON object")
    return text, payload


def identifier(value: Any, what: str) -> str:
    """A non-empty, reasonably short string identifier, or InvalidEvent."""
    if not isinstance(value, str) or not value or len(value) > MAX_IDENTIFIER_CHARS:
        raise InvalidEvent(f"event has no valid {what}")
    return value


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The first value of header `name`, matched case-insensitively.

    Werkzeug's request headers already ignore case; this also works for a plain dict.
    """
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


# A verified delivery that names no type of its own (the GitHub and Shopify signature test
# vectors carry no event header; a Standard Webhooks body need not have "type") is stored
# under this type: no handler is registered for it, so it is `ignored`, kept for inspection.
UNTYPED = "untyped"


def body_digest_id(body: bytes) -> str:
    """A stable event id for a delivery that carries none: the same bytes, the same id."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def verify_body_hmac(
    body: bytes,
    signature: str | None,
    secrets: tuple[str, ...],
    sign: Callable[[bytes, str], str],
    *,
    secret_variable: str,
    header_name: str,
) -> None:
    """Raise InvalidSignature unless `signature` is `sign(body, secret)` for one of the
    secrets (schemes that sign the body alone, like GitHub's and Shopify's)."""
    if not secrets:
        raise InvalidSignature(f"no {secret_variable} is configured")
    if not signature:
        raise InvalidSignature(f"missing {header_name} header")
    if not body:
        raise InvalidSignature("empty body")
    received = signature.encode("utf-8", "replace")
    for secret in secrets:
        if hmac.compare_digest(received, sign(body, secret).encode("ascii")):
            return
    raise InvalidSignature("no signature matches")


def get_provider(name: str, settings: Settings, clock: Clock = time.time) -> Provider:
    """The provider called `name`, configured from settings, or UnknownProvider."""
    from inbox.providers import github, shopify, standard_webhooks, stripe

    factories: dict[str, Callable[[Settings, Clock], Provider]] = {
        "stripe": stripe.StripeProvider.from_settings,
        "stripe-connect": stripe.StripeProvider.connect_from_settings,
        "github": github.GitHubProvider.from_settings,
        "shopify": shopify.ShopifyProvider.from_settings,
        "standard-webhooks": standard_webhooks.StandardWebhooksProvider.from_settings,
    }
    factory = factories.get(name)
    if factory is None:
        raise UnknownProvider(f"unknown webhook provider {name!r}")
    return factory(settings, clock)
