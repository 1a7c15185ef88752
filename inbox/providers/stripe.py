"""Stripe: the `Stripe-Signature` header, checked with the stripe SDK.

Two endpoints, one provider: `POST /webhooks/stripe` (the account's own endpoint, secrets in
STRIPE_WEBHOOK_SECRET) and `POST /webhooks/stripe-connect` (a Connect endpoint, which Stripe
signs with a secret of its own, STRIPE_CONNECT_WEBHOOK_SECRET). Both store provider
`stripe`, so the unique key (provider, event_id) makes one row of an event whichever way it
came, `inbox reconcile stripe` included: a Stripe event id is unique across accounts, and
a handler registered for ("stripe", "invoice.paid") serves both. The event's `account`
(present on events of connected accounts) is kept in its own column. Thin events (event
destinations, API v2) come the same way, signed the same way: `id` and `type` name them,
their `context` is the account (inbox/stripe/thin.py fetches their data for handlers).

The SDK computes and compares the HMAC; around it we are stricter than the SDK in three
documented ways (see tests/fixtures/signatures): exactly one `t=` element, a timestamp
no further from now than the tolerance in *either* direction (the SDK only checks age),
and a non-empty body. Several secrets may be configured at once, for rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

import stripe

from inbox.config import Settings
from inbox.errors import InvalidSignature
from inbox.providers import (
    MAX_IDENTIFIER_CHARS,
    Clock,
    ReceivedEvent,
    identifier,
    parse_json_object,
)

SIGNATURE_HEADER = "Stripe-Signature"
_DIGITS = re.compile(r"\d{1,12}")


@dataclass(frozen=True)
class StripeProvider:
    """Verifies Stripe deliveries against every configured endpoint secret."""

    secrets: tuple[str, ...]
    tolerance_seconds: int
    clock: Clock
    name: str = "stripe"  # what is stored as `provider`, for both endpoints
    secret_variable: str = "STRIPE_WEBHOOK_SECRET"

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> StripeProvider:
        return cls(
            settings.stripe_webhook_secrets, settings.stripe_webhook_tolerance_seconds, clock
        )

    @classmethod
    def connect_from_settings(cls, settings: Settings, clock: Clock) -> StripeProvider:
        """The Connect endpoint: its own secrets, the same rules and answers."""
        return cls(settings.stripe_connect_webhook_secrets,
                   settings.stripe_webhook_tolerance_seconds, clock,
                   secret_variable="STRIPE_CONNECT_WEBHOOK_SECRET")

    def receive(self, body: bytes, headers: Mapping[str, str]) -> ReceivedEvent:
        header = headers.get(SIGNATURE_HEADER)
        self.verify(body, header)
        text, payload = parse_json_object(body)
        return ReceivedEvent(
            provider=self.name,
            event_id=identifier(payload.get("id"), "id"),
            event_type=identifier(payload.get("type"), "type"),
            payload_text=text,
            raw_body=body,
            signature=header,
            account=account_of(payload),
        )

    def verify(self, body: bytes, header: str | None) -> None:
        """Raise InvalidSignature unless `header` signs `body` with one of our secrets."""
        if not self.secrets:
            raise InvalidSignature(f"no {self.secret_variable} is configured")
        if not header:
            raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
        if not body:
            raise InvalidSignature("empty body")
        timestamp = _single_timestamp(header)
        if abs(self.clock() - timestamp) > self.tolerance_seconds:
            raise InvalidSignature("timestamp outside the tolerance")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSignature("body is not UTF-8") from None
        for secret in self.secrets:
            try:
                # tolerance=None: the SDK would read the real clock; we checked time above.
                stripe.WebhookSignature.verify_header(text, header, secret, tolerance=None)
                return
            except stripe.SignatureVerificationError:
                continue
            except TypeError:  # a non-ASCII v1 value: the SDK's compare_digest refuses it
                raise InvalidSignature("malformed signature header") from None
        raise InvalidSignature("no signature matches")


def account_of(event: Mapping[str, object]) -> str | None:
    """The Connect account of a Stripe event (`account`: acct_...), or None.

    Only events of connected accounts carry it; anything but a plain, short string is
    treated as absent rather than refusing the event (the id and type decide validity).
    A thin event (an event destination's notification, `"object": "v2.core.event"`)
    names it in `context` instead (null for the platform's own events).
    """
    account = event.get("context" if event.get("object") == "v2.core.event" else "account")
    if isinstance(account, str) and 0 < len(account) <= MAX_IDENTIFIER_CHARS:
        return account
    return None


def _single_timestamp(header: str) -> int:
    """The one `t=` element of the header as an integer, or InvalidSignature."""
    elements = (item.partition("=") for item in header.split(","))
    values = [value for key, _, value in elements if key == "t"]
    if len(values) != 1 or not _DIGITS.fullmatch(values[0]):
        raise InvalidSignature("the header needs exactly one numeric t= element")
    return int(values[0])


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """A Stripe-Signature header for `body` (tests, `inbox send-test-event`).

    Signs bytes, not text, so tests can also sign bodies that are not UTF-8.
    """
    signed = f"{timestamp}.".encode() + body
    mac = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
