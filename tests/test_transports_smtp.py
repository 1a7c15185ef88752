"""The SMTP transport on its own, against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from inbox.relay.routes import parse_routes
from inbox.relay.store import OutboxMessage
from inbox.relay.transports.smtp import InvalidEmail, SmtpTransport, build_email, message_id
from tests.support import free_port

USER, PASSWORD = "relay", "s3cret,with=odd@chars"


class Mailbox:
    """An aiosmtpd handler that keeps what it receives and refuses nobody@..."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        if address.startswith("later@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(), auth_data.password.decode()) == (USER, PASSWORD)
    return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_server(auth: bool = False) -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    options: dict[str, Any] = {}
    if auth:
        options = {"authenticator": _authenticate, "auth_required": True,
                   "auth_require_tls": False}
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def message(payload: Any, key: str = "evt_1:receipt") -> OutboxMessage:
    return OutboxMessage(7, "email.send", json.dumps(payload), key, 1)


RECEIPT = {
    "to": "ada@example.com",
    "subject": "Payment received",
    "text": "Thanks! Your invoice: https://pay.example/inv_1.pdf",
    "html": "<p>Thanks! <a href='https://pay.example/inv_1.pdf'>Invoice</a></p>",
}


def test_sends_the_described_email_with_a_stable_message_id():
    transport = SmtpTransport(timeout_seconds=5)
    with smtp_server() as (mailbox, port):
        route = parse_routes(f"*=smtp://127.0.0.1:{port}?from=billing@shop.example").routes[0]
        assert transport.deliver(message(RECEIPT), route).status == "sent"
        assert transport.deliver(message(RECEIPT), route).status == "sent"  # a re-send
    (sender, rcpts, first), (_, _, again) = mailbox.received
    assert sender == "billing@shop.example" and rcpts == ["ada@example.com"]
    assert first["Subject"] == "Payment received"
    assert first["To"] == "ada@example.com" and first["From"] == "billing@shop.example"
    assert first["Message-ID"] == message_id("evt_1:receipt") == again["Message-ID"]
    text = first.get_body(("plain",)).get_content()
    html = first.get_body(("html",)).get_content()
    assert "https://pay.example/inv_1.pdf" in text and "<a href=" in html


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_credentials_from_the_url_log_in():
    transport = SmtpTransport(timeout_seconds=5)
    with smtp_server(auth=True) as (mailbox, port):
        from urllib.parse import quote

        good = parse_routes(f"*=smtp://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}")
        bad = parse_routes(f"*=smtp://{USER}:wrong@127.0.0.1:{port}")
        anonymous = parse_routes(f"*=smtp://127.0.0.1:{port}")
        assert transport.deliver(message(RECEIPT), good.routes[0]).status == "sent"
        failed = transport.deliver(message(RECEIPT), bad.routes[0])
        refused = transport.deliver(message(RECEIPT), anonymous.routes[0])
    assert len(mailbox.received) == 1
    # Our configuration is wrong, not the message: retried, so fixing it delivers them all.
    assert failed.status == "retry" and "Authentication" in failed.error
    assert "wrong" not in failed.error
    assert refused.status == "retry"


def test_a_refused_recipient_is_dead_and_a_temporary_refusal_retried():
    transport = SmtpTransport(timeout_seconds=5)
    with smtp_server() as (mailbox, port):
        route = parse_routes(f"*=smtp://127.0.0.1:{port}").routes[0]
        dead = transport.deliver(message({**RECEIPT, "to": "nobody@example.com"}), route)
        later = transport.deliver(message({**RECEIPT, "to": "later@example.com"}), route)
    assert dead.status == "dead" and "550" in dead.error and "no such user" in dead.error
    assert later.status == "retry" and "451" in later.error
    assert mailbox.received == []


def test_an_unreachable_server_is_retried():
    route = parse_routes(f"*=smtp://127.0.0.1:{free_port()}").routes[0]
    result = SmtpTransport(timeout_seconds=2).deliver(message(RECEIPT), route)
    assert result.status == "retry" and "ConnectionRefused" in result.error


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (["not", "an", "object"], "JSON object"),
        ({"subject": "s", "text": "t"}, "'to'"),
        ({"to": "not-an-address", "subject": "s", "text": "t"}, "'to'"),
        ({"to": "a@example.com", "text": "t"}, "subject"),
        ({"to": "a@example.com", "subject": "s"}, "text or html"),
        ({"to": "a@example.com", "subject": "s\r\nBcc: x@evil.example", "text": "t"}, "linefeed"),
    ],
)
def test_a_payload_that_is_not_an_email_is_refused(payload, problem):
    with pytest.raises(InvalidEmail, match=problem):
        build_email(message(payload))


def test_html_only_several_recipients_and_optional_headers():
    built = build_email(message({
        "to": ["a@example.com", "b@example.com"], "cc": "c@example.com",
        "reply_to": "help@shop.example", "from": "Shop <shop@shop.example>",
        "subject": "Hello", "html": "<b>hi</b>",
    }), default_sender="ignored@example.com")
    assert built["To"] == "a@example.com, b@example.com"
    assert built["Cc"] == "c@example.com" and built["Reply-To"] == "help@shop.example"
    assert built["From"] == "Shop <shop@shop.example>"
    assert built.get_content_type() == "text/html"


def test_message_id_is_derived_from_the_key_and_safe_for_any_key():
    assert message_id("evt_1.receipt") == "<evt_1.receipt@webhook-inbox>"
    assert message_id("a" * 65) != message_id("a" * 66)
    odd = message_id("stripe:evt 1/<receipt>")
    assert odd == message_id("stripe:evt 1/<receipt>")
    assert odd.startswith("<stripe-evt-1-receipt.") and odd.endswith("@webhook-inbox>")
    assert odd != message_id("stripe:evt 1/<receipt")  # same readable part, other key
    for key in ("a..b", ".a", "a.", "x" * 100, "évt", ""):
        assert re.fullmatch(r"<[A-Za-z0-9_+=-]+(\.[A-Za-z0-9_+=-]+)*@webhook-inbox>",
                            message_id(key)), key
