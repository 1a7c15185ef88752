"""Shopify: the `X-Shopify-Hmac-Sha256` header, the standard base64 (padded) HMAC-SHA256 of
the raw body, keyed with the UTF-8 bytes of the app's client secret (SHOPIFY_WEBHOOK_SECRET,
comma-separated for rotation).

The header string must equal the expected base64 exactly: hex, the URL-safe alphabet or
stripped padding are rejected, and so is an empty body.

The event id is `X-Shopify-Webhook-Id` (one per delivery, kept by Shopify's retries), else
`X-Shopify-Event-Id` (the same event sent to two subscriptions shares it, hence second
choice), else `sha256:<hex of the body>`. The type is `X-Shopify-Topic` (`orders/create`),
else UNTYPED.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from inbox.config import Settings
from inbox.providers import (
    UNTYPED,
    Clock,
    ReceivedEvent,
    body_digest_id,
    header,
    identifier,
    parse_json_object,
    verify_body_hmac,
)

SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"
ID_HEADERS = ("X-Shopify-Webhook-Id", "X-Shopify-Event-Id")
TOPIC_HEADER = "X-Shopify-Topic"


@dataclass(frozen=True)
class ShopifyProvider:
    """Verifies Shopify deliveries against every configured client secret."""

    secrets: tuple[str, ...]
    name: str = "shopify"

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> ShopifyProvider:
        return cls(tuple(settings.provider_secrets.get("shopify", ())))

    def receive(self, body: bytes, headers: Mapping[str, str]) -> ReceivedEvent:
        signature = header(headers, SIGNATURE_HEADER)
        self.verify(body, signature)
        text, _ = parse_json_object(body)
        event_id = next(filter(None, (header(headers, name) for name in ID_HEADERS)), None)
        return ReceivedEvent(
            provider=self.name,
            event_id=identifier(event_id, "webhook id") if event_id else body_digest_id(body),
            event_type=identifier(header(headers, TOPIC_HEADER) or UNTYPED, "topic"),
            payload_text=text,
            raw_body=body,
            signature=signature,
        )

    def verify(self, body: bytes, signature: str | None) -> None:
        """Raise InvalidSignature unless `signature` signs `body` with one of our secrets."""
        verify_body_hmac(body, signature, self.secrets, sign,
                         secret_variable="SHOPIFY_WEBHOOK_SECRET", header_name=SIGNATURE_HEADER)

def sign(body: bytes, secret: str) -> str:
    """The `X-Shopify-Hmac-Sha256` value for `body` (tests, `inbox send-test-event`)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")
