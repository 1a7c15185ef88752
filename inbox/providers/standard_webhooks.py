"""Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
`webhook-signature`, a space-delimited list of `v1,<base64 HMAC-SHA256>` entries over
`<id>.<timestamp>.<body>`, keyed with the base64-decoded secret (`whsec_` prefix optional;
STANDARD_WEBHOOKS_WEBHOOK_SECRET, comma-separated for rotation).

Strict: all three headers, a timestamp of digits no further than
STANDARD_WEBHOOKS_WEBHOOK_TOLERANCE seconds (default 300) from now in either direction,
a non-empty body, and one `v1` entry equal to the expected base64 string; other versions
(`v1a`, `v2`) are ignored. The HMAC is computed here rather than with the `standardwebhooks`
package: it reads the real clock with a fixed five minutes (we inject the clock and
configure the tolerance), raises ValueError on an entry without a comma and accepts
fractional timestamps.

The event id is `webhook-id` (signed, so it cannot be swapped). The type is the body's
`type` when it has one (the spec recommends it, the spec's own test vector has none), else
UNTYPED; a `type` that is not a non-empty string is a 400. The `signature` column keeps
`t=<webhook-timestamp> <webhook-signature>`: with `event_id` and `raw_body` that is all
it takes to verify the delivery again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from inbox.config import Settings
from inbox.errors import InvalidSignature
from inbox.providers import (
    UNTYPED,
    Clock,
    ReceivedEvent,
    header,
    identifier,
    parse_json_object,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
_DIGITS = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class StandardWebhooksProvider:
    """Verifies Standard Webhooks deliveries against every configured secret."""

    secrets: tuple[str, ...]
    tolerance_seconds: int
    clock: Clock
    name: str = "standard-webhooks"

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> StandardWebhooksProvider:
        return cls(
            tuple(settings.provider_secrets.get("standard-webhooks", ())),
            settings.standard_webhooks_tolerance_seconds,
            clock,
        )

    def receive(self, body: bytes, headers: Mapping[str, str]) -> ReceivedEvent:
        msg_id = header(headers, ID_HEADER)
        timestamp = header(headers, TIMESTAMP_HEADER)
        signature = header(headers, SIGNATURE_HEADER)
        self.verify(body, msg_id, timestamp, signature)
        text, payload = parse_json_object(body)
        event_type = payload.get("type", UNTYPED)
        return ReceivedEvent(
            provider=self.name,
            event_id=identifier(msg_id, "webhook-id"),
            event_type=identifier(event_type, "type"),
            payload_text=text,
            raw_body=body,
            signature=f"t={timestamp} {signature}",
        )

    def verify(
        self, body: bytes, msg_id: str | None, timestamp: str | None, signature: str | None
    ) -> None:
        """Raise InvalidSignature unless the headers sign `body` with one of our secrets."""
        if not self.secrets:
            raise InvalidSignature("no STANDARD_WEBHOOKS_WEBHOOK_SECRET is configured")
        if not (msg_id and timestamp and signature):
            raise InvalidSignature(
                f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
            )
        if not body:
            raise InvalidSignature("empty body")
        if not _DIGITS.fullmatch(timestamp):
            raise InvalidSignature(f"{TIMESTAMP_HEADER} is not a unix time in seconds")
        if abs(self.clock() - int(timestamp)) > self.tolerance_seconds:
            raise InvalidSignature("timestamp outside the tolerance")
        offered = [
            value.encode("utf-8", "replace")
            for version, _, value in (entry.partition(",") for entry in signature.split())
            if version == "v1"
        ]
        for secret in self.secrets:
            expected = sign(body, secret, msg_id, timestamp).removeprefix("v1,").encode()
            if any(hmac.compare_digest(value, expected) for value in offered):
                return
        raise InvalidSignature("no signature matches")


def _key(secret: str) -> bytes:
    """The HMAC key: the secret after its optional `whsec_` prefix, base64-decoded."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("STANDARD_WEBHOOKS_WEBHOOK_SECRET is not base64") from None
    if not key:
        raise InvalidSignature("STANDARD_WEBHOOKS_WEBHOOK_SECRET is empty")
    return key


def sign(body: bytes, secret: str, msg_id: str, timestamp: int | str) -> str:
    """One `webhook-signature` entry for `body` (tests, `inbox send-test-event`).

    `timestamp` is signed as written in the header, so a string is kept byte for byte.
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")
