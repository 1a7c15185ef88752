"""GitHub: the `X-Hub-Signature-256` header, `sha256=` and the lowercase hex HMAC-SHA256
of the raw body, keyed with the UTF-8 bytes of the webhook secret (GITHUB_WEBHOOK_SECRET,
comma-separated for rotation).

Strict, like GitHub's documented check: the whole header string must equal the expected
one, so uppercase hex, a missing `sha256=` prefix or only the legacy SHA-1
`X-Hub-Signature` header are rejected, and so is an empty body (GitHub never sends one).

The event id is `X-GitHub-Delivery` (a redelivery keeps it, so it is a duplicate). The
type is `X-GitHub-Event`, followed by `.<action>` when the body has an `action` string,
the naming of octokit's `webhooks.on("issues.opened")`: `issues.opened`, `push`, `ping`.
A signed delivery without those headers (GitHub's own test vector has none) gets the id
`sha256:<hex of the body>` and the type UNTYPED. The body must be a JSON object: the
form-encoded content type (`payload=...`) is not supported.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from inbox.providers import UNTYPED, body_digest_id, header, identifier
from inbox.providers.body_hmac import BodyHmacProvider

SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADER = "X-GitHub-Delivery"
EVENT_HEADER = "X-GitHub-Event"


def sign(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` value for `body` (tests, `inbox send-test-event`)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class GitHubProvider(BodyHmacProvider):
    """Verifies GitHub deliveries against every configured webhook secret."""

    name = "github"
    signature_header = SIGNATURE_HEADER
    secret_variable = "GITHUB_WEBHOOK_SECRET"
    sign = staticmethod(sign)

    def identify(self, headers: Mapping[str, str], payload: dict[str, Any],
                 body: bytes) -> tuple[str, str]:
        delivery = header(headers, DELIVERY_HEADER)
        event = header(headers, EVENT_HEADER)
        event_type = UNTYPED
        if event:
            action = payload.get("action")
            event_type = f"{event}.{action}" if isinstance(action, str) and action else event
        event_id = identifier(delivery, "delivery id") if delivery else body_digest_id(body)
        return event_id, identifier(event_type, "type")
