"""The `log:` transport: write the message to the log at INFO (development, auditing)."""

from __future__ import annotations

import logging

from inbox.relay.routes import Route
from inbox.relay.store import OutboxMessage
from inbox.relay.transports import Result

logger = logging.getLogger(__name__)


class LogTransport:
    def deliver(self, message: OutboxMessage, route: Route) -> Result:
        logger.info(
            "outbox message topic=%s idempotency_key=%s payload=%s",
            message.topic, message.idempotency_key, message.payload_json,
        )
        return Result.sent()

    def close(self) -> None:
        pass
