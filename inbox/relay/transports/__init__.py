"""Transports: how a message leaves the building, one module per kind of route.

Each transport has `deliver(message, route) -> Result` and `close()`. `deliver` runs in a
relay thread, never inside a database transaction, and must return within its time limit
(lease.send_budget_seconds: the watchdog of deadline.py cuts a send that outlives it).
It never raises for a delivery problem: it says what happened (sent, retry or dead) and
the relay records that; an unexpected exception is treated as a retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from inbox.config import Settings
    from inbox.relay.routes import Route
    from inbox.relay.store import OutboxMessage

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Result:
    """The answer of one delivery attempt.

    sent:  the destination took it (2xx, SMTP accepted, logged).
    retry: try again later, with backoff (never sooner than `retry_after_seconds`).
    dead:  no retry can fix it (a 4xx, a refused recipient, a malformed email).

    `http_status` / `smtp_reply` are the destination's answer, when there was one; the
    relay keeps them in the message's attempts history (outbox_attempts).
    """

    status: Literal["sent", "retry", "dead"]
    error: str | None = None
    retry_after_seconds: float | None = None
    http_status: int | None = None
    smtp_reply: str | None = None

    @classmethod
    def sent(cls, *, http_status: int | None = None, smtp_reply: str | None = None) -> Result:
        if http_status is None and smtp_reply is None:
            return SENT
        return cls("sent", http_status=http_status, smtp_reply=smtp_reply)

    @classmethod
    def retry(cls, error: str, retry_after_seconds: float | None = None, *,
              http_status: int | None = None, smtp_reply: str | None = None) -> Result:
        return cls("retry", _clip(error), retry_after_seconds, http_status,
                   _clip(smtp_reply) if smtp_reply else None)

    @classmethod
    def dead(cls, error: str, *, http_status: int | None = None,
             smtp_reply: str | None = None) -> Result:
        return cls("dead", _clip(error), None, http_status,
                   _clip(smtp_reply) if smtp_reply else None)


SENT = Result("sent")


class Transport(Protocol):
    def deliver(self, message: OutboxMessage, route: Route) -> Result: ...

    def close(self) -> None: ...


def build_transports(settings: Settings) -> dict[str, Transport]:
    """One transport per URL scheme, shared by all delivery threads (they are thread-safe),
    and one watchdog that keeps every send within its time limit."""
    from inbox.relay.transports.deadline import Watchdog
    from inbox.relay.transports.http import HttpTransport
    from inbox.relay.transports.log import LogTransport
    from inbox.relay.transports.smtp import SmtpTransport

    watchdog = Watchdog()
    http = HttpTransport(
        connect_timeout_seconds=settings.http_connect_timeout_seconds,
        read_timeout_seconds=settings.http_read_timeout_seconds,
        watchdog=watchdog,
    )
    smtp = SmtpTransport(timeout_seconds=settings.smtp_timeout_seconds, watchdog=watchdog)
    return {"http": http, "https": http, "smtp": smtp, "smtps": smtp, "log": LogTransport()}


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
