"""The shape shared by providers that sign the raw body alone with an HMAC (GitHub,
Shopify): one header carries the signature, every configured secret is tried (rotation),
the body must be a JSON object, and the headers name the event.

A subclass says which header, which environment variable, how a secret signs a body
(`sign`) and how the headers and payload name the event (`identify`); receiving and
verifying are written once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from inbox.config import Settings
from inbox.providers import Clock, ReceivedEvent, header, parse_json_object, verify_body_hmac


@dataclass(frozen=True)
class BodyHmacProvider:
    """Verifies deliveries signed by `sign(body, secret)` against every configured secret."""

    secrets: tuple[str, ...]
    name: ClassVar[str]
    signature_header: ClassVar[str]
    secret_variable: ClassVar[str]

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> BodyHmacProvider:
        return cls(tuple(settings.provider_secrets.get(cls.name, ())))

    @staticmethod
    def sign(body: bytes, secret: str) -> str:
        """The signature header's value for `body` under `secret`."""
        raise NotImplementedError

    def identify(self, headers: Mapping[str, str], payload: dict[str, Any],
                 body: bytes) -> tuple[str, str]:
        """The event's (id, type), checked with `identifier`."""
        raise NotImplementedError

    def receive(self, body: bytes, headers: Mapping[str, str]) -> ReceivedEvent:
        signature = header(headers, self.signature_header)
        self.verify(body, signature)
        text, payload = parse_json_object(body)
        event_id, event_type = self.identify(headers, payload, body)
        return ReceivedEvent(provider=self.name, event_id=event_id, event_type=event_type,
                             payload_text=text, raw_body=body, signature=signature)

    def verify(self, body: bytes, signature: str | None) -> None:
        """Raise InvalidSignature unless `signature` signs `body` with one of our secrets."""
        verify_body_hmac(body, signature, self.secrets, self.sign,
                         secret_variable=self.secret_variable,
                         header_name=self.signature_header)
