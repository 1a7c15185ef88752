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
from typing import Any

from inbox.providers import UNTYPED, body_digest_id, header, identifier
from inbox.providers.body_hmac import BodyHmacProvider

SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"
ID_HEADERS = ("X-Shopify-Webhook-Id", "X-Shopify-Event-Id")
TOPIC_HEADER = "X-Shopify-Topic"


def sign(body: bytes, secret: str) -> str:
    """The `X-Shopify-Hmac-Sha256` value for `body` (tests, `inbox send-test-event`)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class ShopifyProvider(BodyHmacProvider):
    """Verifies Shopify deliveries against every configured client secret."""

    name = "shopify"
    signature_header = SIGNATURE_HEADER
    secret_variable = "SHOPIFY_WEBHOOK_SECRET"
    sign = staticmethod(sign)

    def identify(self, headers: Mapping[str, str], payload: dict[str, Any],
                 body: bytes) -> tuple[str, str]:
        event_id = next(filter(None, (header(headers, name) for name in ID_HEADERS)), None)
        return (identifier(event_id, "webhook id") if event_id else body_digest_id(body),
                identifier(header(headers, TOPIC_HEADER) or UNTYPED, "topic"))
