"""SMTP transport: send the email a message's payload describes.

The payload: `to` (an address or a list), `subject`, `text` and/or `html`; optional
`from`, `cc`, `bcc`, `reply_to`. The sender defaults to the route's `?from=`, then
DEFAULT_SENDER. The Message-ID is derived from the idempotency key, so a re-sent email
has the same Message-ID and mail systems (and people) can tell it is the same email.

smtps:// is implicit TLS; smtp:// is plain unless the route asks for `?starttls=1`.
Credentials come from the URL. One connection per email: emails are few next to HTTP
calls, and a fresh connection never trips over a server's idle timeout.

Outcomes: accepted → sent; a 5xx refusal of the sender, a recipient or the data → dead;
4xx refusals, authentication failures (our configuration, fixable), timeouts and
connection errors → retry; a payload that is not an email → dead. A session not over within
the SMTP timeout, counted from its start, is cut and retried (SendDeadline), however
steadily the server trickles its replies.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from inbox.relay.routes import Route
from inbox.relay.store import OutboxMessage
from inbox.relay.transports import Result
from inbox.relay.transports.deadline import Cutter, SendDeadline, Watch, Watchdog

DEFAULT_SENDER = "webhook-inbox@localhost"
# 5xx answers that mean our credentials or TLS settings are wrong, not the message: retried,
# so fixing the route delivers them (530 auth required, 534/535 auth refused, 538 TLS needed).
CONFIGURATION_CODES = frozenset({530, 534, 535, 538})
MESSAGE_ID_DOMAIN = "webhook-inbox"
# A dot-atom (RFC 5322 id-left) of a few plain characters: used as it is.
_SAFE_ID = re.compile(r"[A-Za-z0-9_+=-]+(\.[A-Za-z0-9_+=-]+)*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_+=-]+")
MAX_ID_CHARS = 64


class InvalidEmail(ValueError):
    """The payload does not describe an email."""


class _Session:
    """An SMTP session whose socket the watchdog can cut, and which keeps the reply to DATA
    (smtplib's sendmail checks it and drops it) for the history."""

    data_reply: str | None = None

    def __init__(self, *args: Any, watchdog: Watchdog, watch: Watch, **kwargs: Any) -> None:
        self._watchdog, self._watch = watchdog, watch
        super().__init__(*args, **kwargs)

    def _guard(self, sock: socket.socket) -> None:
        """Watched from the socket's birth: the greeting, TLS and every command after."""
        self._watchdog.guard(self._watch, Cutter(sock))

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self._guard(sock)
        return sock

    def data(self, msg: Any) -> tuple[int, bytes]:
        code, text = super().data(msg)  # type: ignore[misc]
        self.data_reply = f"{code} {_text(text)}"
        return code, text


class _SMTP(_Session, smtplib.SMTP):
    pass


class _SMTP_SSL(_Session, smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's own wraps the socket (the handshake) before returning it: guard before.
        plain = smtplib.SMTP._get_socket(self, host, port, timeout)
        self._guard(plain)
        return self.context.wrap_socket(plain, server_hostname=self._host)


class SmtpTransport:
    """One session per email; the whole session, connecting to QUIT, ends within
    `timeout_seconds` (each operation too: smtplib's own timeout)."""

    def __init__(self, *, timeout_seconds: float, watchdog: Watchdog | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        self.watchdog = watchdog or Watchdog()

    def deliver(self, message: OutboxMessage, route: Route) -> Result:
        try:
            email = build_email(message, default_sender=route.options.get("from"))
        except InvalidEmail as exc:
            return Result.dead(f"not an email: {exc}")
        try:
            reply = self._send(email, route)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            text = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg)
                             in exc.recipients.items())
            if all(code >= 500 for code in codes):
                return Result.dead(f"recipients refused: {text}", smtp_reply=text)
            return Result.retry(f"recipients refused: {text}", smtp_reply=text)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            said = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            answer = f"{type(exc).__name__}: {said}"
            if exc.smtp_code >= 500 and exc.smtp_code not in CONFIGURATION_CODES:
                return Result.dead(answer, smtp_reply=said)
            return Result.retry(answer, smtp_reply=said)
        except (smtplib.SMTPException, OSError) as exc:
            # Authentication failures, disconnections, timeouts, TLS problems, the deadline.
            code = getattr(exc, "smtp_code", None)
            said = f"{code} {_text(getattr(exc, 'smtp_error', b''))}" if code else None
            return Result.retry(f"{route.safe_url}: {type(exc).__name__}: {exc}",
                                smtp_reply=said)
        return Result.sent(smtp_reply=reply)

    def _send(self, email: EmailMessage, route: Route) -> str | None:
        """Send one email on a connection of its own, within the time limit; the server's
        reply to its DATA (code and text, e.g. "250 2.0.0 Ok: queued as 4F2C1"), which
        names the message in the server's own logs."""
        watch = self.watchdog.start(self.timeout_seconds)
        try:
            return self._session(email, route, watch)
        except (smtplib.SMTPException, OSError) as exc:
            if watch.expired:  # set before the cut that ended the session
                raise SendDeadline(self.timeout_seconds) from exc
            raise
        finally:
            self.watchdog.stop(watch)
            if watch.cutter is not None:
                watch.cutter.close()

    def _session(self, email: EmailMessage, route: Route, watch: Watch) -> str | None:
        context = ssl.create_default_context()
        smtp: _SMTP | _SMTP_SSL
        if route.scheme == "smtps":
            smtp = _SMTP_SSL(route.host, route.port, timeout=self.timeout_seconds,
                             context=context, watchdog=self.watchdog, watch=watch)
        else:
            smtp = _SMTP(route.host, route.port, timeout=self.timeout_seconds,
                         watchdog=self.watchdog, watch=watch)
        with smtp:
            if route.options.get("starttls") in ("1", "true", "yes"):
                smtp.starttls(context=context)
            if route.username:
                smtp.login(route.username, route.password or "")
            smtp.send_message(email)
        return smtp.data_reply

    def close(self) -> None:
        self.watchdog.close()


def build_email(message: OutboxMessage, default_sender: str | None = None) -> EmailMessage:
    """The email a message's payload describes; raises InvalidEmail."""
    payload = message.payload()
    if not isinstance(payload, dict):
        raise InvalidEmail("the payload is not a JSON object")
    to = _addresses(payload, "to", required=True)
    subject = payload.get("subject")
    text, html = payload.get("text"), payload.get("html")
    if not isinstance(subject, str) or not subject.strip():
        hint = " (the relay renders no templates: give subject and text/html)"
        raise InvalidEmail("no subject" + (hint if "template" in payload else ""))
    if not (isinstance(text, str) and text) and not (isinstance(html, str) and html):
        raise InvalidEmail("no text or html body")
    sender = payload.get("from") or default_sender or DEFAULT_SENDER
    if not isinstance(sender, str):
        raise InvalidEmail("'from' is not a string")
    email = EmailMessage()
    try:
        email["From"] = sender
        email["To"] = to
        for field, header in (("cc", "Cc"), ("reply_to", "Reply-To")):
            if payload.get(field):
                email[header] = _addresses(payload, field)
        email["Subject"] = subject
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = message_id(message.idempotency_key)
    except (ValueError, TypeError) as exc:  # header injection, malformed addresses
        raise InvalidEmail(str(exc)) from None
    if isinstance(text, str) and text:
        email.set_content(text)
        if isinstance(html, str) and html:
            email.add_alternative(html, subtype="html")
    else:
        email.set_content(html, subtype="html")
    bcc = _addresses(payload, "bcc") if payload.get("bcc") else []
    if bcc:
        # send_message takes Bcc recipients from the header and strips it from the copy.
        email["Bcc"] = bcc
    return email


def message_id(idempotency_key: str) -> str:
    """A Message-ID that is the same on every (re-)send of one outbox message."""
    if len(idempotency_key) <= MAX_ID_CHARS and _SAFE_ID.fullmatch(idempotency_key):
        local = idempotency_key
    else:
        # Readable and still unique: the key with odd characters replaced, plus its hash.
        readable = _UNSAFE_CHARS.sub("-", idempotency_key).strip("-")[:40] or "outbox"
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        local = f"{readable}.{digest}"
    return f"<{local}@{MESSAGE_ID_DOMAIN}>"


def _addresses(payload: dict[str, Any], field: str, required: bool = False) -> list[str]:
    value = payload.get(field)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and "@" in v for v in value):
        raise InvalidEmail(f"{field!r} must be an address or a list of addresses")
    if required and not value:
        raise InvalidEmail(f"no {field!r} address")
    return value


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
